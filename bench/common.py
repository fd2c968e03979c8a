"""Shared by the benchmarks: a sandbox (netns + private bus + real fcnetd),
an async D-Bus client, and the result table."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fcnetd.bus import Message, MessageType, Variant, call, connect  # noqa: E402
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH  # noqa: E402
from fcnetd.testbus import PrivateBus  # noqa: E402
from tests.system.harness import Daemon, Netns  # noqa: E402


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def p50(values):
    return statistics.median(values)


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    target: str
    ok: bool | None

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


class Sandbox:
    """netns + private bus + fcnetd with bridges fcbr0..fcbr9 allowed."""

    def __init__(self, workdir: str, bridges: int = 10, metrics: bool = True):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.ns = Netns()
        self.bus = PrivateBus().start()
        self.config = os.path.join(workdir, "fcnetd.toml")
        with open(self.config, "w") as f:
            f.write('[daemon]\nhost = "bench"\n')
            for i in range(bridges):
                f.write(f"[bridges.fcbr{i}]\ncreate = true\n")
        self.state = os.path.join(workdir, "state")
        extra = ["--metrics", "127.0.0.1:9617"] if metrics else []
        self.daemon = Daemon(self.ns, self.bus, self.state, self.config, extra=extra)

    def start(self) -> "Sandbox":
        self.daemon.start(timeout=600)
        return self

    def restart(self) -> float:
        """SIGTERM, then a new daemon on the same state: seconds from its
        spawn to READY=1, start-up as systemd sees it."""
        if self.daemon.stop() != 0:
            raise RuntimeError(f"fcnetd did not stop cleanly: {self.daemon.output()[-2000:]}")
        t = time.perf_counter()
        self.daemon.start(timeout=600)
        return time.perf_counter() - t

    def rss_kib(self) -> int:
        with open(f"/proc/{self.daemon.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def close(self) -> None:
        self.daemon.stop()
        self.bus.stop()
        self.ns.delete()


class Client:
    def __init__(self, address: str):
        self.address = address
        self.conn = None

    async def open(self):
        self.conn = await connect(self.address)
        return self

    async def m(self, member: str, sig: str = "", *body):
        return await call(self.conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, sig, list(body))

    async def timed(self, member: str, sig: str, *body) -> float:
        t = time.perf_counter()
        await self.m(member, sig, *body)
        return time.perf_counter() - t

    def close(self):
        self.conn.disconnect()


class Pool:
    """Calls spread over several connections, as a VM launcher pool makes
    them: a system bus keeps at most max_replies_per_connection (128 in
    Debian's system.conf) calls of one connection waiting for replies, so
    each connection here has at most PER_CONNECTION outstanding. Same m()
    and timed() as Client."""

    PER_CONNECTION = 100

    def __init__(self, address: str, size: int = 10):
        self.clients = [Client(address) for _ in range(size)]
        self.slots: list[asyncio.Semaphore] = []
        self.turn = itertools.count()

    async def open(self) -> "Pool":
        for c in self.clients:
            await c.open()
        self.slots = [asyncio.Semaphore(self.PER_CONNECTION) for _ in self.clients]
        return self

    async def m(self, member: str, sig: str = "", *body):
        i = next(self.turn) % len(self.clients)
        async with self.slots[i]:
            return await self.clients[i].m(member, sig, *body)

    async def timed(self, member: str, sig: str, *body) -> float:
        t = time.perf_counter()
        await self.m(member, sig, *body)
        return time.perf_counter() - t

    def close(self) -> None:
        for c in self.clients:
            c.close()


class WireClient:
    """A blocking D-Bus client that times a call to its reply's last byte and
    decodes nothing on the way: what the daemon and the bus take, without
    the client library's decoding (measured on its own by Client)."""

    def __init__(self, address: str):
        path = dict(kv.split("=", 1) for kv in address.split(":", 1)[1].split(","))["path"]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            line += self.sock.recv(1)
        if not line.startswith(b"OK"):
            raise RuntimeError(f"bus refused authentication: {line!r}")
        self.sock.sendall(b"BEGIN\r\n")
        self.serial = 0
        self.buf = bytearray()
        self.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello")

    def _message(self) -> bytes:
        while len(self.buf) < 16:
            self.buf += self.sock.recv(1 << 20)
        body_len, fields_len = struct.unpack_from("<I", self.buf, 4)[0], struct.unpack_from("<I", self.buf, 12)[0]
        total = 16 + fields_len + (-fields_len & 7) + body_len
        while len(self.buf) < total:
            self.buf += self.sock.recv(1 << 20)
        msg, self.buf = bytes(self.buf[:total]), self.buf[total:]
        return msg

    def send(self, dest: str, path: str, iface: str, member: str, sig: str = "", body: list | None = None) -> None:
        self.serial += 1
        msg = Message(destination=dest, path=path, interface=iface, member=member, signature=sig,
                      body=body or [], serial=self.serial)
        self.sock.sendall(msg._marshall(False))

    def reply(self) -> bytes:
        """The next raw reply (method return or error); signals are skipped,
        and a Peer.Ping from fcnetd (how it learns a caller reads its big
        replies) is answered, as every D-Bus library answers it."""
        while True:
            reply = self._message()
            if reply[1] in (MessageType.METHOD_RETURN.value, MessageType.ERROR.value):
                return reply
            if reply[1] == MessageType.METHOD_CALL.value:
                ping = decode(reply)
                self.serial += 1
                answer = Message.new_method_return(ping)
                answer.serial = self.serial
                self.sock.sendall(answer._marshall(False))

    def call(self, dest: str, path: str, iface: str, member: str, sig: str = "", body: list | None = None) -> bytes:
        self.send(dest, path, iface, member, sig, body)
        return self.reply()

    def m(self, member: str, sig: str = "", *body) -> bytes:
        return self.call(BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, sig, list(body))

    def timed(self, member: str, sig: str, *body) -> float:
        t = time.perf_counter()
        reply = self.m(member, sig, *body)
        took = time.perf_counter() - t
        if reply[1] != MessageType.METHOD_RETURN.value:
            raise RuntimeError(f"{member} failed: {decode(reply).body}")
        return took

    def close(self) -> None:
        self.sock.close()


def decode(raw: bytes) -> Message:
    from dbus_fast._private.unmarshaller import Unmarshaller  # the reference decoder, outside the timing
    u = Unmarshaller(io.BytesIO(raw))
    u.unmarshall()
    return u.message


async def bounded_gather(coros, limit: int = 256):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c
    return await asyncio.gather(*(one(c) for c in coros))


def run_in_ns(ns: Netns, script: str, *args: str, timeout: float = 1200) -> dict:
    """Runs a bench helper inside the namespace; it prints one JSON object."""
    res = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, script, *args],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))})
    if res.returncode != 0:
        raise RuntimeError(f"{script} failed: {res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bridge_of(vid: int, bridges: int) -> str:
    """The bridge write_registry puts the network of VLAN `vid` on."""
    return f"fcbr{(vid - 1) % bridges}"


def write_registry(state_dir: str, networks: int, attachments: int, bridges: int = 1,
                   host: str = "bench") -> None:
    """A schema-1 registry.json as fcnetd before the journal wrote it
    (written here without fcnetd's code so the bench keeps proving that such
    a file loads): `networks` tagged networks (VLAN 1..n) spread over
    `bridges` bridges fcbr0.., `attachments` VMs over the networks
    round-robin."""
    os.makedirs(state_dir, exist_ok=True)
    ids = [str(uuid.UUID(int=vid)) for vid in range(1, networks + 1)]
    nets = [json.dumps({"id": ids[vid - 1], "name": f"{bridge_of(vid, bridges)}-vlan-{vid}",
                        "bridge": bridge_of(vid, bridges), "vlan": vid,
                        "host": host, "created": f"2026-01-01T00:00:00.{vid:06d}Z", "origin": "manual",
                        "description": ""}, separators=(",", ":")) for vid in range(1, networks + 1)]
    atts = [json.dumps({"vm_id": f"vm-{i}", "nic": "eth0", "network_id": ids[i % networks], "vm_name": f"vm-{i}",
                        "mac": "", "attached": "2026-01-02T00:00:00.000000Z"}, separators=(",", ":"))
            for i in range(attachments)]
    text = ('{"schema": 1,\n "networks": [\n' + ",\n".join("  " + n for n in nets)
            + '\n ],\n "attachments": [\n' + ",\n".join("  " + a for a in atts) + "\n ]}\n")
    with open(os.path.join(state_dir, "registry.json"), "w") as f:
        f.write(text)


def v(sig, value):
    return Variant(sig, value)


def table(figures: list[Figure]) -> str:
    rows = [["figure", "value", "baseline", "ratio", "target", "ok"]]
    for f in figures:
        rows.append([f.name, f"{f.value:.4g} {f.unit}", f"{f.baseline_name} {f.baseline:.4g} {f.unit}",
                     f"{f.ratio:.2f}x", f.target, {True: "yes", False: "NO", None: "-"}[f.ok]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def save(figures: list[Figure], path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump([{**asdict(x), "ratio": x.ratio} for x in figures], f, indent=2)
