"""The whole system for web UI tests: netns, private bus with the project's
policy, the real fcnetd, and fcnetd-webui as an unprivileged user."""

from __future__ import annotations

import grp
import http.cookiejar
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from fcnetd.testbus import PrivateBus
from tests.system.harness import REPO, Daemon, Netns, wait_for

NOBODY = 65534
PASSWORDS = {"admin": "admin-password-1", "viewer": "viewer-password-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webui_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "fcnetd-webui")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "webui.app"]


def start_webui(users: str, log, bus: str | None = None, config: str | None = None,
                in_fcnet: bool = True) -> tuple[subprocess.Popen, str]:
    """fcnetd-webui as uid nobody (in group fcnet unless told otherwise),
    once it answers on its port: (process, base URL)."""
    port = free_port()
    gid = grp.getgrnam("fcnet").gr_gid if in_fcnet else NOBODY
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={gid}", "--clear-groups", *webui_command(),
           "--listen", f"127.0.0.1:{port}", "--users", users]
    cmd += ["--bus", bus] if bus else []
    cmd += ["--config", config] if config else []
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": REPO})
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"fcnetd-webui exited with {proc.returncode} before answering")
        try:
            urllib.request.urlopen(url + "/login", timeout=2)
            return True
        except (urllib.error.URLError, ConnectionError):
            return False
    try:
        wait_for(answering, timeout=20, interval=0.1, what="fcnetd-webui to answer on its port")
    except AssertionError:
        proc.kill()
        raise
    return proc, url


class Stack:
    def __init__(self, registry: dict | None = None, in_fcnet: bool = True):
        self.dir = tempfile.mkdtemp(prefix="fcnetd-web-")
        os.chmod(self.dir, 0o755)
        self.ns = Netns()
        self.bus = PrivateBus().start()
        self.config = os.path.join(self.dir, "fcnetd.toml")
        with open(self.config, "w") as f:
            f.write('[daemon]\nhost = "node1"\n[bridges.fcbr0]\ncreate = true\n[bridges.fcbr1]\ncreate = true\n[bridges.fcbr2]\ncreate = true\n')
        state = os.path.join(self.dir, "state")
        if registry is not None:
            os.makedirs(state, mode=0o700)
            with open(os.path.join(state, "registry.json"), "w") as f:
                json.dump(registry, f)
        self.daemon = Daemon(self.ns, self.bus, state, self.config).start()
        self.users = os.path.join(self.dir, "users.json")
        for user, role in (("admin", "admin"), ("viewer", "viewer")):
            subprocess.run(webui_command() + ["--users", self.users, "user", "add", user, "--role", role,
                                              "--password-stdin"], input=PASSWORDS[user] + "\n", text=True,
                           check=True, capture_output=True, env={**os.environ, "PYTHONPATH": REPO})
        os.chown(self.users, NOBODY, -1)
        self.log = open(os.path.join(self.dir, "webui.log"), "wb")
        self.webui, self.url = start_webui(self.users, self.log, bus=self.bus.address, in_fcnet=in_fcnet)

    def second_host(self, workdir: str, bridges: str = "fcbr0") -> str:
        """Another fcnetd (host node2) on its own bus and namespace; returns a
        web UI config naming both hosts, readable by the web UI's user."""
        self.ns2, self.bus2 = Netns(), PrivateBus().start()
        cfg = os.path.join(workdir, "node2.toml")
        with open(cfg, "w") as f:
            f.write('[daemon]\nhost = "node2"\n' + "".join(f"[bridges.{b}]\ncreate = true\n"
                                                           for b in bridges.split(",")))
        self.daemon2 = Daemon(self.ns2, self.bus2, os.path.join(workdir, "state2"), cfg).start()
        webcfg = os.path.join(self.dir, "webui.toml")
        with open(webcfg, "w") as f:
            f.write(f'[hosts.node1]\nbus = "{self.bus.address}"\n[hosts.node2]\nbus = "{self.bus2.address}"\n')
        return webcfg

    def webui_output(self) -> str:
        self.log.flush()
        return open(self.log.name, errors="replace").read()

    def close(self) -> None:
        if self.webui.poll() is None:
            self.webui.terminate()
            self.webui.wait(10)
        if hasattr(self, "daemon2"):
            self.daemon2.stop()
            self.bus2.stop()
            self.ns2.delete()
        self.daemon.stop()
        self.bus.stop()
        self.ns.delete()
        shutil.rmtree(self.dir, ignore_errors=True)


class HttpUser:
    """A signed-in HTTP client (for tests and the benchmark, not a browser)."""

    def __init__(self, base: str, user: str):
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.opener.open(base + "/login").read().decode()
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({"csrf": token, "username": user, "password": PASSWORDS[user]}).encode()
        page = self.opener.open(base + "/login", data).read().decode()
        match = re.search(r'name="csrf-token" content="([^"]+)"', page)
        if not match:
            raise AssertionError(f"sign-in as {user} failed")
        self.csrf = match.group(1)

    def get(self, path: str):
        with self.opener.open(self.base + path) as r:
            return r.status, r.read()

    def json(self, method: str, path: str, body=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-CSRF-Token": self.csrf, "Content-Type": "application/json"})
        try:
            with self.opener.open(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


def seed_registry(networks: list[tuple[str, str, int, str]], attachments: list[tuple[str, str]]) -> dict:
    """A registry with networks (name, bridge, vlan, created) and attachments (vm_id, network name)."""
    import uuid
    nets = [{"id": str(uuid.uuid4()), "name": n, "bridge": b, "vlan": v, "host": "node1", "created": c,
             "origin": "manual", "description": ""} for n, b, v, c in networks]
    by_name = {n["name"]: n["id"] for n in nets}
    atts = [{"vm_id": vm, "nic": "eth0", "network_id": by_name[net], "vm_name": vm, "mac": "",
             "attached": "2026-01-01T00:00:00Z"} for vm, net in attachments]
    return {"schema": 1, "networks": nets, "attachments": atts}
