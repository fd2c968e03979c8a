"""The access gate against a fake connection: which calls it holds for a
credential check, what a failed check answers, and the signature check."""

import asyncio

from fcnetd.access import AccessGate
from fcnetd.bus import DBusError, Message, MessageType, Variant
from fcnetd.names import MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE, network_path

SIGNATURES = {(MANAGER_IFACE, "AttachVm"): "ssqa{sv}", (NETWORK_IFACE, "Delete"): ""}
NET = network_path("5b0c1f7e-3f0e-4c55-9d1a-2b8f0c1d2e3f")


class FakeConn:
    """Answers GetConnectionCredentials from a list: a dict of credentials,
    or an exception to raise."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = 0
        self.sent: list[Message] = []
        self.redispatched: list[Message] = []

    async def call(self, msg):
        assert msg.member == "GetConnectionCredentials"
        self.asked += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return Message(message_type=MessageType.METHOD_RETURN, reply_serial=msg.serial or 1,
                       signature="a{sv}", body=[answer])

    def send(self, msg):
        self.sent.append(msg)

    def _process_message(self, msg):
        self.redispatched.append(msg)


def calling(path, interface, member, signature="", sender=":1.5", serial=3, body=None):
    msg = Message(path=path, interface=interface, member=member, signature=signature, body=body or [],
                  serial=serial)
    msg.sender = sender
    return msg


async def settle(gate):
    while gate._tasks:
        await asyncio.gather(*list(gate._tasks))


ROOT = {"UnixUserID": Variant("u", 0), "UnixGroupIDs": Variant("au", [0])}


def test_a_failed_credential_lookup_refuses_that_call_and_is_not_remembered():
    """Regression: one failed GetConnectionCredentials denied the connection for its life."""
    conn = FakeConn(DBusError("org.freedesktop.DBus.Error.Failed", "the bus is busy"), ROOT)
    gate = AccessGate(conn, SIGNATURES)

    async def go():
        first = calling(MANAGER_PATH, MANAGER_IFACE, "Describe", serial=3)
        assert gate._on_message(first) is True  # held until the bus says who called
        await settle(gate)
        assert conn.redispatched == []
        [refusal] = conn.sent
        assert refusal.message_type == MessageType.ERROR and refusal.reply_serial == 3
        assert refusal.error_name == "org.fcnetd.Network1.Error.AccessDenied"
        assert "could not read the caller's credentials" in refusal.body[0]
        assert "org.freedesktop.DBus.Error.Failed" in refusal.body[0]

        second = calling(MANAGER_PATH, MANAGER_IFACE, "Describe", serial=4)
        assert gate._on_message(second) is True
        await settle(gate)
        assert conn.asked == 2, "the second call did not ask the bus again"
        assert conn.redispatched == [second] and len(conn.sent) == 1
        assert gate._on_message(second) is None  # now let through to dispatch

    asyncio.run(go())


def test_calls_waiting_on_a_failed_lookup_are_all_refused_once():
    conn = FakeConn(ConnectionResetError())
    gate = AccessGate(conn, SIGNATURES)

    async def go():
        calls = [calling(MANAGER_PATH, MANAGER_IFACE, "Describe", serial=s) for s in (3, 4, 5)]
        for c in calls:
            gate._on_message(c)
        await settle(gate)
        assert conn.asked == 1
        assert [m.reply_serial for m in conn.sent] == [3, 4, 5]
        assert gate.denied == 3

    asyncio.run(go())


def test_every_path_and_standard_interface_is_checked_but_peer_and_public_introspection():
    gate = AccessGate(FakeConn(), SIGNATURES)

    async def go():
        held = [calling("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"),
                calling(MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"),
                calling("/", "org.freedesktop.DBus.Properties", "GetAll", "s", body=[MANAGER_IFACE]),
                calling(NET, "org.freedesktop.DBus.Properties", "Get", "ss", body=[NETWORK_IFACE, "Vms"]),
                calling("/elsewhere", "org.example.Other", "Anything"),
                calling(MANAGER_PATH, None, "Describe"),
                calling(NET, "org.freedesktop.DBus.Introspectable", "Introspect"),
                calling(NET.rsplit("/", 1)[0], "org.freedesktop.DBus.Introspectable", "Introspect")]
        for msg in held:
            gate._pending.clear()
            assert gate._on_message(msg) is True, (msg.path, msg.interface, msg.member)
        open_ = [calling("/", "org.freedesktop.DBus.Introspectable", "Introspect"),
                 calling(MANAGER_PATH, "org.freedesktop.DBus.Introspectable", "Introspect"),
                 calling("/", "org.freedesktop.DBus.Peer", "Ping"),
                 calling(NET, "org.freedesktop.DBus.Peer", "GetMachineId")]
        for msg in open_:
            assert gate._on_message(msg) is None, (msg.path, msg.interface, msg.member)
        for task in list(gate._tasks):
            task.cancel()

    asyncio.run(go())


def test_a_call_without_interface_and_a_wrong_signature_names_the_expected_one():
    gate = AccessGate(FakeConn(), SIGNATURES)
    gate._verdicts[":1.5"] = True
    reply = gate._on_message(calling(MANAGER_PATH, None, "AttachVm", "s", body=["vm-1"]))
    assert reply.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert reply.body == ["AttachVm takes arguments of signature 'ssqa{sv}', got 's'"]
    reply = gate._on_message(calling(NET, None, "Delete", "s", body=["x"]))
    assert reply.body == ["Delete takes arguments of signature '', got 's'"]
    assert gate._on_message(calling(MANAGER_PATH, None, "AttachVm", "ssqa{sv}",
                                    body=["vm-1", "fcbr0", 0, {}])) is None
    assert gate._on_message(calling(MANAGER_PATH, None, "NoSuchMethod", "s", body=["x"])) is None
