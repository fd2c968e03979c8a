"""A VM launcher's calls must not wait behind a bulk reader.

fcnetd starts with 4,094 networks (a registry written before it starts).
One connection floods Describe and GetManagedObjects and never reads a
reply; meanwhile another connection attaches VMs and creates their TAPs.
Their round trips are compared with the same calls on a quiet daemon,
measured in the same test (absolute times on a shared machine mean little;
the bench measures the 3x target, this test a generous 5x).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import threading
import time


from fcnetd.bus import Message, call, connect
from fcnetd.model import Network
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, OBJECT_MANAGER_IFACE
from fcnetd.registry import FILENAME, Snapshot, serialize


from .harness import Daemon

NETWORKS = 4094
ROUNDS = 60
STUCK_SECONDS = 20


def write_registry(state_dir: str, host: str = "node1") -> None:
    """4,094 networks: fcbr0 untagged (where the VMs go) and 4,093 VLANs on
    fcbr1, which is never created (this kernel has no VLAN filtering)."""
    os.makedirs(state_dir, mode=0o700)
    nets = [Network.new("", "fcbr0", 0, host, "manual")]
    nets += [Network.new("", "fcbr1", vlan, host, "auto") for vlan in range(1, NETWORKS)]
    payload = serialize(Snapshot({n.id: n for n in nets}, {}))
    with open(os.path.join(state_dir, FILENAME), "wb") as f:
        f.write(payload)
    os.chmod(os.path.join(state_dir, FILENAME), 0o600)


class Flooder:
    """A connection that writes bulk reads and never reads its socket."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address.removeprefix("unix:path="))
        self.sock.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
        assert self.sock.recv(4096).startswith(b"OK")  # the last thing this client reads
        self.sock.sendall(b"BEGIN\r\n")
        self.sock.settimeout(2)  # a bus that stops reading us ends the flood (see _flood)
        self.serial = 0
        self.sent = 0
        self.blocked = False
        self._send(Message(destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                           interface="org.freedesktop.DBus", member="Hello"))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._flood, daemon=True)

    def _send(self, msg: Message) -> None:
        self.serial += 1
        msg.serial = self.serial
        self.sock.sendall(bytes(msg._marshall(False)))

    def _flood(self) -> None:
        describe = dict(destination=BUS_NAME, path=MANAGER_PATH, interface=MANAGER_IFACE, member="Describe")
        objects = dict(destination=BUS_NAME, path="/", interface=OBJECT_MANAGER_IFACE,
                       member="GetManagedObjects")
        try:
            while not self.stop.is_set():
                for _ in range(10):  # well within the bus's 128 outstanding calls a connection
                    self._send(Message(**(describe if self.sent % 2 else objects)))
                    self.sent += 1
                self.stop.wait(0.05)
        except TimeoutError:
            self.blocked = True

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.sock.close()


async def launcher_rounds(address: str, prefix: str, rounds: int) -> tuple[list[float], list[float]]:
    """AttachVm then CreateTap for `rounds` VMs, one at a time; the seconds of each."""
    conn = await connect(address)
    attach, tap = [], []

    async def launch(member, signature, *body):
        try:
            await asyncio.wait_for(call(conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, signature,
                                        list(body)), STUCK_SECONDS)
        except asyncio.TimeoutError:
            raise AssertionError(f"{member}{body} got no answer in {STUCK_SECONDS} s") from None
    try:
        for i in range(rounds):
            vm = f"{prefix}-{i}"
            t0 = time.perf_counter()
            await launch("AttachVm", "ssqa{sv}", vm, "fcbr0", 0, {})
            t1 = time.perf_counter()
            await launch("CreateTap", "ssa{sv}", vm, "eth0", {})
            t2 = time.perf_counter()
            attach.append(t1 - t0)
            tap.append(t2 - t1)
    finally:
        conn.disconnect()
    return attach, tap


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


async def bulk_read_answers(address: str) -> tuple[str, int]:
    """A well-behaved reader still gets its GetManagedObjects and Describe."""
    conn = await connect(address)
    try:
        (objects,) = await call(conn, BUS_NAME, "/", OBJECT_MANAGER_IFACE, "GetManagedObjects")
        (text,) = await call(conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "Describe")
        return text, len(objects)
    finally:
        conn.disconnect()


def test_create_tap_does_not_wait_behind_a_flood_of_bulk_reads(ns, bus, tmp_path, config):
    state = str(tmp_path / "state")
    write_registry(state)
    daemon = Daemon(ns, bus, state, config).start(timeout=60)
    try:
        asyncio.run(launcher_rounds(bus.address, "warm", 5))  # the bridge is created by the first TAP
        text, objects = asyncio.run(bulk_read_answers(bus.address))
        assert objects == NETWORKS + 1 and '"fcbr1-vlan-4093"' in text
        quiet_attach, quiet_tap = asyncio.run(launcher_rounds(bus.address, "quiet", ROUNDS))
        with Flooder(bus.address) as flood:
            deadline = time.monotonic() + 10
            while flood.sent < 200 and time.monotonic() < deadline:  # the flood is under way
                time.sleep(0.01)
            busy_attach, busy_tap = asyncio.run(launcher_rounds(bus.address, "busy", ROUNDS))
            sent = flood.sent
        text, objects = asyncio.run(bulk_read_answers(bus.address))
        assert objects == NETWORKS + 1 and '"busy-59"' in text
        # Quiet again after the flood: the baseline is the slower of the two
        # quiet runs, so a load that changed meanwhile on a shared machine
        # (the QEMU tiers run beside this one) is not taken for unfairness.
        after_attach, after_tap = asyncio.run(launcher_rounds(bus.address, "after", ROUNDS))
    finally:
        daemon.stop()
    quiet_tap_p99 = max(p99(quiet_tap), p99(after_tap))
    quiet_attach_p99 = max(p99(quiet_attach), p99(after_attach))
    report = (f"CreateTap p99 quiet {quiet_tap_p99 * 1000:.1f} ms, flooded {p99(busy_tap) * 1000:.1f} ms; "
              f"AttachVm p99 quiet {quiet_attach_p99 * 1000:.1f} ms, flooded {p99(busy_attach) * 1000:.1f} ms "
              f"(quiet: the slower of before and after the flood); {sent} bulk reads sent")
    print(report)
    assert sent >= 200 and not flood.blocked, report
    assert p99(busy_tap) < 5 * quiet_tap_p99, report
    assert p99(busy_attach) < 5 * quiet_attach_p99, report
