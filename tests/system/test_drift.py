"""Live drift with the real daemon: each change made behind fcnetd's back
with `ip` is noticed from link events, repaired, and announced once with a
DriftDetected signal (seen by a D-Bus match), within a few seconds; the
network's Status change is a PropertiesChanged. Tagged changes (a TAP's
VLAN, VLAN filtering, the uplink's VLANs) need a kernel with bridge VLAN
filtering: the kernel tier."""

import time

import pytest

from fcnetd.names import network_path

from .busclient import UserConnection
from .harness import wait_for
from .test_access import NOBODY, fcnet_gid

DRIFT = "type='signal',sender='org.fcnetd.Network1',member='DriftDetected'"
CHANGES = "type='signal',sender='org.fcnetd.Network1',member='PropertiesChanged'"
SOON = 3.0  # seconds: link events arrive within milliseconds; a TAP settles 0.25 s, then a reconcile


@pytest.fixture
def watcher(bus):
    conn = UserConnection(bus.address, 0)
    conn.add_match(DRIFT)
    conn.add_match(CHANGES)
    yield conn
    conn.close()


def drifts(signals: list[dict]) -> list[tuple[str, str]]:
    return [tuple(s["body"]) for s in signals if s["member"] == "DriftDetected"]


def repaired(watcher, check, what: str) -> list[dict]:
    """Waits until check() holds and a DriftDetected `what` came; returns every
    signal seen, after a round trip that shows no second one followed."""
    started = time.monotonic()
    seen: list[dict] = []

    def done():
        seen.extend(watcher.signals())
        return check() and any(w == what for w, _ in drifts(seen))
    wait_for(done, timeout=SOON, what=f"the repair and DriftDetected {what}")
    assert time.monotonic() - started < SOON
    seen.extend(watcher.signals())
    return seen


def up(link: dict) -> bool:
    return "UP" in link["flags"]


def test_each_change_behind_fcnetds_back_is_repaired_and_announced_once(daemon, client, watcher):
    ns = daemon.ns
    net = client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})[0]
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})  # another bridge fcnetd allows
    client.call("AttachVm", "ssqa{sv}", "vm-a", "fcbr0", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", "vm-a", "eth0", {})[0]
    watcher.signals()  # what the set-up sent

    ns.ip("link", "set", tap, "master", "fcbr1")
    seen = repaired(watcher, lambda: ns.link(tap).get("master") == "fcbr0", "tap.bridge")
    [(what, detail)] = drifts(seen)
    assert what == "tap.bridge" and tap in detail and "vm-a" in detail and "fcbr0" in detail, detail

    ns.ip("link", "set", tap, "nomaster")
    seen = repaired(watcher, lambda: ns.link(tap).get("master") == "fcbr0", "tap.bridge")
    assert [w for w, _ in drifts(seen)] == ["tap.bridge"]

    ns.ip("link", "set", tap, "down")
    seen = repaired(watcher, lambda: up(ns.link(tap)), "tap.up")
    [(what, detail)] = drifts(seen)
    assert tap in detail and "set up again" in detail, detail

    ns.ip("link", "set", "fcbr0", "down")
    seen = repaired(watcher, lambda: up(ns.link("fcbr0")), "bridge.down")
    [(what, detail)] = drifts(seen)
    assert "fcbr0" in detail, detail
    statuses = [s["body"][1]["Status"] for s in seen
                if s["member"] == "PropertiesChanged" and s["path"] == net and "Status" in s["body"][1]]
    assert statuses, "the network's Status change was announced"
    assert client.call("GetNetwork", "s", "fcbr0")[0]["Status"] == "active"

    ns.ip("link", "del", "fcbr0")
    seen = repaired(watcher, lambda: (ns.link("fcbr0") or {}).get("ifname") == "fcbr0"
                    and (ns.link(tap) or {}).get("master") == "fcbr0", "bridge.missing")
    assert sorted(w for w, _ in drifts(seen)) == ["bridge.missing", "tap.bridge"], drifts(seen)
    assert up(ns.link("fcbr0")) and up(ns.link(tap))

    # fcnetd's own changes are not drift: a move to fcbr1 and back, a TAP stopped and started.
    client.call("MoveVm", "sssqa{sv}", "vm-a", "eth0", "fcbr1", 0, {})
    client.call("MoveVm", "sssqa{sv}", "vm-a", "eth0", "fcbr0", 0, {})
    client.call("DeleteTap", "ss", "vm-a", "eth0")
    tap = client.call("CreateTap", "ssa{sv}", "vm-a", "eth0", {})[0]
    ns.ip("link", "set", tap, "down")  # then a real one, to know the quiet ones were seen
    seen = repaired(watcher, lambda: up(ns.link(tap)), "tap.up")
    assert [w for w, _ in drifts(seen)] == ["tap.up"], drifts(seen)
    assert network_path(client.call("GetNetwork", "s", "fcbr0")[0]["Id"]) == net


def test_drift_signals_reach_root_and_fcnet_only(daemon, client, bus):
    """The bus policy (dbus/) keeps fcnetd's signals from outsiders: an
    outsider's match gets no DriftDetected, a member of fcnet's does."""
    outsider = UserConnection(bus.address, NOBODY)
    member = UserConnection(bus.address, NOBODY, groups=[fcnet_gid()])
    root = UserConnection(bus.address, 0)
    try:
        for conn in (outsider, member, root):
            conn.add_match(DRIFT)
        client.call("AttachVm", "ssqa{sv}", "vm-a", "fcbr0", 0, {})
        tap = client.call("CreateTap", "ssa{sv}", "vm-a", "eth0", {})[0]
        daemon.ns.ip("link", "set", tap, "down")
        wait_for(lambda: drifts(root.signals()), timeout=SOON, what="DriftDetected at root")
        assert [w for w, _ in drifts(member.signals())] == ["tap.up"]
        assert drifts(outsider.signals()) == []
    finally:
        for conn in (outsider, member, root):
            conn.close()
