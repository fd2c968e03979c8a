"""The engine's side of VLAN drift seen from link events: a bridge port's
VLAN notice (PortVlans) that disagrees with what fcnetd keeps is looked at
again once it has settled and then reconciled, which repairs, counts,
audits and announces it; notices of fcnetd's own changes (CreateTap,
MoveVm, an uplink sync) are never taken for drift. The fake kernel below
keeps each port's VLANs and sends a notice after each change, as the
kernel does."""

import asyncio
import dataclasses

import pytest

from fcnetd import engine as enginemod
from fcnetd.config import parse
from fcnetd.engine import Engine
from fcnetd.registry import Registry

from .fakenetlink import YieldingNetlink

PU = frozenset({"pvid", "untagged"})
TAGGED = frozenset()
UPLINK = 50  # eth9's index


class VlanKernel(YieldingNetlink):
    """Each port's VLANs by index; `notify(name, master, vlans)`, once set,
    gets a notice after every change, the intermediate states of one
    request sequence included."""

    def __init__(self):
        super().__init__()
        self.vlans: dict[int, dict[int, frozenset]] = {UPLINK: {1: PU}}
        self.notify = lambda name, master, vlans: None
        self.between = None  # awaited between a re-plug's leaving and joining, if set

    def _set(self, index: int, vlans: dict) -> None:
        self.vlans[index] = dict(vlans)
        if index == UPLINK:
            self.notify("eth9", self.BRIDGE_INDEX, dict(vlans))
        elif (tap := self._tap(index)) is not None:
            self.notify(tap.name, tap.master, dict(vlans))

    async def create_tap(self, name, vm_id, nic, bridge, vlan, uid, gid, mtu):
        tap = await super().create_tap(name, vm_id, nic, bridge, vlan, uid, gid, mtu)
        self._set(tap.index, {1: PU})  # enslaved: the bridge's default VLAN
        if vlan:
            self._set(tap.index, {1: frozenset({"untagged"}), vlan: PU})
            self._set(tap.index, {vlan: PU})
        return tap

    async def link_index(self, name):
        await self._kernel("link_index")
        return UPLINK if name == "eth9" else None

    async def port_vlans(self, index):
        await self._kernel("port_vlans")
        return dict(self.vlans.get(index, {}))

    async def all_port_vlans(self):
        await self._kernel("all_port_vlans")
        return {index: dict(v) for index, v in self.vlans.items()}

    async def set_port_vlans(self, index, wanted, what, current=None):
        await self._kernel("set_port_vlans")
        self.port_vlan_sets.append((index, dict(wanted)))
        now = dict(self.vlans.get(index, {}))
        for vid in now.keys() - wanted.keys():  # out of the old VLANs first, as netlink.set_port_vlans
            del now[vid]
            self._set(index, now)
        if self.between is not None:
            await self.between()
        for vid, flags in wanted.items():
            if now.get(vid) != flags:
                now[vid] = frozenset(flags)
                self._set(index, now)


def engine(tmp_path, monkeypatch, settle=0.01):
    monkeypatch.setattr(enginemod, "TAP_SETTLE_SECONDS", settle)
    cfg = parse({"daemon": {"host": "node1"},
                 "bridges": {"fcbr0": {"create": True, "uplink": "eth9"}, "fcbr1": {}}})
    kernel = VlanKernel()
    e = Engine(cfg, Registry(str(tmp_path)), kernel)
    seen = {"drifts": [], "audit": []}
    e.on_drift = lambda what, detail: seen["drifts"].append((what, detail))
    e.on_change = lambda action, **about: seen["audit"].append((action, about))
    return e, kernel, seen


async def settled(e) -> None:
    """Waits for the look-again the notices armed, and the reconcile it asked for."""
    if e._tap_check is not None:
        await e._tap_check


async def vm_on_vlan(e, kernel, vm: str, vlan: int) -> str:
    await e.attach_vm(vm, "fcbr0", vlan)
    name = await e.create_tap(vm, "eth0")
    kernel.notify = lambda name, master, vlans: e.port_vlans_changed(name, master, vlans)
    return name


CHANGES = {
    "an extra VLAN": {10: PU, 20: TAGGED},  # bridge vlan add dev TAP vid 20
    "its VLAN lost": {},  # bridge vlan del dev TAP vid 10
    "another PVID": {10: frozenset({"untagged"}), 20: PU},  # bridge vlan add dev TAP vid 20 pvid untagged
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_taps_vlans_changed_behind_fcnetds_back_are_put_back_exactly(tmp_path, monkeypatch, change):
    e, kernel, seen = engine(tmp_path, monkeypatch)

    async def go():
        tap = await vm_on_vlan(e, kernel, "vm-1", 10)
        index = e.taps[("vm-1", "eth0")].index
        assert e._tap_check is None, "CreateTap's own notices are not drift"
        kernel._set(index, CHANGES[change])  # the admin's change, and its notice
        assert e._tap_check is not None
        await settled(e)
        assert kernel.vlans[index] == {10: PU}
        [(what, detail)] = seen["drifts"]
        assert what == "tap.vlan" and tap in detail and "vm-1" in detail and "VLAN 10" in detail, detail
        assert e.stats.reconcile["drift"] == 1
        [(action, about)] = [a for a in seen["audit"] if a[0] == "drift-repaired"]
        assert about["tap"] == tap and about["repaired"] == "vlan" and about["by_daemon"] is True
    asyncio.run(go())


def test_an_uplink_that_lost_a_vlan_in_use_gets_it_back_from_its_notice(tmp_path, monkeypatch):
    e, kernel, seen = engine(tmp_path, monkeypatch)

    async def go():
        await vm_on_vlan(e, kernel, "vm-1", 10)
        await e.create_network("", "fcbr0", 20)
        assert kernel.vlans[UPLINK] == {1: PU, 10: TAGGED, 20: TAGGED}
        assert e._tap_check is None, "the uplink syncs of CreateNetwork and AttachVm are not drift"
        kernel._set(UPLINK, {1: PU, 20: TAGGED})  # bridge vlan del dev eth9 vid 10
        await settled(e)
        assert kernel.vlans[UPLINK] == {1: PU, 10: TAGGED, 20: TAGGED}
        [(what, detail)] = seen["drifts"]
        assert what == "uplink.vlan" and "eth9" in detail and "VLAN 10" in detail, detail
        assert [a["vlans"] for act, a in seen["audit"] if act == "drift-repaired"] == ["10"]
        # a VLAN no network uses, taken off by the admin, is nothing of fcnetd's
        kernel._set(UPLINK, {1: PU, 10: TAGGED, 20: TAGGED, 30: TAGGED})
        kernel._set(UPLINK, {1: PU, 10: TAGGED, 20: TAGGED})
        assert e._tap_check is None
    asyncio.run(go())


def test_a_move_between_vlans_is_not_drift(tmp_path, monkeypatch):
    """MoveVm 10 -> 20 re-plugs the TAP: its notices say {} and then {20}
    while the registry still says 10. Looked at once settled, nothing is
    left to repair and no reconcile runs."""
    e, kernel, seen = engine(tmp_path, monkeypatch)

    async def go():
        await vm_on_vlan(e, kernel, "vm-1", 10)
        dumps = kernel.calls["taps"]
        for vlan in (20, 10, 20):
            await e.move_vm("vm-1", "eth0", "fcbr0", vlan)
            await settled(e)
        assert kernel.vlans[e.taps[("vm-1", "eth0")].index] == {20: PU}
        assert kernel.calls["taps"] == dumps, "no reconcile was asked for"
        assert seen["drifts"] == [] and e.stats.reconcile["drift"] == 0
    asyncio.run(go())


def test_a_look_again_during_a_move_waits_for_it_and_finds_nothing(tmp_path, monkeypatch):
    """Settling takes no time here, so the look-again runs while MoveVm
    re-plugs the TAP, between leaving VLAN 10 and joining 20: the TAP in no
    VLAN, the registry at 10. It asks for a reconcile, which holds the gate
    alone, so it reads the kernel only once the move is done, and repairs
    and announces nothing."""
    e, kernel, seen = engine(tmp_path, monkeypatch, settle=0)

    async def go():
        await vm_on_vlan(e, kernel, "vm-1", 10)
        await e.ensure_network("fcbr0", 20)
        looks = []

        async def between():
            looks.append(e._tap_check)  # armed by the notice of the TAP in no VLAN
            await asyncio.sleep(0.05)  # the look-again runs meanwhile
        kernel.between = between
        dumps = kernel.calls["taps"]
        await e.move_vm("vm-1", "eth0", "fcbr0", 20)
        [look] = looks
        await look
        assert kernel.calls["taps"] == dumps + 1, "the look-again asked for a reconcile"
        assert kernel.vlans[e.taps[("vm-1", "eth0")].index] == {20: PU}
        assert seen["drifts"] == [] and e.stats.reconcile["drift"] == 0
    asyncio.run(go())


def test_a_newer_notice_that_agrees_clears_the_suspicion(tmp_path, monkeypatch):
    e, kernel, seen = engine(tmp_path, monkeypatch)

    async def go():
        await vm_on_vlan(e, kernel, "vm-1", 10)
        index = e.taps[("vm-1", "eth0")].index
        dumps = kernel.calls["taps"]
        kernel._set(index, {10: PU, 20: TAGGED})
        kernel._set(index, {10: PU})  # put back by whoever changed it
        await settled(e)
        assert kernel.calls["taps"] == dumps and seen["drifts"] == []
    asyncio.run(go())


def test_notices_fcnetd_does_not_judge(tmp_path, monkeypatch):
    """Only a tagged network's TAP on its own, filtering bridge, or an
    uplink, is judged: another master is tap.bridge's case (the TAP's own
    event), filtering off is bridge.vlan-filtering's, an untagged network's
    TAP and ports that are not fcnetd's are left alone."""
    e, kernel, _ = engine(tmp_path, monkeypatch)

    async def go():
        tagged = await vm_on_vlan(e, kernel, "vm-1", 10)
        untagged = await vm_on_vlan(e, kernel, "vm-2", 0)
        e.port_vlans_changed(tagged, 99, {})  # on another bridge
        e.port_vlans_changed(untagged, 1, {1: PU, 20: TAGGED})
        e.port_vlans_changed("foreign1", 1, {})
        e.port_vlans_changed(None, 1, {})
        assert e._tap_check is None
        e.set_bridge("fcbr0", dataclasses.replace(e.bridges["fcbr0"], vlan_filtering=False))
        e.port_vlans_changed(tagged, 1, {})
        e.port_vlans_changed("eth9", 1, {1: PU})
        assert e._tap_check is None
    asyncio.run(go())


def test_a_resync_after_lost_events_reads_the_ports_vlans(tmp_path, monkeypatch):
    """The kernel overran the event socket: the notices of a TAP's and the
    uplink's VLAN changes may be among the lost, so the resync reads them."""
    e, kernel, seen = engine(tmp_path, monkeypatch)

    async def go():
        await vm_on_vlan(e, kernel, "vm-1", 10)
        kernel.notify = lambda name, master, vlans: None  # lost
        index = e.taps[("vm-1", "eth0")].index
        kernel._set(index, {20: PU})
        kernel._set(UPLINK, {1: PU})
        await e.resync()
        await settled(e)
        assert kernel.vlans[index] == {10: PU} and kernel.vlans[UPLINK] == {1: PU, 10: TAGGED}
        assert sorted(w for w, _ in seen["drifts"]) == ["tap.vlan", "uplink.vlan"]
    asyncio.run(go())


def test_the_daemon_hands_port_notices_to_the_engine_and_nothing_else(tmp_path, monkeypatch):
    """A bridge's notice of its own VLANs bears the bridge's name: it must
    not be read as the bridge's state (nor a TAP's notice as the TAP's)."""
    from fcnetd.daemon import Daemon, parse_args
    from fcnetd.rawnetlink import PortVlans

    config = tmp_path / "fcnetd.toml"
    config.write_text("[bridges.fcbr0]\n")
    daemon = Daemon(parse_args(["--config", str(config), "--state-dir", str(tmp_path), "--metrics", "off"]))
    got = []
    monkeypatch.setattr(daemon.engine, "port_vlans_changed", lambda *a: got.append(("vlans", *a)))
    for other in ("bridge_changed", "tap_changed", "tap_vanished"):
        monkeypatch.setattr(daemon.engine, other, lambda *a, other=other: got.append((other, *a)))
    daemon._link_event(PortVlans("fcbr0", 1, 1, {1: PU}))
    daemon._link_event(PortVlans("vmtap000001", 12, 1, {}))
    assert got == [("vlans", "fcbr0", 1, {1: PU}), ("vlans", "vmtap000001", 1, {})]
