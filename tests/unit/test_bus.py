"""fcnetd.bus: the check of the dbus-fast internals it relies on, the
property funnel, and the replies it marshals ahead of time. (The EAGAIN fix
through a real connection is in tests/system/test_bus.py.)"""

import logging
import os
import subprocess
import sys

import pytest

from fcnetd import bus
from fcnetd.bus import DBusError, ServiceInterface, funnelled_property

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_installed_dbus_fast_passes_the_check_it_is_pinned_to():
    bus.check_internals()
    setup = open(os.path.join(REPO, "setup.cfg")).read()
    assert f"dbus-fast=={bus.TESTED_VERSION}\n" in setup


def test_a_writer_without_the_eagain_patch_fails_the_check(monkeypatch):
    monkeypatch.setattr(bus._aio._MessageWriter, "__init__", bus._original_writer_init)
    with pytest.raises(ImportError, match=r"dbus-fast \d+\.\d+\.\d+.*EAGAIN from send\(\) as a lost connection"):
        bus.check_internals()


def test_a_writer_that_stops_sending_through_self_sock_fails_the_check(monkeypatch):
    def write_callback(self, remove_writer=True):
        try:
            self.buf = self.buf or memoryview(self.messages.popleft()[0])
            self.bus._sock.send(self.buf)  # bypasses the patched self.sock
        except Exception as e:
            self.bus._finalize(e)

    monkeypatch.setattr(bus._aio._MessageWriter, "write_callback", write_callback)
    with pytest.raises(ImportError, match="EAGAIN"):
        bus.check_internals()


def test_a_writer_that_no_longer_calls_marshall_fails_the_check(monkeypatch):
    monkeypatch.setattr(bus._aio._MessageWriter, "buffer_message",
                        lambda self, msg, future=None: self.messages.append((bytearray(b"l"), None, future)))
    with pytest.raises(ImportError, match="does not send what Message._marshall returns"):
        bus.check_internals()


def test_a_header_laid_out_unlike_the_library_fails_the_check(monkeypatch):
    monkeypatch.setattr(bus.PremarshalledReply, "_marshall",
                        lambda self, negotiate_unix_fd=False: bytearray(b"l\2\0\1"))
    with pytest.raises(ImportError, match="lays out a reply's header differently"):
        bus.check_internals()


def test_a_bus_without_process_message_fails_the_check(monkeypatch):
    monkeypatch.setattr(bus, "MessageBus", type("MessageBus", (), {}))
    with pytest.raises(ImportError, match="_process_message is gone"):
        bus.check_internals()


def test_a_missing_internal_module_is_named_at_import():
    code = "import sys; sys.modules['dbus_fast._private.marshaller'] = None; import fcnetd.bus"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert res.returncode != 0
    assert "fcnetd cannot use dbus-fast" in res.stderr and "dbus_fast._private.marshaller" in res.stderr


class Broken(ServiceInterface):
    def __init__(self):
        super().__init__("org.fcnetd.Test")

    @funnelled_property()
    def Fine(self) -> "s":
        return "fine"

    @funnelled_property()
    def Fails(self) -> "u":
        return {}["missing"]

    @funnelled_property()
    def Refuses(self) -> "s":
        raise DBusError("org.fcnetd.Network1.Error.NoSuchNetwork", "no network 'x'")


def test_a_failing_property_getter_answers_internal_and_logs_the_traceback(caplog):
    obj = Broken()
    assert obj.Fine == "fine"
    with caplog.at_level(logging.ERROR, "fcnetd.bus"), pytest.raises(DBusError) as err:
        obj.Fails
    assert err.value.type == "org.fcnetd.Network1.Error.Internal"
    assert err.value.text == "reading property Fails failed inside fcnetd; the daemon's log has the details"
    assert "KeyError: 'missing'" in caplog.text and "Traceback" in caplog.text
    with pytest.raises(DBusError) as err:
        obj.Refuses
    assert (err.value.type, err.value.text) == ("org.fcnetd.Network1.Error.NoSuchNetwork", "no network 'x'")


def test_a_funnelled_property_keeps_its_name_and_type_in_introspection():
    props = {p.name: (p.signature, p.access.value) for p in Broken().introspect().properties}
    assert props == {"Fine": ("s", "read"), "Fails": ("u", "read"), "Refuses": ("s", "read")}


def _decode(raw: bytes):
    import io

    from dbus_fast._private.unmarshaller import Unmarshaller
    u = Unmarshaller(io.BytesIO(raw))
    u.unmarshall()
    return u.message


def test_array_body_from_cached_elements_is_what_dbus_fast_marshals():
    """Elements start 0 or 4 bytes past an 8-byte boundary; both forms, and
    lists of every length up to a few, must give the library's exact bytes."""
    from dbus_fast._private.marshaller import Marshaller

    from fcnetd.bus import DictElement, Variant, dict_array_body
    entries = [{"Name": Variant("s", "n" * i), "Vlan": Variant("q", i), "Path": Variant("o", f"/a/b{i}"),
                "Up": Variant("b", bool(i % 2))} for i in range(9)]
    for n in range(len(entries) + 1):
        want = bytes(Marshaller("aa{sv}", [entries[:n]]).marshall())
        assert dict_array_body([DictElement(e) for e in entries[:n]]) == want, n


def test_premarshalled_reply_decodes_as_a_method_return():
    from fcnetd.bus import DictElement, Message, MessageType, PremarshalledReply, Variant, dict_array_body
    entries = [{"Name": Variant("s", "fcbr0-vlan-10"), "VmCount": Variant("u", 3)}] * 3
    call_msg = Message(destination="org.fcnetd.Network1", path="/org/fcnetd/Network1", member="ListNetworks",
                       signature="a{sv}", body=[{}], serial=41)
    call_msg.sender = ":1.7"
    reply = PremarshalledReply(call_msg, "aa{sv}", dict_array_body([DictElement(e) for e in entries]))
    reply.serial = 99
    got = _decode(bytes(reply._marshall(False)))
    assert (got.message_type, got.reply_serial, got.serial, got.destination, got.signature) == \
        (MessageType.METHOD_RETURN, 41, 99, ":1.7", "aa{sv}")
    assert got.body == [entries]
