import socket

from fcnetd.bus import _RetryingSocket


def test_full_socket_buffer_reports_zero_bytes_not_an_error():
    """Regression: dbus-fast dropped the daemon off the bus on EAGAIN."""
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        wrapped = _RetryingSocket(a)
        chunk = b"x" * 65536
        sent = [wrapped.send(chunk) for _ in range(200)]
        assert 0 in sent, "the buffer never filled"
        assert wrapped.fileno() == a.fileno()
    finally:
        a.close()
        b.close()


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
