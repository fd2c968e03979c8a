"""MoveVm in the engine (issue 12, "Live moves"): the TAP is re-plugged, never
made anew; the registry moves in one journal line; a failure leaves the VM
where it was."""

import asyncio

import pytest

from fcnetd import errors as E
from fcnetd.registry import Registry

from .test_engine import make


def run(coro):
    return asyncio.run(coro)


def test_a_move_between_vlans_keeps_the_tap_and_leaves_the_old_vlan_first(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 10)
        tap = await e.create_tap("vm-1", "eth0")
        index = e.netlink.devices[tap].index
        e.netlink.port_vlan_sets.clear()
        net = await e.move_vm("vm-1", "eth0", "fcbr0", 20)
        assert net.name == "fcbr0-vlan-20", "auto-created as AttachVm does"
        assert e.netlink.devices[tap].index == index and e.netlink.calls["create_tap"] == 1, "the same TAP"
        assert e.netlink.port_vlan_sets == [(index, {20: {"pvid", "untagged"}})]
        assert e.netlink.calls["set_down"] == 0, "same bridge: no need to set it down"
        assert e.registry.attachments[("vm-1", "eth0")].network_id == net.id
        assert e.find_network("fcbr0-vlan-10").id not in {a.network_id for a in e.registry.attachments.values()}
        assert await e.create_tap("vm-1", "eth0") == tap, "its TAP is still known as the VM NIC's"
    run(go())


def test_a_move_to_another_bridge_sets_the_tap_down_before_it_is_enslaved(tmp_path):
    e = make(tmp_path, vlan=False)
    order = []

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        tap = await e.create_tap("vm-1", "eth0")
        for op in ("set_down", "set_master", "set_up"):
            real = getattr(e.netlink, op)

            async def logged(*a, _real=real, _op=op, **k):
                order.append(_op)
                return await _real(*a, **k)
            setattr(e.netlink, op, logged)
        await e.move_vm("vm-1", "eth0", "fcbr1", 0)
        device = e.netlink.devices[tap]
        assert order == ["set_down", "set_master", "set_up"]
        assert device.master == e.bridges["fcbr1"].index and device.up
    run(go())


def test_a_failed_replug_leaves_the_vm_where_it_was(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 10)
        tap = await e.create_tap("vm-1", "eth0")
        before = e.registry.attachments[("vm-1", "eth0")]
        real = e.netlink.set_port_vlans
        calls = []

        async def refuse_the_new_vlan(index, wanted, what, current=None):
            calls.append(wanted)
            if 20 in wanted:
                raise E.Internal("the kernel said no")
            return await real(index, wanted, what, current)
        e.netlink.set_port_vlans = refuse_the_new_vlan
        with pytest.raises(E.Internal):
            await e.move_vm("vm-1", "eth0", "fcbr0", 20)
        assert e.registry.attachments[("vm-1", "eth0")] == before
        assert calls[-1] == {10: {"pvid", "untagged"}}, "put back in its VLAN"
        assert e.taps[("vm-1", "eth0")].name == tap
    run(go())


def test_a_failed_commit_puts_the_tap_back_and_stores_nothing(tmp_path, monkeypatch):
    e = make(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 10)
        await e.create_tap("vm-1", "eth0")
        await e.create_network("", "fcbr0", 20)  # its creation is not what fails here
        before = e.registry.attachments[("vm-1", "eth0")]

        def full(payload):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(e.registry.journal, "append", full)
        e.netlink.port_vlan_sets.clear()
        with pytest.raises(E.Internal, match="not saved"):
            await e.move_vm("vm-1", "eth0", "fcbr0", 20)
        assert e.registry.attachments[("vm-1", "eth0")] == before
        moved, back = [w for _, w in e.netlink.port_vlan_sets]
        assert (moved, back) == ({20: {"pvid", "untagged"}}, {10: {"pvid", "untagged"}}), "moved, then put back"
    run(go())


def test_the_move_is_one_journal_line_replayed_at_start(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 10, vm_name="web")
        await e.move_vm("vm-1", "eth0", "fcbr1", 0)
    run(go())
    with open(tmp_path / "registry.journal") as f:
        ops = [line for line in f.read().splitlines() if '"move_attachment"' in line]
    assert len(ops) == 1
    again = Registry(str(tmp_path))
    assert again.load() == []
    att = again.attachments[("vm-1", "eth0")]
    assert again.networks[att.network_id].bridge == "fcbr1" and att.vm_name == "web"


def test_moving_where_it_is_changes_nothing_and_an_unattached_nic_is_refused(tmp_path):
    e = make(tmp_path)

    async def go():
        net = await e.attach_vm("vm-1", "fcbr0", 10)
        seq = e.registry.seq
        assert (await e.move_vm("vm-1", "eth0", "fcbr0", 10)).id == net.id
        assert e.registry.seq == seq
        with pytest.raises(E.NoSuchVm):
            await e.move_vm("vm-2", "eth0", "fcbr0", 20)
    run(go())
