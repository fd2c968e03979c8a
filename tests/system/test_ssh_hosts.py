"""Remote hosts over SSH, with real parts: node2 and node3 are namespaces with
their own dbus-daemon, fcnetd and OpenSSH sshd (tests/sshstack.py); the web
UI and fcnetctl --host reach them only through ssh and systemd-stdio-bridge
on the far side. Each host lives on its own: one that is unreachable, refuses
its host key, loses its sshd or its fcnetd leaves the others working, is
shown unavailable with its reason, and comes back listed as it now is."""

import json
import time

import pytest

from tests.prereq import require
from tests.sshstack import LOGIN, SshStack, ssh_missing
from tests.system.harness import Client, folded_registry, wait_for


@pytest.fixture(scope="module")
def stack():
    require("system (ssh hosts)", ssh_missing())
    s = SshStack()
    s.admin = s.sign_in("admin")
    yield s
    s.close()


def networks(user, query: str = "") -> dict:
    status, body = user.json("GET", "/api/networks" + query)
    assert status == 200, body
    return body


def host(body: dict, name: str) -> dict:
    return next(h for h in body["hosts"] if h["name"] == name)


def names_on(body: dict, name: str) -> set[str]:
    return {n["name"] for n in body["items"] if n["host"] == name}


def remote_names(remote) -> set[str]:
    """What the remote fcnetd itself holds (root on that host, its own bus)."""
    return {n["Name"] for n in Client(remote.bus.address).call("ListNetworks", "a{sv}", {})[0]}


def test_fcnetctl_over_ssh_changes_the_remote_host_as_its_fcnet_login(stack):
    res = stack.fcnetctl(stack.node2, "create", "fcbr1", "--vlan", "0", "--description", "made over ssh")
    assert res.stdout.strip() == "created fcbr1"
    assert "fcbr1" in remote_names(stack.node2) and "fcbr1" not in remote_names(stack.node3)
    listed = json.loads(stack.fcnetctl(stack.node2, "--json", "list").stdout)
    assert [n["Description"] for n in listed if n["Name"] == "fcbr1"] == ["made over ssh"]
    # the far side ran the forced command for the test user, not for root
    assert f"forced-command (key-option) 'systemd-stdio-bridge" in stack.node2.sshd_output()
    assert f"for {LOGIN[0]} from" in stack.node2.sshd_output()
    stack.fcnetctl(stack.node2, "delete", "fcbr1")
    assert "fcbr1" not in remote_names(stack.node2)


def test_fcnetctl_refuses_a_host_whose_key_is_not_the_known_one(stack, tmp_path):
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{stack.node2.address} {stack.node3.host_pub}\n")  # node3's key named for node2
    res = stack.fcnetctl(stack.node2, "--known-hosts", str(wrong), "create", "fcbr0", check=False)
    assert res.returncode == 1
    assert "Host key verification failed" in res.stderr and f"cannot reach {LOGIN[0]}@" in res.stderr, res.stderr
    assert "fcbr0" not in remote_names(stack.node2)


def test_fcnetctl_host_is_checked_before_ssh_runs(stack):
    """A destination that ssh would read as an option never reaches ssh."""
    bad = stack.fcnetctl(stack.node2, "--host=-oProxyCommand=sh", "list", check=False)
    assert bad.returncode == 2 and "must be [USER@]HOST" in bad.stderr, bad.stderr


def test_the_web_ui_lists_all_three_hosts_and_filters_by_host(stack):
    for name in ("node1", "node2", "node3"):
        status, body = stack.admin.json("POST", "/api/networks", {"host": name, "bridge": "fcbr0",
                                                                  "name": f"lan-{name}"})
        assert status == 201, body
    body = wait_for(lambda: (b := networks(stack.admin)) and len(b["items"]) >= 3 and b,
                    what="the networks of three hosts listed")
    assert {(n["host"], n["name"]) for n in body["items"]} >= {("node1", "lan-node1"), ("node2", "lan-node2"),
                                                                ("node3", "lan-node3")}
    assert (body["answered"], body["asked"]) == (3, 3)
    assert [(h["name"], h["available"], h["via"]) for h in body["hosts"]] == [
        ("node1", True, "local bus"), ("node2", True, f"ssh {LOGIN[0]}@{stack.node2.address}"),
        ("node3", True, f"ssh {LOGIN[0]}@{stack.node3.address}")]
    only = networks(stack.admin, "?host=node2")
    assert {n["host"] for n in only["items"]} == {"node2"} and (only["answered"], only["asked"]) == (1, 1)
    status, bad = stack.admin.json("GET", "/api/networks?host=node9")
    assert status == 400 and bad["field"] == "host"
    assert stack.admin.json("GET", "/api/bridges?host=node3")[1]["bridges"] == ["fcbr0", "fcbr1", "fcbr2", "fcbr3"]


def test_unreachable_and_untrusted_hosts_leave_the_others_working(stack):
    """Two more hosts: one where nothing listens, one whose host key is not
    the known one. The web UI starts all the same, says why each is down,
    and a request to either fails at once."""
    wrong = f"{stack.dir}/wrong_known_hosts"
    with open(wrong, "w") as f:
        f.write(f"{stack.node3.address} {stack.node2.host_pub}\n")
    extra = (f'[hosts.node4]\nssh = "{LOGIN[0]}@{stack.node2.address}"\nport = 2222\nidentity = "{stack.key}"\n'
             f'known_hosts = "{stack.known_hosts}"\n'
             f'[hosts.node5]\n{stack.ssh_host(stack.node3, known_hosts=wrong)}')
    proc, url = stack.start_webui(stack.write_webui_config(extra, "webui-five.toml"))
    try:
        user = stack.sign_in("admin", url)
        body = wait_for(lambda: (b := networks(user)) and b["answered"] == 3 and b, timeout=20,
                        what="three of five hosts answering")
        assert body["asked"] == 5
        assert "Connection refused" in host(body, "node4")["error"]
        assert "Host key verification failed" in host(body, "node5")["error"]
        assert {n["host"] for n in body["items"]} == {"node1", "node2", "node3"}
        started = time.monotonic()
        status, answer = user.json("POST", "/api/networks", {"host": "node4", "bridge": "fcbr0"})
        assert status == 503 and answer["error"].startswith("host node4 is unavailable: ssh ")
        assert "not seen since the web UI started" in answer["error"]
        assert time.monotonic() - started < 1
        status, answer = user.json("POST", "/api/networks", {"host": "node3", "bridge": "fcbr1"})
        assert status == 201, answer
    finally:
        proc.terminate()
        proc.wait(10)


def test_node2_losing_its_sshd_is_shown_and_comes_back_as_it_now_is(stack):
    """sshd and its sessions end (the host went away); the others keep
    working; node2 is unavailable within seconds, with the reason and when it
    was last seen; what changed on node2 meanwhile is what is listed when it
    is back, with no network of before left over."""
    stack.admin.json("POST", "/api/networks", {"host": "node2", "bridge": "fcbr1", "name": "old-node2"})
    wait_for(lambda: "old-node2" in names_on(networks(stack.admin), "node2"), what="old-node2 listed")
    stack.node2.stop_sshd()
    lost = time.monotonic()
    body = wait_for(lambda: (b := networks(stack.admin)) and not host(b, "node2")["available"] and b, timeout=10,
                    what="node2 shown unavailable")
    print(f"node2 shown unavailable {time.monotonic() - lost:.2f} s after its sshd stopped")
    node2 = host(body, "node2")
    assert node2["last_seen"] and node2["error"].startswith("ssh "), node2
    assert names_on(body, "node2") == set() and (body["answered"], body["asked"]) == (2, 3)
    status, answer = stack.admin.json("POST", "/api/networks", {"host": "node2", "bridge": "fcbr0", "name": "x"})
    assert status == 503 and "host node2 is unavailable" in answer["error"] and "last seen" in answer["error"]
    assert stack.admin.json("POST", "/api/networks", {"host": "node3", "bridge": "fcbr2", "name": "while-down"})[0] == 201
    wait_for(lambda: "while-down" in names_on(networks(stack.admin), "node3"), what="node3 still followed")
    # meanwhile, on node2 itself
    admin2 = Client(stack.node2.bus.address)
    admin2.call("DeleteNetwork", "s", "old-node2")
    admin2.call("CreateNetwork", "ssqa{sv}", "new-node2", "fcbr1", 0, {})
    stack.node2.start_sshd()
    body = wait_for(lambda: (b := networks(stack.admin)) and host(b, "node2")["available"] and b, timeout=20,
                    what="node2 back")
    assert names_on(body, "node2") == remote_names(stack.node2)
    assert "new-node2" in names_on(body, "node2") and "old-node2" not in names_on(body, "node2")
    # and followed again: a change after the return shows up by its signal
    admin2.call("DeleteNetwork", "s", "new-node2")
    wait_for(lambda: "new-node2" not in names_on(networks(stack.admin), "node2"), what="node2's signals followed")


def test_node2_losing_its_fcnetd_is_shown_and_comes_back_as_it_now_is(stack):
    admin2 = Client(stack.node2.bus.address)
    for name, bridge in (("keep-node2", "fcbr2"), ("drop-node2", "fcbr3")):
        admin2.call("CreateNetwork", "ssqa{sv}", name, bridge, 0, {})
    wait_for(lambda: {"keep-node2", "drop-node2"} <= names_on(networks(stack.admin), "node2"),
             what="node2's networks listed")
    registry = folded_registry(stack.node2.daemon.state_dir)
    stack.node2.daemon.stop()
    body = wait_for(lambda: (b := networks(stack.admin)) and not host(b, "node2")["available"] and b, timeout=10,
                    what="node2 shown unavailable")
    assert host(body, "node2")["error"] == "fcnetd is not running on this host's bus"
    assert names_on(body, "node2") == set() and host(body, "node3")["available"]
    # meanwhile an admin removes a network from node2's registry by hand
    registry["networks"] = [n for n in registry["networks"] if n["name"] != "drop-node2"]
    with open(f"{stack.node2.daemon.state_dir}/registry.json", "w") as f:
        json.dump(registry, f)
    stack.node2.daemon.start()
    body = wait_for(lambda: (b := networks(stack.admin)) and host(b, "node2")["available"] and b, timeout=20,
                    what="node2 back")
    assert "keep-node2" in names_on(body, "node2") and "drop-node2" not in names_on(body, "node2")
    assert names_on(body, "node2") == remote_names(stack.node2)
