"""MoveVm with the real daemon (issue 12, "Live moves"): a running VM's TAP,
held open by a VMM stand-in (fcnetd.relay, which opens it as Firecracker
does), is re-plugged into another network: the same device and file
descriptor, now reaching that network's VMs and no longer the old one's.
This kernel has no VLAN filtering, so the move here is between two bridges;
the kernel tier moves a VM from VLAN 10 to VLAN 20 on one bridge."""

import signal

import pytest

from fcnetd.registry import read_registry

from .guestnet import guests  # noqa: F401 (fixture)
from .harness import Daemon, fcnetctl, v, wait_for

A, B, C = "192.0.2.10", "192.0.2.20", "192.0.2.30"  # documentation addresses, inside the test's namespaces


def start(client, guests, vm: str, bridge: str, address: str):
    client.call("AttachVm", "ssqa{sv}", vm, bridge, 0, {})
    tap = client.call("CreateTap", "ssa{sv}", vm, "eth0", {})[0]
    guest = guests(tap)
    guest.netns.ip("addr", "add", f"{address}/24", "dev", guest.ifname)
    return tap, guest


def vms(client, network: str) -> list[str]:
    return sorted(e["VmId"] for e in client.call("GetNetwork", "s", network)[0]["Vms"])


def test_a_running_vm_moved_to_another_bridge_keeps_its_tap_and_reaches_only_its_new_network(
        daemon, bus, client, guests):
    ns = daemon.ns
    tap, a = start(client, guests, "vm-a", "fcbr0", A)
    _, b = start(client, guests, "vm-b", "fcbr1", B)
    _, c = start(client, guests, "vm-c", "fcbr0", C)
    assert a.ping(C) and not a.ping(B, timeout=1), "before: on fcbr0 with vm-c only"
    index = ns.link(tap)["ifindex"]

    said = fcnetctl(bus.address, "move", "vm-a", "fcbr1").stdout.strip()
    assert said == "moved to fcbr1: vm-a eth0"
    link = ns.link(tap)
    assert (link["ifindex"], link.get("master")) == (index, "fcbr1"), "the same TAP, re-plugged"
    assert "UP" in link["flags"]
    assert a.relay.poll() is None, "the VMM stand-in keeps its file descriptor"
    assert a.ping(B), "after: vm-a reaches vm-b on fcbr1"
    assert not a.ping(C, timeout=1), "after: vm-a no longer reaches vm-c on fcbr0"
    assert (vms(client, "fcbr0"), vms(client, "fcbr1")) == (["vm-c"], ["vm-a", "vm-b"])
    assert tap in client.call("GetNetwork", "s", "fcbr1")[0]["Taps"]
    assert tap not in client.call("GetNetwork", "s", "fcbr0")[0]["Taps"]

    daemon.stop()  # what a restart finds: the move on disk, the TAP adopted where it is
    daemon.start()
    assert (vms(client, "fcbr0"), vms(client, "fcbr1")) == (["vm-c"], ["vm-a", "vm-b"])
    assert ns.link(tap).get("master") == "fcbr1"
    assert a.ping(B)


def test_a_move_refused_leaves_the_vm_where_it_was(daemon, client, guests):
    tap, a = start(client, guests, "vm-a", "fcbr0", A)
    err = client.error("MoveVm", "sssqa{sv}", "vm-a", "eth0", "fcbr9", 0, {})
    assert err.type.endswith("BridgeNotAllowed"), err
    err = client.error("MoveVm", "sssqa{sv}", "vm-a", "eth0", "fcbr1", 0, {"ip": v("s", "10.0.0.5")})
    assert err.type.endswith("InvalidArgs") and "ip" in err.text, err
    assert vms(client, "fcbr0") == ["vm-a"] and daemon.ns.link(tap).get("master") == "fcbr0"
    assert "fcbr1" not in [n["Name"] for n in client.call("ListNetworks", "a{sv}", {})[0]] or \
        vms(client, "fcbr1") == []


@pytest.mark.parametrize("point", ["move.enslaved", "move.replugged"])
def test_killed_during_the_move_the_restart_puts_the_tap_back_where_the_registry_has_it(
        point, ns, bus, tmp_path, config, client, guests, monkeypatch):
    """Fault points move.enslaved (the TAP down on the new bridge) and
    move.replugged (up there): the registry still has the old network.
    After the restart the VM is where the registry says, its TAP back on
    that bridge and up, the VMM's fd untouched."""
    state = str(tmp_path / "state")
    d = Daemon(ns, bus, state, config).start()
    try:
        tap, a = start(client, guests, "vm-a", "fcbr0", A)
        _, c = start(client, guests, "vm-c", "fcbr0", C)
        start(client, guests, "vm-b", "fcbr1", B)
        d.stop()
        monkeypatch.setenv("FCNETD_FAULT_POINT", f"{point}:1")
        d.start()
        monkeypatch.delenv("FCNETD_FAULT_POINT")
        client.error("MoveVm", "sssqa{sv}", "vm-a", "eth0", "fcbr1", 0, {})  # no answer: the daemon is killed
        wait_for(lambda: d.proc.poll() is not None, what=f"the daemon killed at {point}")
        assert d.proc.returncode == -signal.SIGKILL
        assert ns.link(tap).get("master") == "fcbr1", "killed after the replug, before the commit"
        snap, _ = read_registry(state)
        assert snap.networks[snap.attachments[("vm-a", "eth0")].network_id].bridge == "fcbr0"
        d.start()
        wait_for(lambda: ns.link(tap).get("master") == "fcbr0" and "UP" in ns.link(tap)["flags"],
                 what="the TAP back on fcbr0, and up")
        assert vms(client, "fcbr0") == ["vm-a", "vm-c"]
        assert a.relay.poll() is None and a.ping(C)
    finally:
        d.stop()
