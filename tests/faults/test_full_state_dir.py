"""A full state directory during bursts (issue 9, fault tier): the daemon's
state dir is a small tmpfs, filled until registry writes fail.

Every call answers either success or a clear error saying the state could
not be written; what was answered done is in memory and on disk, what
failed is in neither (compared across a kill -9 and restart); the daemon
logs the failed write; and once space returns, calls succeed again."""

import os
import re

import pytest

from tests.system.harness import Daemon, run

from .driver import START_TIMEOUT, Callers, config_text
from .model import ERR, Op

BRIDGES = [f"fcbr{i}" for i in range(64)]  # enough for every network the bursts make
TMPFS_SIZE = "256k"
LEAVE_FREE = 12 * 1024  # what the filler leaves: a few pages, so the registry soon outgrows it
MAX_BURSTS = 30
BURSTS_AFTER_FIRST_FAILURE = 12
WRITE_WORDS = re.compile(r"writ|sav|stor|persist|record", re.I)
SPACE_WORDS = re.compile(r"no space|space left|\bfull\b|ENOSPC", re.I)


@pytest.fixture
def small_state_dir(tmp_path):
    path = tmp_path / "state"  # the daemon's log goes beside it, not into it
    path.mkdir()
    run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "fcnetd-faults", str(path)])
    yield str(path)
    run(["umount", str(path)])


def fill(directory: str, leave: int) -> str:
    st = os.statvfs(directory)
    size = st.f_bavail * st.f_frsize - leave
    path = os.path.join(directory, "filler")
    with open(path, "wb") as f:
        f.write(b"\0" * max(size, 0))
    return path


class Ledger:
    """What the daemon answered: attachments and networks it said are done,
    and those it said failed."""

    def __init__(self):
        self.attached: dict[str, str] = {}  # vm -> bridge
        self.created: dict[str, str] = {}   # network name -> bridge
        self.failed_vms: set[str] = set()  # answered failed, or detached
        self.failed_nets: set[str] = set()
        self.errors: list[tuple[Op, str, str]] = []

    def burst(self, callers: Callers, round_: int) -> int:
        """All at once over the connections: in even rounds 25 AttachVm (15
        of them on three bridges without a network) and one CreateNetwork,
        in odd rounds DetachVm of 10 attached VMs; returns how many failed.
        Near the limit a failed grouped write is retried smaller and smaller
        (each failed caller's change undone) until one fits, and the
        detaching rounds make room again, so writes keep failing and
        succeeding in turn."""
        if round_ % 2:
            ops = [Op("DetachVm", (vm, "eth0"), i) for i, vm in enumerate(sorted(self.attached)[:10])]
            return self._record(ops, callers.burst(ops))
        listed = {n["Bridge"] for n in callers.ask("ListNetworks", "a{sv}", {})[0]}
        fresh = [b for b in BRIDGES if b not in listed]
        used = sorted(set(self.attached.values())) or ["fcbr0"]
        targets = [used[i % len(used)] for i in range(10)]
        for n, b in enumerate(fresh[:3]):
            for k in range(5):  # the first early, the next ones while its network is being written
                targets.insert(n + k * 4, b)
        ops = [Op("AttachVm", (f"vm-{round_}-{i}", "eth0", b, 0), i) for i, b in enumerate(targets)]
        if len(fresh) > 3:
            ops.insert(len(ops) // 2, Op("CreateNetwork", (f"net-{round_}", fresh[3], 0), round_))
        return self._record(ops, callers.burst(ops))

    def _record(self, ops: list[Op], outcomes: list) -> int:
        failures = 0
        for op, out in zip(ops, outcomes):
            if not out.ok:
                failures += 1
                self.errors.append((op, out.error, out.text))
            if op.method == "AttachVm":
                if out.ok:
                    self.attached[op.args[0]] = op.args[2]
                else:
                    self.failed_vms.add(op.args[0])
            elif op.method == "DetachVm":
                if out.ok:
                    del self.attached[op.args[0]]
                    self.failed_vms.add(op.args[0])  # gone: must not come back
            elif out.ok:
                self.created[op.args[0]] = op.args[1]
            else:
                self.failed_nets.add(op.args[0])
        return failures

    def check_errors(self) -> None:
        """Each failure is a clear fcnetd error saying the state could not be written."""
        for op, name, text in self.errors:
            where = f"{op} answered {name}: {text[:300]!r}"
            assert name.startswith(ERR), f"not an fcnetd error: {where}"
            assert WRITE_WORDS.search(text) and SPACE_WORDS.search(text), \
                f"the message does not say the state could not be written for lack of space: {where}"
            assert "Traceback" not in text and len(text) < 500, f"not a clear message: {where}"

    def check(self, view: dict) -> None:
        """The daemon holds what it answered done and nothing it said failed."""
        vms = {vm: name for name, entries in view["vms"].items() for (vm, _, _, _) in entries}
        bridge_of = {name: entry[0] for name, entry in view["listed"].items()}
        got = {vm: bridge_of[name] for vm, name in vms.items()}
        assert got == self.attached, (
            f"attachments answered done but missing: {sorted(set(self.attached) - set(got))}; "
            f"present though answered failed: {sorted(set(got) & self.failed_vms)}; "
            f"on another bridge: {sorted(v for v in got if v in self.attached and got[v] != self.attached[v])}")
        for name, bridge in self.created.items():
            assert bridge_of.get(name) == bridge, f"network {name} answered done is missing: {view['listed']}"
        assert not self.failed_nets & set(bridge_of), \
            f"networks answered failed are present: {sorted(self.failed_nets & set(bridge_of))}"
        # A network auto-created for attachments that all failed may stay (its
        # own write succeeded) but only as an empty automatic network.
        for name, (bridge, _, origin, count, _, _) in view["listed"].items():
            if name not in self.created and bridge not in self.attached.values():
                assert origin == "auto" and count == 0, f"unexplained network {name}: {view['listed'][name]}"


def test_full_state_dir_clear_errors_memory_equals_disk_and_recovery(ns, bus, tmp_path, small_state_dir):
    config = tmp_path / "fcnetd.toml"
    config.write_text(config_text(set(BRIDGES)))
    # the bridges present and up already (as after earlier networks), so
    # creating a network awaits no netlink and others attach to it at once
    batch = tmp_path / "bridges.ip"
    batch.write_text("".join(f"link add {b} type bridge\nlink set {b} up\n" for b in BRIDGES))
    ns.ip("-batch", str(batch))
    daemon = Daemon(ns, bus, small_state_dir, str(config)).start(timeout=START_TIMEOUT)
    callers = Callers(bus.address, 3)
    try:
        filler = fill(small_state_dir, LEAVE_FREE)
        ledger = Ledger()
        failed_bursts = 0
        for round_ in range(MAX_BURSTS):
            if ledger.burst(callers, round_):
                failed_bursts += 1
                if failed_bursts > BURSTS_AFTER_FIRST_FAILURE:
                    break
        assert ledger.errors, f"no write failed in {MAX_BURSTS} bursts: the state dir never filled up"
        ledger.check_errors()

        in_memory = callers.daemon_view()
        ledger.check(in_memory)

        # memory equals disk: a daemon killed now and started on the same
        # (still full) state dir shows the same
        log_while_full = daemon.output()
        daemon.kill9()
        daemon = Daemon(ns, bus, small_state_dir, str(config)).start(timeout=START_TIMEOUT)
        from_disk = callers.daemon_view()
        assert from_disk == in_memory, f"after kill -9 and restart:\n disk   {from_disk}\n memory {in_memory}"

        # space returns: calls succeed again, and are kept
        os.unlink(filler)
        ledger.errors.clear()
        assert ledger.burst(callers, MAX_BURSTS) == 0, \
            f"calls still fail after space returned: {ledger.errors[:3]}"
        ledger.check(callers.daemon_view())
        assert daemon.stop() == 0
        daemon = Daemon(ns, bus, small_state_dir, str(config)).start(timeout=START_TIMEOUT)
        ledger.check(callers.daemon_view())

        assert [line for line in log_while_full.splitlines() if SPACE_WORDS.search(line) and WRITE_WORDS.search(line)], \
            "the daemon did not log the failed registry write:\n" + log_while_full[-3000:]
    finally:
        callers.close()
        daemon.stop()
