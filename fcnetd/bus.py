"""The one module that imports dbus-fast. The daemon, fcnetctl and the web UI
reach D-Bus through these names, so the library can be swapped here."""

from __future__ import annotations

import struct

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast._private.constants import HeaderField
from dbus_fast._private.marshaller import Marshaller
from dbus_fast.aio import MessageBus
from dbus_fast.aio import message_bus as _aio
from dbus_fast.constants import MessageFlag, NameFlag, PropertyAccess, RequestNameReply
from dbus_fast.service import ServiceInterface, dbus_property, method

__all__ = ["DBusError", "Message", "MessageType", "Variant", "ServiceInterface", "dbus_property",
           "method", "PropertyAccess", "connect", "call", "request_name", "unwrap",
           "DictElement", "dict_array_body", "PremarshalledReply", "wants_reply"]


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


# -- replies marshalled ahead of time -----------------------------------------
# A list of thousands of a{sv} entries costs more to marshal than to compute
# (4,094 networks: ~20 ms). Each entry is marshalled once, when it changes,
# and a reply is the concatenation of the entries it holds.

class DictElement:
    """One a{sv} as an element of an array, marshalled for both places it can
    start at: an element is 4-aligned, and its dict entries are 8-aligned,
    so one starting at 0 mod 8 has 4 bytes of padding after its length that
    one starting at 4 mod 8 has not; the rest is the same bytes."""

    __slots__ = ("at0", "at4")

    def __init__(self, value: dict):
        self.at0 = bytes(Marshaller("a{sv}", [value]).marshall())
        self.at4 = self.at0[:4] + self.at0[8:]


def dict_array_body(elements: list[DictElement]) -> bytes:
    """The marshalled body of an aa{sv} reply holding these elements."""
    out = bytearray(4)  # the array's length, filled in below
    for e in elements:
        out += bytes(-len(out) & 3)  # elements are 4-aligned; none after the last
        out += e.at4 if len(out) & 7 else e.at0
    struct.pack_into("<I", out, 0, len(out) - 4)
    return bytes(out)


def wants_reply(call: Message) -> bool:
    return not call.flags & MessageFlag.NO_REPLY_EXPECTED


class PremarshalledReply(Message):
    """A method return whose body is already marshalled; only the header is
    built when it is sent. The bus writer calls _marshall, so this override
    is the one place the body is joined to its header."""

    def __init__(self, call: Message, signature: str, body: bytes):
        super().__init__(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial,
                         destination=call.sender, signature=signature)
        self.raw_body = body

    def _marshall(self, negotiate_unix_fd: bool = False) -> bytearray:
        fields = [(HeaderField.REPLY_SERIAL.value, Variant("u", self.reply_serial)),
                  (HeaderField.SIGNATURE.value, Variant("g", self.signature))]
        if self.destination:
            fields.append((HeaderField.DESTINATION.value, Variant("s", self.destination)))
        header = Marshaller("yyyyuua(yv)", [ord("l"), MessageType.METHOD_RETURN.value, 0, 1,
                                            len(self.raw_body), self.serial, fields]).marshall()
        header += bytes(-len(header) & 7)  # the body starts 8-aligned
        return header + self.raw_body


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
