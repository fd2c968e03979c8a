"""The persistent registry: networks and VM attachments.

On disk it is two files in the state directory. `registry.json` is a
readable snapshot (`seq`: the last change it holds); `registry.journal`
continues it, one change a line. A change is applied in memory at once (so
the next caller's checks see it) and becomes durable when its group of lines
is appended and fsync'd; its caller is answered only then. If a write fails,
every change not yet durable is undone in memory, newest first, and each of
their callers gets the error: memory goes back to exactly what is on disk.

The journal is folded into a fresh snapshot in the background once it
outgrows the snapshot, after a second without changes (so the file an admin
opens is current), and at a clean stop. At start: snapshot, then the
journal's lines after its seq; a torn last line was never acknowledged and
is dropped.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass

from . import faultpoint
from .atomicfile import write_atomic
from .errors import Internal, InvalidArgs
from .journal import Journal, JournalError
from .model import Attachment, Network, check_attachment_address, check_registry_document, excerpt, load_json

log = logging.getLogger("fcnetd.registry")
SCHEMA = 2  # 2: registry.json carries `seq` and is continued by registry.journal
FILENAME = "registry.json"
JOURNAL = "registry.journal"
LOCKNAME = "registry.lock"
COMPACT_MIN_BYTES = 1 << 20  # below this a journal is cheaper to keep than to fold
IDLE_FOLD_SECONDS = 1.0  # a quiet journal is folded too, so registry.json is current for human eyes


class RegistryError(Exception):
    """The registry cannot be used; the daemon must not start (or go on) with it."""


class RegistryWriteFailed(Internal):
    """A change could not be saved; it was undone."""


@dataclass(frozen=True)
class Snapshot:
    networks: dict[str, Network]
    attachments: dict[tuple[str, str], Attachment]
    seq: int = 0


# -- the snapshot file -----------------------------------------------------------
def parse(text: str | bytes, where: str) -> Snapshot:
    """A registry.json, checked by the same rules as the API's input."""
    try:
        data = load_json(text, "JSON")
        doc = check_registry_document(data, SCHEMA, extra_keys=("seq",))
        seq = data.get("seq", 0)
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise InvalidArgs("seq", f"{excerpt(seq)} must be a whole number from 0")
    except InvalidArgs as e:
        raise RegistryError(f"{where}: {e}; fix or move it aside") from None
    state = State()
    try:
        for i, raw in enumerate(doc.networks):
            net = Network.from_dict(raw, f"networks[{i}]")
            if (why := state.conflict(net)) is not None:
                raise RegistryError(f"{where}: {why}; fix or move it aside")
            state.add_network(net)
        for i, raw in enumerate(doc.attachments):
            att = Attachment.from_dict(raw, f"attachments[{i}]")
            if (why := state.attachment_conflict(att, f"attachments[{i}]")) is not None:
                raise RegistryError(f"{where}: {why}; fix or move it aside")
            state.add_attachment(att)
    except InvalidArgs as e:
        raise RegistryError(f"{where}: invalid record: {e}; fix or move it aside") from None
    return Snapshot(state.networks, state.attachments, seq)


def serialize(snap: Snapshot) -> bytes:
    # One record a line: compact enough to write fast, still diffable by hand.
    nets = ",\n".join("  " + json.dumps(n.to_dict(), separators=(",", ":")) for n in snap.networks.values())
    atts = ",\n".join("  " + json.dumps(a.to_dict(), separators=(",", ":")) for a in snap.attachments.values())
    return (f'{{"schema": {SCHEMA}, "seq": {snap.seq},\n "networks": [\n{nets}\n ],\n'
            f' "attachments": [\n{atts}\n ]}}\n').encode()


# -- the in-memory state and its indexes ---------------------------------------------
class State:
    """Networks and attachments with the indexes every lookup uses."""

    def __init__(self):
        self.networks: dict[str, Network] = {}
        self.by_name: dict[str, Network] = {}
        self.by_key: dict[tuple[str, str, int], Network] = {}
        self.attachments: dict[tuple[str, str], Attachment] = {}
        self.by_network: dict[str, dict[tuple[str, str], Attachment]] = {}
        self.bridge_load: dict[str, int] = {}  # bridge -> attachments on its networks
        # The networks' subnets as sorted, disjoint [first, last] address
        # ranges (CIDR blocks overlap only by nesting), for an overlap
        # check in O(log n) when thousands of networks load.
        self._subnet_firsts: list[int] = []
        self._subnet_lasts: list[int] = []
        self._subnet_names: list[str] = []

    def conflict(self, net: Network) -> str | None:
        if net.id in self.networks:
            return f"network id {net.id} appears twice"
        if net.name in self.by_name:
            return f"network name {net.name!r} appears twice"
        if (net.host, net.bridge, net.vlan) in self.by_key:
            return f"networks {self.by_key[(net.host, net.bridge, net.vlan)].name} and {net.name} share host, bridge and VLAN"
        if net.subnet and (other := self._overlapping(net)) is not None:
            return f"the subnets of networks {other} and {net.name} ({net.subnet}) overlap"
        return None

    def _overlapping(self, net: Network) -> str | None:
        first, last = int(net.network.network_address), int(net.network.broadcast_address)
        i = bisect.bisect_right(self._subnet_firsts, first)
        if i and self._subnet_lasts[i - 1] >= first:
            return self._subnet_names[i - 1]
        if i < len(self._subnet_firsts) and self._subnet_firsts[i] <= last:
            return self._subnet_names[i]
        return None

    def attachment_conflict(self, att: Attachment, where: str = "attachment") -> str | None:
        if att.network_id not in self.networks:
            return f"attachment {att.vm_id}/{att.nic} names unknown network {att.network_id}"
        if att.key in self.attachments:
            return f"attachment {att.vm_id}/{att.nic} appears twice"
        try:
            check_attachment_address(att, self.networks[att.network_id],
                                     self.by_network.get(att.network_id, {}).values(), where)
        except InvalidArgs as e:
            return str(e)
        return None

    def add_network(self, net: Network) -> None:
        self.networks[net.id] = net
        self.by_name[net.name] = net
        self.by_key[(net.host, net.bridge, net.vlan)] = net
        self.by_network.setdefault(net.id, {})
        if net.subnet:
            first = int(net.network.network_address)
            i = bisect.bisect_left(self._subnet_firsts, first)
            self._subnet_firsts.insert(i, first)
            self._subnet_lasts.insert(i, int(net.network.broadcast_address))
            self._subnet_names.insert(i, net.name)

    def remove_network(self, net: Network) -> None:
        del self.networks[net.id]
        del self.by_name[net.name]
        del self.by_key[(net.host, net.bridge, net.vlan)]
        self.by_network.pop(net.id, None)
        if net.subnet:
            first = int(net.network.network_address)
            i = bisect.bisect_left(self._subnet_firsts, first)
            while i < len(self._subnet_firsts) and self._subnet_firsts[i] == first:
                if self._subnet_names[i] == net.name:
                    del self._subnet_firsts[i], self._subnet_lasts[i], self._subnet_names[i]
                    break
                i += 1

    def add_attachment(self, att: Attachment) -> None:
        self.attachments[att.key] = att
        self.by_network.setdefault(att.network_id, {})[att.key] = att
        bridge = self.networks[att.network_id].bridge
        self.bridge_load[bridge] = self.bridge_load.get(bridge, 0) + 1

    def remove_attachment(self, att: Attachment) -> None:
        del self.attachments[att.key]
        self.by_network.get(att.network_id, {}).pop(att.key, None)
        bridge = self.networks[att.network_id].bridge
        self.bridge_load[bridge] = self.bridge_load.get(bridge, 0) - 1

    def move_attachment(self, move: "Move") -> None:
        self.remove_attachment(move.old)
        self.add_attachment(move.new)

    # A change and its inverse, by name: how the journal and undo apply them.
    def apply(self, op: str, record) -> None:
        getattr(self, op)(record)

    def undo(self, op: str, record) -> None:
        if op == "move_attachment":
            self.move_attachment(record.inverse())
        else:
            self.apply(INVERSE[op], record)


INVERSE = {"add_network": "remove_network", "remove_network": "add_network",
           "add_attachment": "remove_attachment", "remove_attachment": "add_attachment"}


@dataclass(frozen=True)
class Move:
    """A VM NIC's attachment replaced by one to another network, as one
    change (one journal line): a crash never leaves it on neither or both."""
    old: Attachment
    new: Attachment

    def inverse(self) -> "Move":
        return Move(self.new, self.old)


class Change:
    """One change to the registry; also the caller's ticket for commit()."""

    __slots__ = ("seq", "op", "record", "durable", "error")

    def __init__(self, seq: int, op: str, record):
        self.seq, self.op, self.record = seq, op, record
        self.durable = False
        self.error: Exception | None = None

    def line(self) -> bytes:
        rec = self.record
        body = {"add_network": lambda: {"network": rec.to_dict()},
                "remove_network": lambda: {"id": rec.id},
                "add_attachment": lambda: {"attachment": rec.to_dict()},
                "remove_attachment": lambda: {"vm_id": rec.vm_id, "nic": rec.nic},
                "move_attachment": lambda: {"attachment": rec.new.to_dict()}}[self.op]()
        return (json.dumps({"seq": self.seq, "op": self.op, **body}, separators=(",", ":")) + "\n").encode()


def replay(state: State, record: dict) -> str | None:
    """Applies one journal record; returns why it was skipped, if it was. A
    record that does not fit can only follow a hand edit of the snapshot."""
    op = record.get("op")
    try:
        if op == "add_network":
            target = Network.from_dict(record.get("network"), "network")
            why = state.conflict(target)
        elif op == "remove_network":
            target = state.networks.get(record.get("id"))
            why = (f"network {record.get('id')} is not there" if target is None else
                   f"network {target.name} still has attachments" if state.by_network.get(target.id) else None)
        elif op == "add_attachment":
            target = Attachment.from_dict(record.get("attachment"), "attachment")
            why = state.attachment_conflict(target)
        elif op == "remove_attachment":
            target = state.attachments.get((record.get("vm_id"), record.get("nic")))
            why = f"attachment {record.get('vm_id')}/{record.get('nic')} is not there" if target is None else None
        elif op == "move_attachment":
            new = Attachment.from_dict(record.get("attachment"), "attachment")
            old = state.attachments.get(new.key)
            if old is None:
                return f"attachment {new.vm_id}/{new.nic} is not there to move"
            state.remove_attachment(old)  # the new one is checked as if the old were gone, as it was
            why = state.attachment_conflict(new)
            state.add_attachment(old)
            target = Move(old, new)
        else:
            return f"unknown op {str(op)[:40]!r}"
    except (InvalidArgs, ValueError, TypeError) as e:
        return f"invalid record: {e}"
    if why is None:
        state.apply(op, target)
    return why


def replay_after(state: State, records: list[dict], seq: int) -> list[str]:
    """Applies the journal records after `seq` (the snapshot's); returns
    the ones skipped, each with the reason."""
    return [f"journal seq {r['seq']} ({r.get('op')}): {why}" for r in records
            if r["seq"] > seq and (why := replay(state, r)) is not None]


def read_registry(state_dir: str) -> tuple[Snapshot, list[str]]:
    """The registry as the files hold it (snapshot, then the journal), with
    the journal records that did not fit; reads only, so it is safe beside
    a running daemon."""
    snap, skipped, _, _ = _read_files(state_dir)
    return snap, skipped


def _read_files(state_dir: str) -> tuple[Snapshot, list[str], int, bool]:
    """read_registry(), plus the journal's good size and whether its last
    line was torn."""
    path = os.path.join(state_dir, FILENAME)
    try:
        with open(path, "rb") as f:
            snap = parse(f.read(), path)
    except FileNotFoundError:
        snap = Snapshot({}, {})
    try:
        records, good, torn = Journal.read(os.path.join(state_dir, JOURNAL))
    except JournalError as e:
        raise RegistryError(str(e)) from None
    state = State()
    for net in sorted(snap.networks.values(), key=lambda n: n.created):
        state.add_network(net)
    for att in snap.attachments.values():
        state.add_attachment(att)
    skipped = replay_after(state, records, snap.seq)
    seq = max([snap.seq] + [r["seq"] for r in records])
    return Snapshot(state.networks, state.attachments, seq), skipped, good, torn


class Lock:
    """An exclusive lock on the state directory: one daemon per registry."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, LOCKNAME)
        self.fd = -1

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RegistryError(
                    f"another fcnetd (pid {holder}) holds {self.path}; only one daemon may own a registry") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Registry(State):
    """The state plus its persistence: group commit with batch abort, the
    journal, and compaction. State's add_/remove_ methods change memory
    only (loading, tests); change() is how the engine changes the registry."""

    def __init__(self, state_dir: str, observer=None):
        super().__init__()
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILENAME)
        self.journal = Journal(os.path.join(state_dir, JOURNAL))
        # Bumped by every change of content (undo and loads included), so
        # caches can tell they are stale.
        self.version = 0
        self.seq = 0       # the last change made
        self.durable = 0   # the last change on disk
        self._pending: list[Change] = []
        self.write_lock = asyncio.Lock()     # one journal append at a time
        self.snapshot_lock = asyncio.Lock()  # one registry.json writer at a time (us or compaction)
        self.last_write: os.stat_result | None = None
        self._snapshot_bytes = 0
        self._compacting: asyncio.Task | None = None
        self._idle_fold: asyncio.TimerHandle | None = None
        # observer(seconds, ok) is told of every journal write, for metrics.
        self.observer = observer or (lambda seconds, ok: None)

    # -- loading -------------------------------------------------------
    def load(self) -> list[str]:
        """Reads the snapshot and replays the journal; returns the journal
        records it had to skip (each with the reason), for the log."""
        self._remove_stale_temp_files()
        snap, skipped, good, torn = _read_files(self.state_dir)
        if torn:
            log.warning("%s ended in a torn line (a write cut short, never acknowledged); dropped it",
                        self.journal.path)
            os.truncate(self.journal.path, good)
        self.replace(snap)
        self.seq = self.durable = snap.seq
        try:
            self._snapshot_bytes = os.path.getsize(self.path)
        except FileNotFoundError:
            pass
        self.journal.open()
        return skipped

    def _remove_stale_temp_files(self) -> None:
        """A daemon killed mid-write leaves its temp file; the lock we hold
        proves no writer is alive, and the real file was never touched."""
        for name in os.listdir(self.state_dir):
            if name.startswith((FILENAME + ".tmp.", JOURNAL + ".tmp.")):
                os.unlink(os.path.join(self.state_dir, name))

    def replace(self, snap: Snapshot) -> None:
        State.__init__(self)
        self.version += 1
        for net in sorted(snap.networks.values(), key=lambda n: n.created):
            self.add_network(net)
        for att in snap.attachments.values():
            self.add_attachment(att)

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.networks), dict(self.attachments), self.seq)

    # -- changes (memory now, disk at commit) --------------------------
    def change(self, op: str, record) -> Change:
        self.apply(op, record)
        self.seq += 1
        self.version += 1
        change = Change(self.seq, op, record)
        self._pending.append(change)
        return change

    def _abort(self, error: Exception) -> None:
        """Undoes every change not on disk, newest first, and fails each."""
        for change in reversed(self._pending):
            self.undo(change.op, change.record)
            change.error = error
        self._pending.clear()
        self.version += 1

    async def commit(self, change: Change | None = None) -> None:
        """Returns once `change` (default: every change made so far) is on
        disk; raises RegistryWriteFailed if it was undone instead.

        Changes made while a write is in flight share the next write, so a
        burst of N changes costs about two appends and fsyncs."""
        if change is None:
            if not self._pending:
                return
            change = self._pending[-1]
        while not change.durable:
            if change.error is not None:
                raise change.error
            async with self.write_lock:
                if change.durable or change.error is not None:
                    continue
                await self._write_pending()
        self._maybe_compact()

    async def _write_pending(self) -> None:
        batch = list(self._pending)
        payload = b"".join(c.line() for c in batch)
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self.journal.append, payload)
        except OSError as e:
            self.observer(time.perf_counter() - started, False)
            error = RegistryWriteFailed(
                f"the change was not saved: cannot write {self.journal.path}: {e.strerror}; nothing was changed")
            log.error("registry write failed (%s): undid %d change(s) not on disk", e.strerror, len(self._pending))
            self._abort(error)
            return
        self.observer(time.perf_counter() - started, True)
        for c in batch:
            c.durable = True
        del self._pending[:len(batch)]
        self.durable = batch[-1].seq

    # -- snapshots -------------------------------------------------------
    def _durable_snapshot(self) -> Snapshot:
        """What is on disk: memory less the changes still pending."""
        state = State()
        state.networks, state.attachments = dict(self.networks), dict(self.attachments)
        state.by_name, state.by_key = dict(self.by_name), dict(self.by_key)
        state.by_network = {}  # not read by what follows: left empty, not copied
        for change in reversed(self._pending):
            state.undo(change.op, change.record)
        return Snapshot(state.networks, state.attachments, self.durable)

    def _write_snapshot(self, snap: Snapshot) -> None:
        payload = serialize(snap)
        self.last_write = write_atomic(self.path, payload)
        self._snapshot_bytes = len(payload)

    def save_now(self) -> None:
        """Folds the journal into a new snapshot, synchronously: for start-up,
        a clean stop and recovery paths, where no write is in flight."""
        self._write_snapshot(self._durable_snapshot())
        faultpoint.reached("compact.after-snapshot")
        self.journal.drop_before(self.journal.size)

    def _maybe_compact(self) -> None:
        if self.journal.size > max(COMPACT_MIN_BYTES, self._snapshot_bytes):
            self._start_compaction()
        if self._idle_fold is not None:
            self._idle_fold.cancel()
        self._idle_fold = asyncio.get_running_loop().call_later(IDLE_FOLD_SECONDS, self._fold_when_idle)

    def _fold_when_idle(self) -> None:
        self._idle_fold = None
        if self.journal.size:
            self._start_compaction()

    def _start_compaction(self) -> None:
        if self._compacting is None:
            self._compacting = asyncio.get_running_loop().create_task(self._compact())
            self._compacting.add_done_callback(self._compacted)

    def _compacted(self, task: asyncio.Task) -> None:
        self._compacting = None
        if not task.cancelled() and task.exception() is not None:
            log.error("compacting the registry journal failed; will try again: %s", task.exception())

    async def _compact(self) -> None:
        async with self.snapshot_lock:
            async with self.write_lock:
                snap = self._durable_snapshot()
                offset = self.journal.size
            # Appends go on meanwhile; they land after `offset`.
            await asyncio.to_thread(self._write_snapshot, snap)
            faultpoint.reached("compact.after-snapshot")
            async with self.write_lock:
                await asyncio.to_thread(self.journal.drop_before, offset)

    def take_edit(self, snap: Snapshot) -> list[str]:
        """A hand edit of registry.json, taken with no change pending: the
        edit, then the journal's lines after the seq the edit was made from;
        the result is written back at once as the new snapshot."""
        assert not self._pending, "a hand edit is taken only with no change in flight"
        records, _, _ = Journal.read(self.journal.path)
        self.replace(snap)
        skipped = replay_after(self, records, snap.seq)
        self.version += 1
        self.seq = self.durable = max(self.durable, snap.seq)
        self.save_now()
        return skipped

    def close(self) -> None:
        if self._idle_fold is not None:
            self._idle_fold.cancel()
        self.journal.close()

    def is_own_file(self) -> bool:
        """True if the file on disk is the one this daemon last wrote."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        last = self.last_write
        return last is not None and (st.st_ino, st.st_size, st.st_mtime_ns) == (
            last.st_ino, last.st_size, last.st_mtime_ns)
