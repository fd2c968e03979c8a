"""Diagnose, DiagnoseVm and DiagnosePath against the real daemon: each check
is broken with ip/bridge/nft/kill, seen to fail (or warn) with its hint,
fixed, and seen to pass. Untagged networks only: this kernel has no bridge
VLAN filtering (tagged variants belong to the kernel tier)."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from .guestnet import DhcpServer, dnsmasq_pids, guests  # noqa: F401 (fixture)
from .harness import Daemon, fcnetctl, v, wait_for

NAT_CONFIG = ('[daemon]\nhost = "node1"\n\n[bridges.fcbr0]\ncreate = true\n\n[bridges.fcbr1]\ncreate = false\n\n'
              '[bridges.fcbr2]\ncreate = true\n')


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "fcnetd.toml"
    path.write_text(NAT_CONFIG)
    return str(path)


def checks(client, *call) -> dict:
    """Check id -> row (ids are unique within one answer)."""
    rows = client.call(*call)[0]
    return {r["Check"]: r for r in rows}


def diagnose(client, network: str, **opts) -> dict:
    """Diagnose; with options (timeout_ms), ProbeDhcp: the same and the probe."""
    if opts:
        return checks(client, "ProbeDhcp", "sa{sv}", network, opts)
    return checks(client, "Diagnose", "s", network)


def diagnose_vm(client, vm: str, nic: str = "eth0") -> dict:
    return checks(client, "DiagnoseVm", "ss", vm, nic)


def result_of(fetch, check: str) -> str:
    return fetch()[check]["Result"]


def becomes(fetch, check: str, result: str, timeout: float = 10) -> dict:
    """Polls until `check` has `result`; returns that row."""
    seen = {}

    def done():
        seen["row"] = fetch()[check]
        return seen["row"]["Result"] == result
    wait_for(done, timeout, what=f"{check} {result} (last: {seen.get('row')})")
    return seen["row"]


def test_bridge_down_fails_with_the_guides_hint_and_passes_when_up(daemon, client, ns):
    """An admin's bridge (create = false), which fcnetd leaves down; one it
    may make it sets up again itself (test_drift)."""
    ns.ip("link", "add", "fcbr1", "type", "bridge")
    ns.ip("link", "set", "fcbr1", "up")
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})
    fetch = lambda: diagnose(client, "fcbr1")  # noqa: E731
    assert {c: r["Result"] for c, r in fetch().items()} == {
        "bridge.allowed": "ok", "bridge.present": "ok", "bridge.up": "ok", "firewall.foreign-drop": "ok",
        "vms": "ok"}
    ns.ip("link", "set", "fcbr1", "down")
    row = becomes(fetch, "bridge.up", "fail")
    assert "down" in row["Detail"] and "ip link set dev fcbr1 up" in row["Hint"]
    assert "not properly configured on host" in row["Hint"]
    ns.ip("link", "set", "fcbr1", "up")
    becomes(fetch, "bridge.up", "ok")


def test_a_missing_bridge_fails_and_passes_when_an_admin_makes_it(daemon, client, ns):
    ns.ip("link", "add", "fcbr1", "type", "bridge")
    ns.ip("link", "set", "fcbr1", "up")
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})
    ns.ip("link", "del", "fcbr1")
    row = becomes(lambda: diagnose(client, "fcbr1"), "bridge.present", "fail")
    assert row["Detail"] == "bridge fcbr1 does not exist" and "ip link add fcbr1 type bridge" in row["Hint"]
    assert "bridge.up" not in diagnose(client, "fcbr1")
    ns.ip("link", "add", "fcbr1", "type", "bridge")
    ns.ip("link", "set", "fcbr1", "up")
    becomes(lambda: diagnose(client, "fcbr1"), "bridge.present", "ok")


def test_a_bridge_taken_off_the_allow_list_fails(daemon, client, config):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    with open(config, "w") as f:
        f.write(NAT_CONFIG.replace("[bridges.fcbr0]\ncreate = true\n\n", ""))
    daemon.proc.send_signal(signal.SIGHUP)
    row = becomes(lambda: diagnose(client, "fcbr0"), "bridge.allowed", "fail")
    assert "[bridges.fcbr0]" in row["Hint"]
    with open(config, "w") as f:
        f.write(NAT_CONFIG)
    daemon.proc.send_signal(signal.SIGHUP)
    becomes(lambda: diagnose(client, "fcbr0"), "bridge.allowed", "ok")


def test_tap_checks_break_and_mend(daemon, client, ns, guests):  # noqa: F811
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    fetch = lambda: diagnose_vm(client, "vm-1")  # noqa: E731
    row = fetch()["tap.present"]
    assert row["Result"] == "warn" and "not running" in row["Detail"] and "CreateTap" in row["Hint"]
    assert "tap.up" not in fetch()
    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {"owner_uid": v("u", 1234), "owner_gid": v("u", 99)})[0]
    got = fetch()
    assert got["tap.present"]["Result"] == "ok" and tap in got["tap.present"]["Detail"]
    assert got["tap.carrier"]["Result"] == "warn" and "no VMM holds it open" in got["tap.carrier"]["Detail"]
    assert got["tap.owner"]["Detail"] == f"TAP {tap} has owner uid 1234, gid 99"
    assert got["tap.bridge"]["Result"] == got["tap.vlan"]["Result"] == got["tap.up"]["Result"] == "ok"
    guests(tap)  # a VMM opens it
    becomes(fetch, "tap.carrier", "ok")

    # A TAP set down or moved behind fcnetd's back is repaired within a
    # second (test_drift): Diagnose then finds it whole again. The failing
    # checks themselves are unit-tested (tests/unit/test_diagnose.py).
    ns.ip("link", "set", tap, "down")
    wait_for(lambda: "UP" in ns.link(tap)["flags"], 5, what="fcnetd to set its TAP up again")
    assert fetch()["tap.up"]["Result"] == "ok"
    ns.ip("link", "add", "other0", "type", "bridge")
    ns.ip("link", "set", tap, "master", "other0")
    wait_for(lambda: ns.link(tap).get("master") == "fcbr0", 5, what="fcnetd to put its TAP back on fcbr0")
    assert fetch()["tap.bridge"]["Result"] == "ok"


def test_a_deleted_tap_warns_until_the_vm_starts_again(daemon, client, ns):
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})[0]
    ns.ip("link", "del", tap)
    becomes(lambda: diagnose_vm(client, "vm-1"), "tap.present", "warn")
    client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})
    becomes(lambda: diagnose_vm(client, "vm-1"), "tap.present", "ok")


def test_uplink_present_with_carrier_and_gone(ns, bus, client, tmp_path):
    path = tmp_path / "uplink.toml"
    path.write_text('[daemon]\nhost = "node1"\n\n[bridges.fcbr0]\ncreate = true\nuplink = "upl0"\n')
    ns.ip("link", "add", "upl0", "type", "veth", "peer", "name", "upl0p")
    d = Daemon(ns, bus, str(tmp_path / "state"), str(path)).start()
    try:
        client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
        fetch = lambda: diagnose(client, "fcbr0")  # noqa: E731
        row = fetch()["uplink.present"]
        assert row["Result"] == "fail" and "a port of no bridge" in row["Detail"]
        assert "ip link set dev upl0 master fcbr0" in row["Hint"]
        ns.ip("link", "set", "upl0", "master", "fcbr0")
        ns.ip("link", "set", "upl0", "up")
        becomes(fetch, "uplink.present", "ok")
        assert "cable" in becomes(fetch, "uplink.carrier", "fail")["Hint"]
        ns.ip("link", "set", "upl0p", "up")
        becomes(fetch, "uplink.carrier", "ok")
        ns.ip("link", "del", "upl0")
        assert becomes(fetch, "uplink.present", "fail")["Detail"] == "uplink upl0 does not exist"
        assert "uplink.carrier" not in fetch()
    finally:
        d.stop()


@pytest.fixture
def nat(daemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-n", "fcbr2", 0, {"mode": v("s", "nat")})
    return lambda: diagnose(client, "fcbr2")


def test_nat_checks_pass_on_a_fresh_network(nat):
    got = nat()
    for check in ("nat.gateway", "nat.dnsmasq", "nat.firewall", "nat.forwarding", "firewall.foreign-drop"):
        assert got[check]["Result"] == "ok", got[check]


def test_a_dead_dnsmasq_fails_until_fcnetd_restarts_it(nat, daemon):
    seen = {}

    def killed():
        for pid in dnsmasq_pids(daemon.state_dir):
            os.kill(pid, signal.SIGKILL)
        seen["row"] = nat()["nat.dnsmasq"]
        return seen["row"]["Result"] == "fail"
    # fcnetd restarts the first death at once, then after 0.5 s doubling:
    # killed a few times in a row, it stays dead long enough to be seen.
    wait_for(killed, 15, what="nat.dnsmasq fail", interval=0.01)
    assert "journalctl -u fcnetd" in seen["row"]["Hint"]
    becomes(nat, "nat.dnsmasq", "ok", timeout=20)


def test_a_deleted_rule_a_missing_gateway_and_forwarding_off_fail_until_a_reload(nat, daemon, ns):
    listing = json.loads(subprocess.run(["ip", "netns", "exec", ns.name, "nft", "-j", "-a", "list", "chain", "inet",
                                         "fcnetd", "postrouting"], capture_output=True, text=True,
                                        check=True).stdout)
    handle = next(i["rule"]["handle"] for i in listing["nftables"] if "rule" in i)
    subprocess.run(["ip", "netns", "exec", ns.name, "nft", "delete", "rule", "inet", "fcnetd", "postrouting",
                    "handle", str(handle)], check=True)
    gateway = nat()["nat.gateway"]["Detail"].split()[1]
    ns.ip("addr", "del", gateway, "dev", "fcbr2")
    subprocess.run(["ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv4.ip_forward=0"], check=True)
    got = nat()
    assert got["nat.firewall"]["Result"] == "fail" and "masquerade" in got["nat.firewall"]["Detail"]
    assert "rebuilds the table" in got["nat.firewall"]["Hint"]
    assert got["nat.gateway"]["Result"] == "fail" and "lacks fcnetd's address" in got["nat.gateway"]["Detail"]
    assert got["nat.forwarding"]["Result"] == "fail" and "ip_forward=1" in got["nat.forwarding"]["Hint"]
    daemon.proc.send_signal(signal.SIGHUP)
    for check in ("nat.firewall", "nat.gateway", "nat.forwarding"):
        becomes(nat, check, "ok")


def test_another_tables_drop_policy_warns(nat, ns):
    nft = ["ip", "netns", "exec", ns.name, "nft"]
    subprocess.run(nft + ["add table ip admin; add chain ip admin FORWARD "
                          "{ type filter hook forward priority 0; policy drop; }"], check=True)
    row = nat()["firewall.foreign-drop"]
    assert row["Result"] == "warn" and "ip admin FORWARD (hook forward)" in row["Detail"]
    assert "Firewall blocking traffic" in row["Hint"]
    subprocess.run(nft + ["delete table ip admin"], check=True)
    assert nat()["firewall.foreign-drop"]["Result"] == "ok"


def test_a_nat_vms_lease_follows_its_reservation(nat, client, guests):  # noqa: F811
    fetch = lambda: diagnose_vm(client, "vm-n")  # noqa: E731
    row = fetch()["vm.lease"]
    assert row["Result"] == "warn" and "VM Cannot Get IP Address" in row["Hint"]
    vm = client.call("GetNetwork", "s", "fcbr2")[0]["Vms"][0]
    tap = client.call("CreateTap", "ssa{sv}", "vm-n", "eth0", {})[0]
    guest = guests(tap, mac=vm["Mac"])
    assert guest.dhcp() is not None
    row = becomes(fetch, "vm.lease", "ok")
    assert vm["Ip"] in row["Detail"]


# -- the DHCP probe -------------------------------------------------------------------
def probe_ports(ns) -> list[str]:
    return [link["ifname"] for link in ns.links() if link["ifname"].startswith("fcprobe")]


def test_probe_reports_fcnetds_dnsmasq_on_a_nat_network(nat, client, ns):
    ns.ip("link", "set", "fcbr2", "address", "02:00:00:00:dd:02")  # else it takes a port's, the probe's
    row = diagnose(client, "fcbr2", timeout_ms=v("u", 2000))["dhcp.probe"]
    net = client.call("GetNetwork", "s", "fcbr2")[0]
    assert row["Result"] == "ok", row
    (server,) = row["Servers"]
    assert server["Server"] == net["Gateway"] and server["Subnet"] == net["Subnet"]
    assert server["Address"] == net["Vms"][0]["Ip"]
    assert server["Mac"] == "02:00:00:00:dd:02"
    assert probe_ports(ns) == []


def test_probe_reports_a_foreign_server_on_a_bridge_network(daemon, client, ns):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    ns.ip("link", "set", "fcbr0", "address", "02:00:00:00:dd:01")
    with DhcpServer(ns, "fcbr0", "198.51.100.1/24", ("198.51.100.50", "198.51.100.60")):
        # dnsmasq pings an address for up to 3 s before it offers it (a
        # dynamic range's, unlike fcnetd's static leases)
        row = diagnose(client, "fcbr0", timeout_ms=v("u", 6000))["dhcp.probe"]
    assert row["Result"] == "ok", row
    (server,) = row["Servers"]
    assert (server["Server"], server["Subnet"], server["Mac"]) == (
        "198.51.100.1", "198.51.100.0/24", "02:00:00:00:dd:01")
    assert server["Address"].startswith("198.51.100.")
    assert probe_ports(ns) == []


def test_probe_reports_none_within_its_timeout(daemon, client, ns):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    started = time.monotonic()
    row = diagnose(client, "fcbr0", timeout_ms=v("u", 700))["dhcp.probe"]
    assert time.monotonic() - started < 5
    assert row["Result"] == "warn" and row["Servers"] == [] and "within 0.7 s" in row["Detail"]
    assert "VLAN mismatch with DHCP server" in row["Hint"]
    assert probe_ports(ns) == []


def test_a_probe_port_left_by_a_killed_daemon_is_reaped_at_the_next_start(daemon, client, ns):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    caller = threading.Thread(target=lambda: pytest.raises(Exception, client.call, "ProbeDhcp", "sa{sv}", "fcbr0",
                                                           {"timeout_ms": v("u", 20000)}), daemon=True)
    caller.start()
    wait_for(lambda: len(probe_ports(ns)) == 2, 10, what="a probe port")
    left = sorted(probe_ports(ns))
    daemon.kill9()
    caller.join(10)
    assert sorted(probe_ports(ns)) == left
    assert ns.link(left[0])["ifalias"].startswith("fcnetd-probe:")
    daemon.start()
    assert probe_ports(ns) == []
    assert "reaped probe port" in daemon.output()


def test_probe_options_are_checked(daemon, client):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    e = client.error("ProbeDhcp", "sa{sv}", "fcbr0", {"timeout_ms": v("u", 60000)})
    assert e.type == "org.freedesktop.DBus.Error.InvalidArgs" and "timeout_ms" in e.text
    e = client.error("ProbeDhcp", "sa{sv}", "fcbr0", {"timeout_ms": v("s", "5")})
    assert "timeout_ms" in e.text and "'u'" in e.text
    assert client.error("Diagnose", "s", "nope").type.endswith("NoSuchNetwork")
    assert client.error("DiagnoseVm", "ss", "vm-x", "eth0").type.endswith("NoSuchVm")


# -- DiagnosePath -------------------------------------------------------------------------
def path(client, a, b) -> dict:
    return checks(client, "DiagnosePath", "ss", a, b)


def test_path_of_two_vms_in_different_vlans_or_networks_is_isolated_by_design(daemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-a", "fcbr0", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-b", "fcbr2", 0, {})
    row = path(client, "vm-a", "vm-b")["path.network"]
    assert row["Result"] == "fail" and "isolated by design" in row["Detail"]
    assert "same bridge + VLAN" in row["Hint"]
    got = path(client, "vm-a", "vm-c")
    assert got["path.b.attached"]["Result"] == "fail" and "path.network" not in got


def test_path_of_two_vms_on_one_network_names_the_one_not_running(daemon, client, ns):
    client.call("AttachVm", "ssqa{sv}", "vm-a", "fcbr0", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-b", "fcbr0", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", "vm-a", "eth0", {})[0]
    got = path(client, "vm-a", "vm-b")
    assert got["path.network"]["Result"] == "ok"
    assert got["a.tap.present"]["Result"] == "ok" and got["b.tap.present"]["Result"] == "warn"
    assert "vm-b" in got["b.tap.present"]["Detail"] and "not running" in got["b.tap.present"]["Detail"]
    ns.ip("link", "del", tap)  # a TAP moved elsewhere fcnetd puts back (test_drift); a deleted one stays gone
    becomes(lambda: path(client, "vm-a", "vm-b"), "a.tap.present", "warn")


# -- fcnetctl --------------------------------------------------------------------------------
def test_fcnetctl_diagnose_exit_status_table_and_json(daemon, bus, client, ns, config):
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    ok = fcnetctl(bus.address, "diagnose", "fcbr0")
    assert ok.returncode == 0 and ok.stdout.split("\n")[0].split() == ["CHECK", "RESULT", "DETAIL", "HINT"]
    assert "5 checks: 5 ok, 0 warn, 0 fail." in ok.stdout
    warn = fcnetctl(bus.address, "diagnose", "--vm", "vm-1", "--nic", "eth0", check=False)
    assert warn.returncode == 2 and "tap.present" in warn.stdout
    with open(config, "w") as f:  # a state that stays (a bridge set down, fcnetd sets up again)
        f.write(NAT_CONFIG.replace("[bridges.fcbr0]\ncreate = true\n\n", ""))
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: fcnetctl(bus.address, "diagnose", "fcbr0", check=False).returncode == 1, 10,
             what="exit status 1")
    rows = json.loads(fcnetctl(bus.address, "--json", "diagnose", "fcbr0", check=False).stdout)
    assert {"Check": "bridge.allowed", "Result": "fail"}.items() <= \
        next(r for r in rows if r["Check"] == "bridge.allowed").items()
    assert set(rows[0]) == {"Check", "Result", "Detail", "Hint"}
    both = fcnetctl(bus.address, "diagnose", "--path", "vm-1", "vm-2", check=False)
    assert both.returncode == 1 and "path.b.attached" in both.stdout
