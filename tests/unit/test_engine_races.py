"""Races between the engine's entry points (issue 9, items 1, 2 and 15).

Each test stops one operation where the real kernel call would wait (the
yielding fake's gates), runs another operation in that window, lets the
first one go on, and then checks what a VM manager would see: the TAP names
it is given and the devices in the kernel. No timing: the order of events
is fixed by the gates."""

import asyncio
import gc
import threading
import tracemalloc
from collections import deque

from fcnetd import errors as E
from fcnetd.config import parse
from fcnetd.engine import Engine
from fcnetd.registry import Registry

from .fakenetlink import YieldingNetlink, run_until_blocked

VM = ("vm-1", "eth0")


def make(tmp_path) -> Engine:
    cfg = parse({"daemon": {"host": "node1"}, "bridges": {"fcbr0": {"create": True}}})
    return Engine(cfg, Registry(str(tmp_path)), YieldingNetlink())


def test_tap_created_while_reconcile_dumps_is_not_forgotten(tmp_path):
    """Item 1a: reconcile replaced the engine's TAP table with its dump, so a
    TAP made during the dump was forgotten and the retried VM start made a
    second TAP for the same NIC."""
    e = make(tmp_path)
    kernel = e.netlink

    async def go():
        await e.attach_vm(*VM[:1], "fcbr0", 0)
        dump = kernel.hold("taps")
        reconcile = asyncio.ensure_future(e.reconcile())
        await dump.reached()
        create = asyncio.ensure_future(e.create_tap(*VM))
        await run_until_blocked(create)
        dump.open()
        await reconcile
        first = await create
        return first, await e.create_tap(*VM)  # the VM start, retried
    first, again = asyncio.run(go())
    assert again == first, f"a retried CreateTap answered {again}, not {first}: reconcile forgot {first}"
    assert kernel.taps_for(*VM) == [first]


def test_tap_deleted_while_reconcile_dumps_stays_deleted(tmp_path):
    """Item 1b: the dump still listed a TAP deleted meanwhile, reconcile put
    it back in memory, and CreateTap then answered the name of a device that
    no longer existed."""
    e = make(tmp_path)
    kernel = e.netlink

    async def go():
        await e.attach_vm(*VM[:1], "fcbr0", 0)
        old = await e.create_tap(*VM)
        dump = kernel.hold("taps")
        reconcile = asyncio.ensure_future(e.reconcile())
        await dump.reached()
        delete = asyncio.ensure_future(e.delete_tap(*VM))
        await run_until_blocked(delete)
        dump.open()
        await asyncio.gather(reconcile, delete)
        remembered = e.taps.get(VM)
        return old, remembered, await e.create_tap(*VM)
    old, remembered, new = asyncio.run(go())
    assert remembered is None, f"the engine still lists {remembered.name}, deleted during the dump"
    assert old not in kernel.devices
    assert new in kernel.devices, f"CreateTap answered {new}, which is not in the kernel"
    assert kernel.taps_for(*VM) == [new]


def test_reconciles_requested_while_one_runs_are_coalesced(tmp_path):
    """Item 1c: every SIGHUP, config write and ENOBUFS ran a reconcile of
    its own. Two requested while one is dumping need one more run, not two;
    and not zero, since the running dump may predate what they were asked
    for."""
    e = make(tmp_path)
    kernel = e.netlink

    async def go():
        dump = kernel.hold("taps")
        first = asyncio.ensure_future(e.reconcile())
        await dump.reached()
        more = [asyncio.ensure_future(e.reconcile()) for _ in range(2)]
        for task in more:
            await run_until_blocked(task)
        dump.open()
        await asyncio.gather(first, *more)
    asyncio.run(go())
    assert kernel.calls["taps"] == 2, f"the kernel was dumped {kernel.calls['taps']} times for 3 reconciles"


def detach_left_no_tap(e: Engine, kernel: YieldingNetlink, detached) -> None:
    """Item 2's rule: either DetachVm failed (with a clear error), or the
    attachment is gone and so is every TAP of that VM NIC."""
    if isinstance(detached, BaseException):
        assert isinstance(detached, E.FcnetError), f"DetachVm failed unexpectedly: {detached!r}"
        return
    assert VM not in e.registry.attachments
    assert kernel.taps_for(*VM) == [], f"DetachVm answered success and left {kernel.taps_for(*VM)}"


async def interleave(kernel: YieldingNetlink, held: str, first, second) -> list:
    """Runs first() until it reaches the fake kernel's `held` operation,
    then second() until it can go no further, then lets both finish: their
    outcomes (a result or the exception), in that order."""
    gate = kernel.hold(held)
    one = asyncio.ensure_future(first())
    await gate.reached()
    two = asyncio.ensure_future(second())
    await run_until_blocked(two)
    gate.open()
    return await asyncio.gather(one, two, return_exceptions=True)


def test_detach_while_create_tap_is_in_the_kernel(tmp_path):
    """Item 2, DetachVm arriving while CreateTap's device is being set up."""
    e = make(tmp_path)
    kernel = e.netlink

    async def go():
        await e.attach_vm(*VM[:1], "fcbr0", 0)
        return await interleave(kernel, "create_tap", lambda: e.create_tap(*VM), lambda: e.detach_vm(*VM))
    _, detached = asyncio.run(go())
    detach_left_no_tap(e, kernel, detached)


def test_create_tap_while_detach_deletes_the_tap(tmp_path):
    """Item 2, the other order: a VM start retried while the VM is being
    detached. CreateTap waited for DetachVm's TAP delete, then made a new TAP
    for the attachment DetachVm was removing; both answered success."""
    e = make(tmp_path)
    kernel = e.netlink

    async def go():
        await e.attach_vm(*VM[:1], "fcbr0", 0)
        await e.create_tap(*VM)
        return await interleave(kernel, "delete_link", lambda: e.detach_vm(*VM), lambda: e.create_tap(*VM))
    detached, _ = asyncio.run(go())
    detach_left_no_tap(e, kernel, detached)


def held_sizes(engine: Engine) -> dict[str, int]:
    """len() of every container the engine holds, directly or through its
    helper objects (a lock table may live in one), by attribute path. The
    fake kernel is left out: it is the test's, not the engine's."""
    sizes: dict[str, int] = {}

    def walk(obj, prefix: str, depth: int) -> None:
        for name, value in vars(obj).items():
            if value is engine.netlink:
                continue
            if isinstance(value, (dict, set, frozenset, list, tuple, deque)):
                sizes[prefix + name] = len(value)
            elif depth and hasattr(value, "__dict__") and not callable(value):
                walk(value, f"{prefix}{name}.", depth - 1)
    walk(engine, "", 2)
    return sizes


def test_delete_tap_of_unknown_vm_nics_keeps_nothing(tmp_path):
    """Item 15: every DeleteTap left a lock behind for its key, so DeleteTap
    on VMs fcnetd never knew grew the daemon without bound."""
    e = make(tmp_path)

    async def go():
        await e.delete_tap("vm-warm-up", "eth0")
        before = held_sizes(e)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(10_000):
                await e.delete_tap(f"vm-{i}", "eth0")
            gc.collect()
            kept = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        return before, held_sizes(e), kept
    before, after, kept = asyncio.run(go())
    grown = {path: (before.get(path, 0), n) for path, n in after.items() if n > before.get(path, 0)}
    assert not grown, f"grew with 10,000 unknown VM NICs (attribute: (before, after)): {grown}"
    assert kept < 256 * 1024, f"{kept:,} bytes still held after 10,000 DeleteTap of unknown VM NICs"


def test_a_resync_after_lost_link_events_lets_vm_starts_run_and_forgets_nothing(tmp_path):
    """Lost link events are answered by a resync that shares the gate: a VM
    start runs while its dump is in flight (a full reconcile held every call
    back, 2.5x slower 1,000-VM stops), a TAP made meanwhile is kept, and a
    TAP someone else deleted is forgotten."""
    e = make(tmp_path)
    kernel = e.netlink

    async def go():
        for vm in ("vm-1", "vm-2", "vm-3"):
            await e.attach_vm(vm, "fcbr0", 0)
        gone = await e.create_tap("vm-2", "eth0")
        kernel.devices.pop(gone)  # deleted behind fcnetd's back, its event lost
        dump = kernel.hold("taps")
        resync = asyncio.ensure_future(e.resync())
        await dump.reached()
        made = await asyncio.wait_for(e.create_tap("vm-1", "eth0"), 5)  # not held back
        dump.open()
        await resync
        return made
    made = asyncio.run(go())
    assert e.taps[("vm-1", "eth0")].name == made
    assert ("vm-2", "eth0") not in e.taps and e.stats.reconcile["drift"] == 1


def test_delete_network_counts_an_attachment_being_written_once(tmp_path):
    """An AttachVm waiting for its journal write is in the registry's count
    already; counted again as in flight, a DeleteNetwork meanwhile said
    "2 attached VMs" of a network no serial order gave more than one (the
    stateful test's serial-order check found it)."""
    e = make(tmp_path)
    written = threading.Event()

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        append = e.registry.journal.append

        def held_append(payload):
            written.wait(30)
            append(payload)
        e.registry.journal.append = held_append
        attach = asyncio.ensure_future(e.attach_vm("vm-2", "fcbr0", 0))
        await run_until_blocked(attach)
        assert ("vm-2", "eth0") in e.registry.attachments, "the attachment is not awaiting its write"
        try:
            await e.delete_network("fcbr0")
        except E.NetworkInUse as refused:
            return str(refused)
        finally:
            written.set()
            await attach
    assert asyncio.run(go()) == "Network has 2 attached VMs. Remove VMs first."
