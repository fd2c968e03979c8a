"""The access gate against a fake connection: which calls it holds for a
check, what a failed check answers, how long a verdict holds, which
authority decides, and the signature check."""

import asyncio
import math

from fcnetd import access, polkit
from fcnetd.access import MANAGE, READ, AccessGate, Caller
from fcnetd.bus import DBusError, Message, MessageType, Variant
from fcnetd.names import MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE, network_path

SIGNATURES = {(MANAGER_IFACE, "AttachVm"): "ssqa{sv}", (NETWORK_IFACE, "Delete"): ""}
NET = network_path("5b0c1f7e-3f0e-4c55-9d1a-2b8f0c1d2e3f")
FCNET_GID = 4321


def creds(uid, gids):
    return {"UnixUserID": Variant("u", uid), "ProcessID": Variant("u", 1000 + uid),
            "UnixGroupIDs": Variant("au", gids)}


ROOT = creds(0, [0])
MEMBER = creds(1000, [1000, FCNET_GID])
OUTSIDER = creds(1001, [1001])


class FakeConn:
    """The bus and polkit as the gate sees them. GetConnectionCredentials
    answers from `creds`, CheckAuthorization from `verdicts` (a bool, an
    exception to raise, or None: never answers); `authority` says whether
    polkit is on the bus."""

    def __init__(self, creds=(), verdicts=(), authority=False):
        self.creds, self.verdicts, self.authority = list(creds), list(verdicts), authority
        self.asked = 0  # credential lookups
        self.checks: list[tuple[str, str]] = []  # (subject's bus name, action) asked of polkit
        self.sent: list[Message] = []
        self.redispatched: list[Message] = []
        self.handlers = []

    async def call(self, msg):
        if msg.member == "GetConnectionCredentials":
            self.asked += 1
            answer, signature = self.creds.pop(0), "a{sv}"
        elif msg.member == "CheckAuthorization":
            assert msg.destination == polkit.AUTHORITY and msg.signature == "(sa{sv})sa{ss}us"
            subject, action, details, flags, cancel = msg.body
            assert subject[0] == "system-bus-name" and (details, flags, cancel) == ({}, 0, "")
            self.checks.append((subject[1]["name"].value, action))
            answer, signature = self.verdicts.pop(0), "(bba{ss})"
            if answer is None:
                await asyncio.Event().wait()
            if isinstance(answer, bool):
                answer = [answer, False, {}]
        elif msg.member == "NameHasOwner":
            answer, signature = self.authority, "b"
        elif msg.member == "ListActivatableNames":
            answer, signature = ["org.freedesktop.DBus"], "as"
        else:
            assert msg.member == "AddMatch", msg.member
            return Message(message_type=MessageType.METHOD_RETURN, reply_serial=1)
        if isinstance(answer, Exception):
            raise answer
        return Message(message_type=MessageType.METHOD_RETURN, reply_serial=msg.serial or 1,
                       signature=signature, body=[answer])

    def add_message_handler(self, handler):
        self.handlers.append(handler)

    def send(self, msg):
        self.sent.append(msg)

    def _process_message(self, msg):
        self.redispatched.append(msg)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def calling(path, interface, member, signature="", sender=":1.5", serial=3, body=None):
    msg = Message(path=path, interface=interface, member=member, signature=signature, body=body or [],
                  serial=serial)
    msg.sender = sender
    return msg


def list_call(serial=3, sender=":1.5"):
    return calling(MANAGER_PATH, MANAGER_IFACE, "ListNetworks", "a{sv}", sender=sender, serial=serial, body=[{}])


def create_call(serial=3, sender=":1.5"):
    return calling(MANAGER_PATH, MANAGER_IFACE, "CreateNetwork", "ssqa{sv}", sender=sender, serial=serial,
                   body=["", "fcbr0", 0, {}])


async def settle(gate):
    while gate._tasks:
        await asyncio.gather(*list(gate._tasks))


async def installed(conn, clock=None):
    """A gate installed on conn, once it knows which authority decides."""
    gate = AccessGate(conn, SIGNATURES, **({"clock": clock} if clock else {}))
    gate.access_gid = FCNET_GID
    gate.install()
    await settle(gate)
    return gate


async def through(gate, conn, msg):
    """What becomes of one call: 'allowed', the refusal's error, or 'held'."""
    conn.redispatched.clear()
    first = gate._on_message(msg)
    if first is True:
        await settle(gate)
        if msg in conn.redispatched:
            first = gate._on_message(msg)
        elif conn.sent and conn.sent[-1].reply_serial == msg.serial:
            return conn.sent[-1]
        else:
            return "held"
    if first is None:
        return "allowed"
    return first


def denied(reply):
    return isinstance(reply, Message) and reply.error_name == "org.fcnetd.Network1.Error.AccessDenied"


def test_a_failed_credential_lookup_refuses_that_call_and_is_not_remembered():
    """Regression: one failed GetConnectionCredentials denied the connection for its life."""
    conn = FakeConn(creds=[DBusError("org.freedesktop.DBus.Error.Failed", "the bus is busy"), ROOT])
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
    conn = FakeConn(creds=[ConnectionResetError()])
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
    gate.callers[":1.5"] = Caller(":1.5", 0, 1, None, gids=(0,))
    gate._verdicts[(":1.5", MANAGE)] = (math.inf, None)
    gate._verdicts[(":1.5", READ)] = (math.inf, None)
    reply = gate._on_message(calling(MANAGER_PATH, None, "AttachVm", "s", body=["vm-1"]))
    assert reply.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
    assert reply.body == ["AttachVm takes arguments of signature 'ssqa{sv}', got 's'"]
    reply = gate._on_message(calling(NET, None, "Delete", "s", body=["x"]))
    assert reply.body == ["Delete takes arguments of signature '', got 's'"]
    assert gate._on_message(calling(MANAGER_PATH, None, "AttachVm", "ssqa{sv}",
                                    body=["vm-1", "fcbr0", 0, {}])) is None
    assert gate._on_message(calling(MANAGER_PATH, None, "NoSuchMethod", "s", body=["x"])) is None


# -- which authority decides ---------------------------------------------------

def test_without_polkit_on_the_bus_the_built_in_rule_decides_and_the_log_says_so(caplog, monkeypatch):
    caplog.set_level("INFO", logger="fcnetd.access")
    monkeypatch.setattr(access, "group_id", lambda: FCNET_GID)
    clock = Clock()
    conn = FakeConn(creds=[MEMBER, OUTSIDER], authority=False)

    async def go():
        gate = await installed(conn, clock)
        assert gate.mode == access.BUILTIN_MODE
        assert await through(gate, conn, create_call(sender=":1.5")) == "allowed"
        reply = await through(gate, conn, list_call(sender=":1.6"))
        assert denied(reply) and reply.body == [access.BUILTIN_REFUSAL]
        assert conn.checks == []
        clock.now += 3600  # the built-in rule's verdicts change only with the config
        assert gate._on_message(create_call(sender=":1.5", serial=4)) is None
        gate.reload()
        assert gate._on_message(create_call(sender=":1.5", serial=5)) is True
        await settle(gate)
        assert conn.asked == 2, "credentials are kept across a reload"

    asyncio.run(go())
    assert "authorization at start: built-in rule: root and group fcnet may call" in caplog.text


def test_with_polkit_on_the_bus_polkit_decides_each_action_apart(caplog):
    caplog.set_level("INFO", logger="fcnetd.access")
    conn = FakeConn(creds=[MEMBER], verdicts=[True, False], authority=True)

    async def go():
        gate = await installed(conn)
        assert gate.mode == access.POLKIT_MODE
        assert await through(gate, conn, list_call(serial=3)) == "allowed"
        reply = await through(gate, conn, create_call(serial=4))
        assert denied(reply)
        assert reply.body == [f"access denied: polkit does not grant {MANAGE} to uid 1000"]
        assert conn.checks == [(":1.5", READ), (":1.5", MANAGE)]
        assert conn.asked == 1, "credentials are asked once per connection"

    asyncio.run(go())
    assert "authorization at start: polkit decides" in caplog.text


def test_root_is_never_asked_about_and_its_verdict_does_not_expire():
    clock = Clock()
    conn = FakeConn(creds=[ROOT], authority=True)

    async def go():
        gate = await installed(conn, clock)
        assert await through(gate, conn, create_call()) == "allowed"
        assert await through(gate, conn, list_call(serial=4)) == "allowed"
        clock.now += 3600
        assert gate._on_message(list_call(serial=5)) is None, "held for a new verdict"
        assert conn.checks == []

    asyncio.run(go())


def test_polkit_appearing_and_leaving_switches_the_authority_and_forgets_verdicts(caplog):
    caplog.set_level("INFO", logger="fcnetd.access")
    conn = FakeConn(creds=[OUTSIDER], verdicts=[True], authority=False)

    def owner_changed(new_owner):
        msg = Message(message_type=MessageType.SIGNAL, path="/org/freedesktop/DBus",
                      interface="org.freedesktop.DBus", member="NameOwnerChanged", signature="sss",
                      body=[polkit.AUTHORITY, "" if new_owner else ":1.9", new_owner])
        msg.sender = "org.freedesktop.DBus"
        return msg

    async def go():
        gate = await installed(conn)
        assert denied(await through(gate, conn, list_call(serial=3)))
        conn.authority = True
        assert gate._on_message(owner_changed(":1.9")) is None
        await settle(gate)
        assert gate.mode == access.POLKIT_MODE
        assert await through(gate, conn, list_call(serial=4)) == "allowed", "a verdict of the old mode was kept"
        conn.authority = False
        gate._on_message(owner_changed(""))
        await settle(gate)
        assert gate.mode == access.BUILTIN_MODE
        assert denied(await through(gate, conn, list_call(serial=5)))
        assert conn.checks == [(":1.5", READ)]

    asyncio.run(go())
    assert "authorization after polkit appeared: polkit decides" in caplog.text
    assert "authorization after polkit left: built-in rule" in caplog.text


# -- how long a verdict holds -------------------------------------------------

def test_a_verdict_holds_for_verdict_seconds_per_connection_and_action():
    clock = Clock()
    conn = FakeConn(creds=[MEMBER, MEMBER], verdicts=[True, True, False], authority=True)

    async def go():
        gate = await installed(conn, clock)
        assert await through(gate, conn, list_call(serial=3)) == "allowed"
        clock.now += access.VERDICT_SECONDS - 0.1
        assert await through(gate, conn, list_call(serial=4)) == "allowed"
        assert conn.checks == [(":1.5", READ)], "asked again within the verdict's lifetime"
        assert await through(gate, conn, list_call(serial=5, sender=":1.6")) == "allowed"
        assert conn.checks[-1] == (":1.6", READ), "another connection used the first one's verdict"
        clock.now += 0.2  # the first verdict has expired; the rule now says no
        assert denied(await through(gate, conn, list_call(serial=6)))
        assert conn.checks == [(":1.5", READ), (":1.6", READ), (":1.5", READ)]
        assert conn.asked == 2, "credentials are kept for the connection, not the verdict's lifetime"

    asyncio.run(go())


def test_a_polkit_error_refuses_the_waiting_calls_and_is_not_remembered_as_a_denial():
    conn = FakeConn(creds=[MEMBER], authority=True, verdicts=[
        DBusError("org.freedesktop.PolicyKit1.Error.Failed", "Action org.fcnetd.network1.read is not registered"),
        True])

    async def go():
        gate = await installed(conn)
        waiting = [list_call(serial=s) for s in (3, 4)]
        for msg in waiting:
            assert gate._on_message(msg) is True
        await settle(gate)
        assert [m.reply_serial for m in conn.sent] == [3, 4], "both waited on one polkit question"
        assert all(denied(m) for m in conn.sent)
        assert "polkit gave no verdict on org.fcnetd.network1.read" in conn.sent[0].body[0]
        assert "is not registered" in conn.sent[0].body[0]
        assert await through(gate, conn, list_call(serial=5)) == "allowed"
        assert conn.checks == [(":1.5", READ)] * 2

    asyncio.run(go())


def test_polkit_that_does_not_answer_in_time_refuses_the_call(monkeypatch):
    monkeypatch.setattr(polkit, "ANSWER_SECONDS", 0.05)
    conn = FakeConn(creds=[MEMBER], authority=True, verdicts=[None, True])

    async def go():
        gate = await installed(conn)
        reply = await through(gate, conn, list_call(serial=3))
        assert denied(reply) and "no answer from org.freedesktop.PolicyKit1 in 0.05 s" in reply.body[0]
        assert await through(gate, conn, list_call(serial=4)) == "allowed"

    asyncio.run(go())


def test_calls_waiting_on_one_verdict_share_it():
    conn = FakeConn(creds=[MEMBER], authority=True, verdicts=[True])

    async def go():
        gate = await installed(conn)
        calls = [list_call(serial=s) for s in (3, 4, 5)]
        for msg in calls:
            assert gate._on_message(msg) is True
        await settle(gate)
        assert conn.redispatched == calls
        assert conn.checks == [(":1.5", READ)] and conn.asked == 1

    asyncio.run(go())
