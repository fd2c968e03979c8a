"""fcnetd-webui as an unprivileged user against the private bus with the
project's policy: it works in group fcnet and is refused outside it; with
several hosts configured it shows them all."""

import os
import subprocess

from tests.webstack import NOBODY, HttpUser, Stack, free_port, webui_command
from tests.system.harness import REPO, Daemon, Netns
from fcnetd.testbus import PrivateBus


def test_webui_in_group_fcnet_works_as_an_unprivileged_user():
    stack = Stack()
    try:
        user = HttpUser(stack.url, "admin")
        status, body = user.json("POST", "/api/networks", {"bridge": "fcbr0", "vlan": ""})
        assert status == 201 and body["name"] == "fcbr0"
        status, body = user.json("GET", "/api/networks")
        assert [n["name"] for n in body["items"]] == ["fcbr0"] and body["hosts"][0]["error"] == ""
        uid = int(open(f"/proc/{stack.webui.pid}/status").read().split("Uid:")[1].split()[0])
        assert uid == NOBODY
        assert "pyroute2" not in open(f"/proc/{stack.webui.pid}/maps").read()
    finally:
        stack.close()


def test_webui_outside_group_fcnet_is_refused_by_the_bus():
    stack = Stack(in_fcnet=False)
    try:
        user = HttpUser(stack.url, "admin")
        status, body = user.json("GET", "/api/networks")
        assert body["items"] == [] and "must be in group fcnet" in body["hosts"][0]["error"], body
        status, body = user.json("POST", "/api/networks", {"bridge": "fcbr0", "vlan": ""})
        assert status == 403 and "must be in group fcnet" in body["error"]
    finally:
        stack.close()


def test_several_hosts_are_listed_together(tmp_path):
    stack = Stack()
    ns2, bus2 = Netns(), PrivateBus().start()
    cfg2 = tmp_path / "node2.toml"
    cfg2.write_text('[daemon]\nhost = "node2"\n[bridges.fcbr0]\ncreate = true\n')
    d2 = Daemon(ns2, bus2, str(tmp_path / "state2"), str(cfg2)).start()
    webcfg = os.path.join(stack.dir, "webui.toml")  # readable by the unprivileged user
    with open(webcfg, "w") as f:
        f.write(f'[hosts.node1]\nbus = "{stack.bus.address}"\n[hosts.node2]\nbus = "{bus2.address}"\n')
    port = free_port()
    proc = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--groups",
                             str(__import__("grp").getgrnam("fcnet").gr_gid), *webui_command(),
                             "--config", webcfg, "--listen", f"127.0.0.1:{port}", "--users", stack.users],
                            env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        import time
        import urllib.request
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/login", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        user = HttpUser(base, "admin")
        assert user.json("POST", "/api/networks", {"host": "node2", "bridge": "fcbr0", "vlan": ""})[0] == 201
        assert user.json("POST", "/api/networks", {"host": "node1", "bridge": "fcbr1", "vlan": ""})[0] == 201
        for _ in range(20):
            body = user.json("GET", "/api/networks")[1]
            if len(body["items"]) == 2:
                break
            time.sleep(0.05)
        assert sorted((n["host"], n["name"]) for n in body["items"]) == [("node1", "fcbr1"), ("node2", "fcbr0")]
        assert [h["name"] for h in body["hosts"]] == ["node1", "node2"]
        assert user.json("GET", "/api/bridges?host=node2")[1]["bridges"] == ["fcbr0"]
    finally:
        proc.terminate()
        proc.wait(10)
        d2.stop()
        bus2.stop()
        ns2.delete()
        stack.close()
