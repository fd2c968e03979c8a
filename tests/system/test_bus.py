"""fcnetd.bus on real connections through a real dbus-daemon.

dbus-fast's writer on a connection whose socket buffer fills: the daemon
must stay on the bus and deliver every message (bus._RetryingSocket,
upstream python-dbus-next issue #153). The buffer is made to fill for certain, not by luck: the sender's SO_SNDBUF
is set to the kernel's minimum and the dbus-daemon is stopped (SIGSTOP)
while the burst is queued, so nothing drains until it is continued."""

import asyncio
import contextlib
import os
import signal
import socket

import pytest

from fcnetd import bus as fbus
from fcnetd.bus import DBusError, Message, MessageType, ServiceInterface, call, connect, funnelled_property, request_name
from fcnetd.names import BUS_NAME
from fcnetd.testbus import PrivateBus

CHUNKS = 12
CHUNK_BYTES = 256 * 1024


@pytest.fixture
def open_bus():
    b = PrivateBus(policy=False).start()
    yield b
    b.stop()


async def _connect(address: str, timeout: float = 10):
    """PrivateBus.start returns once the socket file exists, which is before
    dbus-daemon listens on it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await connect(address)
        except ConnectionRefusedError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


async def _burst(bus: PrivateBus) -> tuple[bool, list[bytes]]:
    """Sends CHUNKS large signals while the bus is stopped; returns whether the
    sender is still connected and what the receiver got."""
    receiver = await _connect(bus.address)
    sender = await _connect(bus.address)
    got: list[bytes] = []
    all_in = asyncio.Event()

    def on_message(msg):
        if msg.message_type == MessageType.SIGNAL and msg.member == "Chunk":
            got.append(msg.body[0])
            if len(got) == CHUNKS:
                all_in.set()

    receiver.add_message_handler(on_message)
    # dbus-fast offers no public way to the socket; the test needs it only to shrink the buffer
    sender._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
    assert sender._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 16384
    os.kill(bus.proc.pid, signal.SIGSTOP)
    try:
        for i in range(CHUNKS):
            chunk = Message(message_type=MessageType.SIGNAL, destination=receiver.unique_name, path="/t",
                            interface="org.fcnetd.Test", member="Chunk", signature="ay",
                            body=[bytes([i]) * CHUNK_BYTES])
            try:
                sender.send(chunk).add_done_callback(lambda f: f.exception())
            except OSError:  # the connection is already gone: its socket is closed
                break
    finally:
        os.kill(bus.proc.pid, signal.SIGCONT)
    arrived = asyncio.ensure_future(all_in.wait())
    lost = asyncio.ensure_future(sender.wait_for_disconnect())
    await asyncio.wait([arrived, lost], timeout=20, return_when=asyncio.FIRST_COMPLETED)
    arrived.cancel()
    lost.cancel()
    with contextlib.suppress(BaseException):
        await lost  # the error it ended with, if it did
    still_up = sender.connected
    for conn in (sender, receiver):
        conn.disconnect()
    return still_up, got


def test_a_burst_that_fills_the_socket_buffer_keeps_the_connection_and_every_message(open_bus):
    """Regression: dbus-fast took EAGAIN from send() for a lost connection."""
    still_up, got = asyncio.run(_burst(open_bus))
    assert still_up, "the sender lost its bus connection during the burst"
    assert got == [bytes([i]) * CHUNK_BYTES for i in range(CHUNKS)], "messages lost, cut or reordered"


def test_without_the_patch_the_same_burst_drops_the_connection(open_bus, monkeypatch):
    """The test above goes through dbus-fast's own writer: with its original
    __init__ back in place (no _RetryingSocket), the same burst is fatal."""
    monkeypatch.setattr(fbus._aio._MessageWriter, "__init__", fbus._original_writer_init)
    still_up, got = asyncio.run(_burst(open_bus))
    assert not still_up and len(got) < CHUNKS


class Flaky(ServiceInterface):
    def __init__(self):
        super().__init__("org.fcnetd.Test")

    @funnelled_property()
    def Fine(self) -> "s":
        return "fine"

    @funnelled_property()
    def Fails(self) -> "u":
        return {}["missing"]


async def _read_properties(bus: PrivateBus) -> dict:
    server = await _connect(bus.address)
    client = await _connect(bus.address)
    assert await request_name(server, BUS_NAME)
    server.export("/t", Flaky())
    reads = {"Get Fine": ("/t", "org.freedesktop.DBus.Properties", "Get", "ss", ["org.fcnetd.Test", "Fine"]),
             "Get Fails": ("/t", "org.freedesktop.DBus.Properties", "Get", "ss", ["org.fcnetd.Test", "Fails"]),
             "GetAll": ("/t", "org.freedesktop.DBus.Properties", "GetAll", "s", ["org.fcnetd.Test"]),
             "GetManagedObjects": ("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", [])}
    out = {}
    try:
        for label, (path, interface, member, signature, body) in reads.items():
            try:
                out[label] = await call(client, BUS_NAME, path, interface, member, signature, body)
            except DBusError as e:
                out[label] = (e.type, e.text)
    finally:
        client.disconnect()
        server.disconnect()
    return out


def test_a_failing_property_getter_answers_internal_without_python_details(open_bus, caplog):
    """Regression: dbus-fast answered its own ServiceError naming the Python exception."""
    with caplog.at_level("ERROR", "fcnetd.bus"):
        got = asyncio.run(_read_properties(open_bus))
    assert got["Get Fine"][0].value == "fine"
    internal = ("org.fcnetd.Network1.Error.Internal",
                "reading property Fails failed inside fcnetd; the daemon's log has the details")
    assert got["Get Fails"] == got["GetAll"] == got["GetManagedObjects"] == internal
    assert "KeyError: 'missing'" in caplog.text
