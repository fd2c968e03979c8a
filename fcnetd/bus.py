"""The one module that imports dbus-fast. The daemon, fcnetctl and the web UI
reach D-Bus through these names, so the library can be swapped here.

It leans on five dbus-fast internals, pinned exactly in setup.cfg and checked
when this module is imported (check_internals), so that a dbus-fast that
moved one of them stops fcnetd at start with a message naming it, instead of
misbehaving later: the asyncio writer (_MessageWriter, patched for EAGAIN),
Message._marshall (overridden by PremarshalledReply), the marshaller and the
header-field codes (DictElement, PremarshalledReply),
MessageBus._process_message (redispatch), and
MessageBus._create_socket_for_transport (connect_stream: a connection over
a socket that is already connected, such as ssh's stdin and stdout)."""

from __future__ import annotations

import errno
import functools
import logging
import socket
import struct
from importlib import metadata

from .names import ERROR_PREFIX

__all__ = ["DBusError", "Message", "MessageType", "Variant", "ServiceInterface", "dbus_property",
           "funnelled_property", "method", "signal", "PropertyAccess", "connect", "connect_stream", "call", "request_name", "unwrap",
           "redispatch", "DictElement", "dict_array_body", "PremarshalledReply", "wants_reply"]

log = logging.getLogger("fcnetd.bus")
TESTED_VERSION = "5.2.0"  # the dbus-fast whose internals this module was checked against


def _installed_version() -> str:
    try:
        return metadata.version("dbus-fast")
    except metadata.PackageNotFoundError:
        return "unknown"


def _mismatch(what: str) -> ImportError:
    return ImportError(f"fcnetd cannot use dbus-fast {_installed_version()} (it was tested with "
                       f"{TESTED_VERSION}, pinned in setup.cfg): {what}")


try:
    from dbus_fast import BusType, DBusError, Message, MessageType, Variant
    from dbus_fast._private.constants import HeaderField
    from dbus_fast._private.marshaller import Marshaller
    from dbus_fast.aio import MessageBus
    from dbus_fast.aio import message_bus as _aio
    from dbus_fast.constants import MessageFlag, NameFlag, PropertyAccess, RequestNameReply
    from dbus_fast.service import ServiceInterface, dbus_property, method, signal
except ImportError as e:
    raise _mismatch(f"a module or name it uses is gone ({e})") from e


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


def redispatch(conn: MessageBus, msg: Message) -> None:
    """Runs a received message through the connection's handlers again, as if
    it had just arrived: the access gate holds calls while it asks the bus who
    sent them, then lets them go on."""
    conn._process_message(msg)


def funnelled_property(access: PropertyAccess = PropertyAccess.READ):
    """dbus_property whose getter fails the way a funnelled method does: a
    DBusError reaches the caller as it is; anything else is logged with its
    traceback and answered as Error.Internal with a plain message, where
    dbus-fast alone would answer its own ServiceError naming the exception."""
    def decorator(fn):
        @functools.wraps(fn)
        def getter(self):
            try:
                return fn(self)
            except DBusError:
                raise
            except Exception:
                log.exception("reading property %s failed", fn.__name__)
                raise DBusError(ERROR_PREFIX + "Internal", f"reading property {fn.__name__} failed "
                                "inside fcnetd; the daemon's log has the details") from None
        return dbus_property(access=access)(getter)
    return decorator


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
    is the one place the body is joined to its header. The header fields are
    in dbus-fast's own order, so the bytes are exactly the library's."""

    def __init__(self, call: Message, signature: str, body: bytes):
        super().__init__(message_type=MessageType.METHOD_RETURN, reply_serial=call.serial,
                         destination=call.sender, signature=signature)
        self.raw_body = body

    def _marshall(self, negotiate_unix_fd: bool = False) -> bytearray:
        fields = [(HeaderField.REPLY_SERIAL.value, Variant("u", self.reply_serial))]
        if self.destination:
            fields.append((HeaderField.DESTINATION.value, Variant("s", self.destination)))
        fields.append((HeaderField.SIGNATURE.value, Variant("g", self.signature)))
        header = Marshaller("yyyyuua(yv)", [ord("l"), MessageType.METHOD_RETURN.value, 0, 1,
                                            len(self.raw_body), self.serial, fields]).marshall()
        header += bytes(-len(header) & 7)  # the body starts 8-aligned
        return header + self.raw_body


# -- the check at import -------------------------------------------------------

class _FullSocket:
    """The bus socket as check_internals sees it: full (EAGAIN) until
    drained, then it takes everything."""

    def __init__(self):
        self.full = True
        self.sent = bytearray()

    def send(self, data) -> int:
        if self.full:
            raise BlockingIOError(errno.EAGAIN, "socket buffer full")
        self.sent += data
        return len(data)


class _ProbeLoop:
    def add_writer(self, fd, callback) -> None:
        pass

    def remove_writer(self, fd) -> None:
        pass


class _ProbeBus:
    """The parts of a MessageBus that its writer reads."""

    def __init__(self, sock: _FullSocket):
        self._sock, self._fd, self._loop = sock, -1, _ProbeLoop()
        self._negotiate_unix_fd = False
        self._user_disconnect = False
        self.unique_name = ":1.0"
        self.lost: Exception | None = None

    def _finalize(self, err: Exception | None) -> None:
        self.lost = err


def check_internals() -> None:
    """Proves without a socket that the internals used here behave as this
    module expects, by sending one PremarshalledReply through dbus-fast's own
    writer onto a socket that is full at first: the writer must keep the
    message rather than drop the connection (the EAGAIN patch is in its write
    path), then send exactly the bytes dbus-fast marshals for the same reply
    (the _marshall override is used and the header layout is the library's).
    Raises ImportError naming what is missing or changed."""
    problems = []
    call = Message(destination=":1.0", path="/", member="Probe", serial=7)
    call.sender = ":1.1"
    reply = PremarshalledReply(call, "as", bytes(Marshaller("as", [["probe"]]).marshall()))
    reply.serial = 8
    expected = b""
    try:
        expected = bytes(Message(message_type=MessageType.METHOD_RETURN, reply_serial=7, destination=":1.1",
                                 signature="as", body=[["probe"]], serial=8)._marshall(False))
        if bytes(reply._marshall(False)) != expected:
            problems.append("Message._marshall lays out a reply's header differently from PremarshalledReply")
    except Exception as e:
        problems.append(f"Message._marshall or Marshaller changed ({type(e).__name__}: {e})")
    sock = _FullSocket()
    bus = _ProbeBus(sock)
    try:
        writer = _aio._MessageWriter(bus)
        writer.schedule_write(reply)
        if bus.lost is not None:
            problems.append("aio._MessageWriter treats EAGAIN from send() as a lost connection: the patch "
                            "of its __init__ (self.sock wrapped in _RetryingSocket) is not in its write path")
        else:
            sock.full = False
            writer.write_callback()
            if bytes(sock.sent) != expected:
                problems.append("aio._MessageWriter does not send what Message._marshall returns, so "
                                "PremarshalledReply's override is not used")
    except Exception as e:
        problems.append(f"aio._MessageWriter changed shape ({type(e).__name__}: {e})")
    if not callable(getattr(MessageBus, "_process_message", None)):
        problems.append("MessageBus._process_message is gone (used by redispatch)")
    if not callable(getattr(MessageBus, "_create_socket_for_transport", None)):
        problems.append("MessageBus._create_socket_for_transport is gone (used by connect_stream)")
    if problems:
        raise _mismatch("; ".join(problems))


check_internals()


# -- connections and calls -----------------------------------------------------

async def connect(bus: str = "system") -> MessageBus:
    """bus: 'system', 'session' or a D-Bus address such as unix:path=/run/x."""
    if bus == "system":
        return await MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=False).connect()
    if bus == "session":
        return await MessageBus(bus_type=BusType.SESSION).connect()
    return await MessageBus(bus_address=bus).connect()


class _Connected(socket.socket):
    """A socket already joined to its peer: MessageBus.connect() still asks
    the event loop to connect it, which must then do nothing."""

    def connect(self, address) -> None:
        pass


class _StreamBus(MessageBus):
    """A connection over a given socket instead of a bus address: the
    library's connect() takes its socket from _create_socket_for_transport,
    then authenticates and says Hello over it as over any other."""

    def __init__(self, sock: _Connected, auth_timeout: float | None):
        super().__init__(bus_address="unix:path=/", negotiate_unix_fd=False, auth_timeout=auth_timeout)
        self._given = sock

    def _create_socket_for_transport(self, transport, options):
        return self._given, self._given.makefile("rwb"), ""


async def connect_stream(sock: socket.socket, auth_timeout: float | None = None) -> MessageBus:
    """A D-Bus connection over a connected stream socket whose peer relays
    to a bus (one end of a socketpair whose other end is the stdin and
    stdout of ssh running systemd-stdio-bridge on a remote host). The socket
    is taken over: the connection closes it."""
    return await _StreamBus(_Connected(fileno=sock.detach()), auth_timeout).connect()


async def request_name(conn: MessageBus, name: str) -> bool:
    """Takes the well-known name; False if someone else has it."""
    reply = await conn.request_name(name, NameFlag.DO_NOT_QUEUE)
    return reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER)


async def call(conn: MessageBus, destination: str, path: str, interface: str, member: str,
               signature: str = "", body: list | None = None):
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
