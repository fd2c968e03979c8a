"""The persistent registry: networks and VM attachments, one JSON file.

Only fcnetd writes it. Writes are atomic (temp file, fsync, rename, fsync of
the directory) and grouped: concurrent mutations share one write, and every
caller's reply waits until its change is on disk.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass

from .errors import FcnetError, InvalidArgs
from .model import Attachment, Network

SCHEMA = 1
FILENAME = "registry.json"
LOCKNAME = "registry.lock"


class RegistryError(Exception):
    """The registry cannot be used; the daemon must not start (or go on) with it."""


@dataclass(frozen=True)
class Snapshot:
    networks: dict[str, Network]
    attachments: dict[tuple[str, str], Attachment]


def parse(text: str, where: str) -> Snapshot:
    try:
        data = json.loads(text)
    except ValueError as e:
        raise RegistryError(f"{where} is not valid JSON ({e}); fix or move it aside") from None
    if not isinstance(data, dict) or not isinstance(data.get("schema"), int):
        raise RegistryError(f"{where} has no schema version; fix or move it aside")
    if data["schema"] > SCHEMA:
        raise RegistryError(
            f"{where} has schema {data['schema']}, newer than this fcnetd understands ({SCHEMA}); "
            "run a newer fcnetd")
    networks: dict[str, Network] = {}
    attachments: dict[tuple[str, str], Attachment] = {}
    try:
        for raw in data.get("networks", []):
            net = Network.from_dict(raw)
            if net.id in networks:
                raise RegistryError(f"{where}: network id {net.id} appears twice")
            networks[net.id] = net
        for raw in data.get("attachments", []):
            att = Attachment.from_dict(raw)
            if att.network_id not in networks:
                raise RegistryError(f"{where}: attachment {att.vm_id}/{att.nic} names unknown network {att.network_id}")
            if att.key in attachments:
                raise RegistryError(f"{where}: attachment {att.vm_id}/{att.nic} appears twice")
            attachments[att.key] = att
    except (InvalidArgs, ValueError, TypeError, AttributeError) as e:
        raise RegistryError(f"{where}: invalid record: {e}") from None
    names = [n.name for n in networks.values()]
    if len(set(names)) != len(names):
        raise RegistryError(f"{where}: network names are not unique")
    keys = [(n.host, n.bridge, n.vlan) for n in networks.values()]
    if len(set(keys)) != len(keys):
        raise RegistryError(f"{where}: two networks share host, bridge and VLAN")
    return Snapshot(networks, attachments)


def serialize(snap: Snapshot) -> bytes:
    data = {
        "schema": SCHEMA,
        "networks": [n.to_dict() for n in snap.networks.values()],
        "attachments": [a.to_dict() for a in snap.attachments.values()],
    }
    # One record a line: compact enough to write fast, still diffable by hand.
    lines = ['{"schema": %d,' % SCHEMA, ' "networks": [']
    lines.append(",\n".join("  " + json.dumps(n, separators=(",", ":")) for n in data["networks"]))
    lines.append(' ],\n "attachments": [')
    lines.append(",\n".join("  " + json.dumps(a, separators=(",", ":")) for a in data["attachments"]))
    lines.append(" ]}\n")
    return "\n".join(lines).encode()


def write_atomic(path: str, payload: bytes, mode: int = 0o600) -> os.stat_result:
    directory = os.path.dirname(path) or "."
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return st


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


class Registry:
    """In-memory indexes over the registry plus its persistence."""

    def __init__(self, state_dir: str, observer=None):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, FILENAME)
        self.networks: dict[str, Network] = {}
        self.by_name: dict[str, Network] = {}
        self.by_key: dict[tuple[str, str, int], Network] = {}
        self.attachments: dict[tuple[str, str], Attachment] = {}
        self.by_network: dict[str, dict[tuple[str, str], Attachment]] = {}
        # Bumped by every change of content, loads included: commit() writes
        # when it is ahead of the version on disk, caches compare it.
        self.version = 0
        self._written = 0
        self.write_lock = asyncio.Lock()
        self.last_write: os.stat_result | None = None
        # observer(seconds, ok) is told of every write, for metrics.
        self.observer = observer or (lambda seconds, ok: None)

    # -- loading -------------------------------------------------------
    def load(self) -> None:
        self._remove_stale_temp_files()
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            self.replace(Snapshot({}, {}))
            return
        except UnicodeDecodeError:
            raise RegistryError(f"{self.path} is not UTF-8 text; fix or move it aside") from None
        self.replace(parse(text, self.path))

    def _remove_stale_temp_files(self) -> None:
        """A daemon killed mid-write leaves its temp file; the lock we hold
        proves no writer is alive, and the real file was never touched."""
        prefix = FILENAME + ".tmp."
        for name in os.listdir(self.state_dir):
            if name.startswith(prefix):
                os.unlink(os.path.join(self.state_dir, name))

    def replace(self, snap: Snapshot) -> None:
        self.version += 1
        self.networks = {}
        self.by_name, self.by_key, self.by_network = {}, {}, {}
        self.attachments = {}
        for net in sorted(snap.networks.values(), key=lambda n: n.created):
            self._index_network(net)
        for att in snap.attachments.values():
            self._index_attachment(att)

    def snapshot(self) -> Snapshot:
        return Snapshot(dict(self.networks), dict(self.attachments))

    # -- mutations (memory only; commit() persists) ----------------------
    def _index_network(self, net: Network) -> None:
        self.networks[net.id] = net
        self.by_name[net.name] = net
        self.by_key[(net.host, net.bridge, net.vlan)] = net
        self.by_network.setdefault(net.id, {})

    def _index_attachment(self, att: Attachment) -> None:
        self.attachments[att.key] = att
        self.by_network.setdefault(att.network_id, {})[att.key] = att

    def add_network(self, net: Network) -> None:
        self._index_network(net)
        self.version += 1

    def remove_network(self, net: Network) -> None:
        del self.networks[net.id]
        del self.by_name[net.name]
        del self.by_key[(net.host, net.bridge, net.vlan)]
        self.by_network.pop(net.id, None)
        self.version += 1

    def add_attachment(self, att: Attachment) -> None:
        self._index_attachment(att)
        self.version += 1

    def remove_attachment(self, att: Attachment) -> None:
        del self.attachments[att.key]
        self.by_network.get(att.network_id, {}).pop(att.key, None)
        self.version += 1

    # -- persistence -----------------------------------------------------
    def save_now(self) -> None:
        """Synchronous write, for start-up and recovery paths."""
        self.last_write = write_atomic(self.path, serialize(self.snapshot()))
        self._written = self.version

    async def commit(self) -> None:
        """Returns once every mutation made before the call is on disk.

        Callers that arrive while a write is in flight wait for it and then
        share the next one, so a burst of N mutations costs about two writes.
        """
        wanted = self.version
        async with self.write_lock:
            if self._written >= wanted:
                return
            version = self.version
            snap = self.snapshot()  # frozen records in fresh dicts: safe to encode elsewhere
            started = time.perf_counter()
            try:
                self.last_write = await asyncio.to_thread(lambda: write_atomic(self.path, serialize(snap)))
            except OSError as e:
                self.observer(time.perf_counter() - started, False)
                raise RegistryWriteFailed(f"cannot write {self.path}: {e.strerror}") from e
            self.observer(time.perf_counter() - started, True)
            self._written = version

    def is_own_file(self) -> bool:
        """True if the file on disk is the one this daemon last wrote."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        last = self.last_write
        return last is not None and (st.st_ino, st.st_size, st.st_mtime_ns) == (
            last.st_ino, last.st_size, last.st_mtime_ns)


class RegistryWriteFailed(FcnetError):
    name = "Internal"
