"""The one module that imports dbus-fast. The daemon, fcnetctl and the web UI
reach D-Bus through these names, so the library can be swapped here."""

from __future__ import annotations

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.aio import message_bus as _aio
from dbus_fast.constants import NameFlag, PropertyAccess, RequestNameReply
from dbus_fast.service import ServiceInterface, dbus_property, method

__all__ = ["DBusError", "Message", "MessageType", "Variant", "ServiceInterface", "dbus_property",
           "method", "PropertyAccess", "connect", "call", "request_name", "unwrap"]


class _RetryingSocket:
    """dbus-fast treats EAGAIN from send() as a lost connection (upstream
    python-dbus-next issue #153), so a burst that fills the socket buffer
    made the daemon drop off the bus. Reporting 0 bytes sent instead makes
    its writer keep the rest and wait for the socket to become writable."""

    def __init__(self, sock):
        self._sock = sock

    def send(self, data) -> int:
        try:
            return self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0

    def sendmsg(self, buffers, ancdata) -> int:
        try:
            return self._sock.sendmsg(buffers, ancdata)
        except (BlockingIOError, InterruptedError):
            return 0

    def __getattr__(self, name):
        return getattr(self._sock, name)


_original_writer_init = _aio._MessageWriter.__init__


def _writer_init(self, bus) -> None:
    _original_writer_init(self, bus)
    self.sock = _RetryingSocket(self.sock)


_aio._MessageWriter.__init__ = _writer_init


async def connect(bus: str = "system") -> MessageBus:
    """bus: 'system', 'session' or a D-Bus address such as unix:path=/run/x."""
    if bus == "system":
        return await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=False).connect()
    if bus == "session":
        return await MessageBus(bus_type=BusType.SESSION).connect()
    return await MessageBus(bus_address=bus).connect()


async def request_name(conn: MessageBus, name: str) -> bool:
    """Takes the well-known name; False if someone else has it."""
    reply = await conn.request_name(name, NameFlag.DO_NOT_QUEUE)
    return reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER)


async def call(conn: MessageBus, destination: str, path: str, interface: str, member: str,
               signature: str = "", body: list | None = None, timeout: float | None = None):
    """One method call; returns the reply body or raises DBusError."""
    reply = await conn.call(Message(destination=destination, path=path, interface=interface,
                                    member=member, signature=signature, body=body or []))
    if reply.message_type == MessageType.ERROR:
        raise DBusError(reply.error_name, reply.body[0] if reply.body else "", reply)
    return reply.body


def unwrap(value):
    """Variant trees to plain Python values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value
