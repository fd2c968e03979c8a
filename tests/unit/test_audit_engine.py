"""Where the engine reports changes for the audit trail (Engine.on_change):
once per change actually made, after it is stored and in the kernel, with
the caller of the call that made it; nothing for a retried, idempotent,
refused or failed call; the daemon's own repairs name no caller."""

import asyncio

import pytest

from fcnetd import caller, errors as E
from fcnetd.caller import Caller
from fcnetd.model import Network
from fcnetd.netlink import BridgeState, TapState

from .test_engine import make


def recorder(engine) -> list[tuple]:
    """(action, actor or None for the daemon, facts) of each change reported."""
    entries = []

    def record(action, *, by_daemon=False, **about):
        who = None if by_daemon else caller.current.get()
        facts = {k: v.name if isinstance(v, Network) else v for k, v in about.items() if v is not None}
        entries.append((action, who.actor if who else None, facts))
    engine.on_change = record
    return entries


async def as_(actor: str, coro):
    """Runs coro as a call of its own (a task, as dbus-fast runs each call)
    whose caller acts for `actor`."""
    async def call():
        caller.current.set(Caller(f":1.{actor}", 1000, 4242, None, actor))
        return await coro
    return await asyncio.ensure_future(call())


def test_a_vm_lifecycle_reports_each_change_once_with_its_caller(tmp_path):
    e = make(tmp_path)
    entries = recorder(e)

    async def go():
        await as_("alice", e.attach_vm("vm-1", "fcbr0", 10, vm_name="web"))
        tap = await as_("bob", e.create_tap("vm-1", "eth0", 1000, 1000))
        assert await as_("bob", e.create_tap("vm-1", "eth0", 1000, 1000)) == tap  # a retried VM start
        await as_("carol", e.delete_tap("vm-1", "eth0"))
        await as_("carol", e.delete_tap("vm-1", "eth0"))  # idempotent: nothing done, nothing said
        tap2 = await as_("dave", e.create_tap("vm-1", "eth0"))
        await as_("erin", e.detach_vm("vm-1", "eth0"))
        await as_("frank", e.delete_network("fcbr0-vlan-10"))
        return tap, tap2
    tap, tap2 = asyncio.run(go())
    net = "fcbr0-vlan-10"
    assert entries == [
        ("network-created", "alice", {"network": net, "origin": "auto", "mode": "bridge"}),
        ("vm-attached", "alice", {"network": net, "vm": "vm-1", "nic": "eth0", "vm_name": "web"}),
        ("tap-created", "bob", {"network": net, "vm": "vm-1", "nic": "eth0", "tap": tap, "owner_uid": 1000,
                                "owner_gid": 1000}),
        ("tap-deleted", "carol", {"network": net, "vm": "vm-1", "nic": "eth0", "tap": tap}),
        ("tap-created", "dave", {"network": net, "vm": "vm-1", "nic": "eth0", "tap": tap2}),
        ("tap-deleted", "erin", {"network": net, "vm": "vm-1", "nic": "eth0", "tap": tap2}),
        ("vm-detached", "erin", {"network": net, "vm": "vm-1", "nic": "eth0"}),
        ("network-deleted", "frank", {"network": net}),
    ]


def test_two_first_attachments_report_one_creation_by_the_caller_that_made_it(tmp_path):
    """The auto-creation runs in a task of its own, shared by concurrent
    AttachVm calls: it carries the caller of the call that started it."""
    e = make(tmp_path)
    entries = recorder(e)

    async def go():
        await asyncio.gather(as_("alice", e.attach_vm("vm-a", "fcbr0", 20)),
                             as_("bob", e.attach_vm("vm-b", "fcbr0", 20)))
    asyncio.run(go())
    created = [x for x in entries if x[0] == "network-created"]
    assert len(created) == 1 and created[0][1] == "alice"  # the first call leads the creation
    assert sorted((a, f["vm"]) for act, a, f in entries if act == "vm-attached") == [("alice", "vm-a"),
                                                                                      ("bob", "vm-b")]


def test_refused_and_failed_calls_report_nothing(tmp_path, monkeypatch):
    e = make(tmp_path)

    async def setup():
        await e.attach_vm("vm-1", "fcbr0", 0)
    asyncio.run(setup())
    entries = recorder(e)

    async def failing_tap(*args):
        raise E.Internal("netlink went away")

    def full(payload):
        raise OSError(28, "No space left on device")

    async def go():
        with pytest.raises(E.NetworkInUse):
            await e.delete_network("fcbr0")
        with pytest.raises(E.NicAttached):
            await e.attach_vm("vm-1", "fcbr0", 0)
        with pytest.raises(E.NoSuchVm):
            await e.create_tap("vm-9", "eth0")
        monkeypatch.setattr(e.netlink, "create_tap", failing_tap)
        with pytest.raises(E.Internal):
            await e.create_tap("vm-1", "eth0")
        monkeypatch.setattr(e.registry.journal, "append", full)
        with pytest.raises(E.Internal, match="not saved"):
            await e.attach_vm("vm-2", "fcbr0", 0)
        with pytest.raises(E.Internal, match="not saved"):
            await e.create_network("", "fcbr1", 7)
    asyncio.run(go())
    assert entries == []


def test_reconcile_reports_its_repairs_and_reaps_as_the_daemons_own(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        tap = await e.create_tap("vm-1", "eth0")
        kernel = e.netlink.devices
        # someone moved our TAP off its bridge and set it down; a tagged TAP of no attachment is left over
        kernel[tap] = TapState(tap, kernel[tap].index, "vm-1", "eth0", 999, False, False)
        kernel["vmtap000001"] = TapState("vmtap000001", 77, "vm-gone", "eth0", e.netlink.BRIDGE_INDEX, True, False)
        entries = recorder(e)
        caller.current.set(Caller(":1.5", 0, 1, None, "not-me"))  # a call in flight is not who repaired it
        async with e.gate.exclusive():
            await e.reconcile_exclusive()
        return tap, entries
    tap, entries = asyncio.run(go())
    assert entries == [
        ("drift-repaired", None, {"network": "fcbr0", "vm": "vm-1", "nic": "eth0", "tap": tap,
                                  "repaired": "master,up"}),
        ("tap-deleted", None, {"vm": "vm-gone", "nic": "eth0", "tap": "vmtap000001",
                               "reason": "VM NIC not attached"}),
    ]


def test_vlan_filtering_turned_on_again_is_one_repair_by_the_daemon(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 10)
        entries = recorder(e)
        assert e.bridge_changed("fcbr0", BridgeState("fcbr0", 1, True, False, 1))  # the link event
        await e.restore_vlan_filtering("fcbr0")
        return entries
    assert asyncio.run(go()) == [("drift-repaired", None, {"bridge": "fcbr0", "repaired": "vlan-filtering"})]
