"""The engine's side of issue 12's drift and unused parts, on the fake
kernel: a TAP event that disagrees with what fcnetd keeps is reconciled once
it has settled (and not when it was a moment of fcnetd's own), each repair
is one on_drift (what, detail), a bridge's Status change tells its networks'
observers, and the unused filter."""

import asyncio
import dataclasses

from fcnetd import engine as enginemod
from fcnetd.netlink import BridgeState

from .fakenetlink import YieldingNetlink
from .test_engine import make


def watched(tmp_path, netlink=None):
    e = make(tmp_path)
    if netlink is not None:
        e.netlink = netlink
    drifts, changed = [], []
    e.on_drift = lambda what, detail: drifts.append((what, detail))
    e.on_network_changed = lambda net: changed.append(net.name)
    return e, drifts, changed


def test_a_tap_moved_to_another_master_is_put_back_once_it_settles(tmp_path, monkeypatch):
    monkeypatch.setattr(enginemod, "TAP_SETTLE_SECONDS", 0.01)
    e, drifts, _ = watched(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        name = await e.create_tap("vm-1", "eth0")
        kernel = e.netlink.devices
        kernel[name] = dataclasses.replace(kernel[name], master=99)  # ip link set TAP master other
        e.tap_changed(name, True, False, 99)
        await asyncio.sleep(0.1)
        assert kernel[name].master == e.bridges["fcbr0"].index
        [(what, detail)] = drifts
        assert what == "tap.bridge" and name in detail and "vm-1" in detail and "fcbr0" in detail
    asyncio.run(go())


def test_a_tap_down_for_a_moment_of_fcnetds_own_is_not_reconciled(tmp_path, monkeypatch):
    monkeypatch.setattr(enginemod, "TAP_SETTLE_SECONDS", 0.01)
    e, drifts, _ = watched(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        name = await e.create_tap("vm-1", "eth0")
        dumps = e.netlink.calls["taps"]
        e.tap_changed(name, False, False, e.bridges["fcbr0"].index)  # e.g. a move sets it down first
        e.tap_changed(name, True, False, e.bridges["fcbr0"].index)  # and up again
        await asyncio.sleep(0.1)
        assert e.netlink.calls["taps"] == dumps and drifts == []
        e.tap_changed(name, True, True)  # carrier only: no master said, nothing to check
        assert e._tap_check is None
    asyncio.run(go())


class DownBridges(YieldingNetlink):
    """fcbr0 can be set down; the uplink eth9 has lost its VLANs."""

    def __init__(self):
        super().__init__()
        self.down: set[str] = set()

    def _bridge_state(self, name):
        state = super()._bridge_state(name)
        return dataclasses.replace(state, up=name not in self.down)

    async def ensure_bridge(self, name, create, mtu, vlan_filtering):
        self.down.discard(name)
        return await super().ensure_bridge(name, create, mtu, vlan_filtering)

    async def link_index(self, name):
        return 50 if name == "eth9" else None

    async def port_vlans(self, index):
        return {1: frozenset({"pvid", "untagged"})}


def test_a_bridge_set_down_is_set_up_again_and_its_networks_status_told(tmp_path):
    e, drifts, changed = watched(tmp_path, DownBridges())

    async def go():
        await e.create_network("", "fcbr0", 0)
        e.netlink.down.add("fcbr0")
        repair = e.bridge_changed("fcbr0", BridgeState("fcbr0", 1, False, True, 1))
        assert changed == ["fcbr0"], "Status became bridge-down"
        assert e.status(e.find_network("fcbr0")) == "bridge-down"
        await repair()
        assert e.status(e.find_network("fcbr0")) == "active" and changed == ["fcbr0", "fcbr0"]
        assert [w for w, _ in drifts] == ["bridge.down"] and "fcbr0" in drifts[0][1]
        # an admin's bridge (create = false) set down stays down: Diagnose names the fix
        await e.create_network("", "fcbr1", 0)
        assert e.bridge_changed("fcbr1", BridgeState("fcbr1", 2, False, True, 1)) is None
        assert e.status(e.find_network("fcbr1")) == "bridge-down" and len(drifts) == 1
    asyncio.run(go())


def test_an_uplink_that_lost_a_vlan_is_drift(tmp_path):
    e, drifts, _ = watched(tmp_path, DownBridges())
    e.config = dataclasses.replace(e.config, bridges={
        **e.config.bridges, "fcbr0": dataclasses.replace(e.config.bridges["fcbr0"], uplink="eth9")})

    async def go():
        await e.create_network("", "fcbr0", 10)  # its claim: not drift while being made
        assert drifts == []
        await e.sync_uplinks()  # the uplink (port_vlans) still lacks VLAN 10: lost behind our back
        [(what, detail)] = drifts
        assert what == "uplink.vlan" and "eth9" in detail and "10" in detail
    asyncio.run(go())


def test_the_nat_planes_repairs_are_drift_too(tmp_path):
    e, drifts, _ = watched(tmp_path)
    recorded = []
    e.on_change = lambda action, **about: recorded.append((action, about))
    e._nat_report("drift-repaired", by_daemon=True, network=None, repaired="forwarding")
    e._nat_report("nat-something-else", by_daemon=True)
    assert [a for a, _ in recorded] == ["drift-repaired", "nat-something-else"]
    assert [w for w, _ in drifts] == ["nat.forwarding"]


def test_unused_lists_networks_without_vms(tmp_path):
    e, _, _ = watched(tmp_path)

    async def go():
        await e.create_network("a", "fcbr0", 0)
        await e.create_network("b", "fcbr0", 5)
        await e.attach_vm("vm-1", "fcbr0", 5)
        assert [n.name for n in e.list_networks(unused=True)] == ["a"]
        assert [n.name for n in e.list_networks()] == ["b", "a"]
    asyncio.run(go())
