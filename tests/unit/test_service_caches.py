"""The D-Bus layer's caches and bulk reads against the engine with a fake
kernel and a fake connection: what a caller receives, and how much memory
distinct queries may hold."""

import asyncio
import io
import json
import tracemalloc

import pytest
from dbus_fast._private.unmarshaller import Unmarshaller

from fcnetd import errors as E
from fcnetd.bus import Message, MessageType, Variant, unwrap
from fcnetd import lanes
from fcnetd.names import (BUS_NAME, LIMITS_EXCEEDED, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE,
                          OBJECT_MANAGER_IFACE, network_path)
from fcnetd.schema import EXPORTED, LISTED, NETWORK_FIELDS
from fcnetd.service import LIST_CACHE_ENTRIES, Manager

from .test_engine import make


class Conn:
    """The part of a dbus-fast MessageBus the Manager uses."""

    def __init__(self):
        self.sent = []
        self.handlers = []
        self.deaf: set[str] = set()  # callers that never read (so never answer a ping)
        self.pinged: list[str] = []

    async def call(self, msg):
        self.pinged.append(msg.destination)
        if msg.destination in self.deaf:
            await asyncio.Event().wait()
        return Message(message_type=MessageType.METHOD_RETURN, reply_serial=1)

    def export(self, path, obj):
        pass

    def unexport(self, path):
        pass

    def add_message_handler(self, handler):
        self.handlers.append(handler)

    def send(self, msg):
        self.sent.append(msg)


def call(member, signature="", body=(), path=MANAGER_PATH, interface=MANAGER_IFACE, sender=":1.7", serial=1):
    msg = Message(destination=BUS_NAME, path=path, interface=interface, member=member,
                  signature=signature, body=list(body), serial=serial)
    msg.sender = sender
    return msg


def decoded(msg):
    """The reply as a client reads it off the wire."""
    return Unmarshaller(io.BytesIO(bytes(msg._marshall(False)))).unmarshall()


class Daemon:
    def __init__(self, tmp_path):
        self.engine = make(tmp_path)
        self.conn = Conn()
        self.manager = Manager(self.engine, self.conn)
        self.manager.export_all()
        self.manager.install_fast_paths()

    async def ask(self, msg):
        """Sends one call through the message handlers; returns the decoded reply."""
        result = self.conn.handlers[0](msg)
        if isinstance(result, Message):
            return decoded(result)
        assert result, f"{msg.member} was not taken by the fast path"
        for _ in range(100_000):
            for i, reply in enumerate(self.conn.sent):
                if reply.destination == msg.sender and reply.reply_serial == msg.serial:
                    return decoded(self.conn.sent.pop(i))
            await asyncio.sleep(0)
        raise AssertionError(f"no reply to {msg.member}")


@pytest.fixture
def d(tmp_path):
    return Daemon(tmp_path)


def run(coro):
    return asyncio.run(coro)


async def populate(d, vlans=range(1, 41)):
    for vlan in vlans:
        await d.engine.create_network("", "fcbr1", vlan, description=f"net {vlan}")
    await d.engine.attach_vm("vm-1", "fcbr0", 0, "web", mac="02:fc:00:00:00:01")
    await d.engine.attach_vm("vm-2", "fcbr0", 0, "db")
    await d.engine.create_tap("vm-1", "eth0")


def test_distinct_list_queries_keep_the_cache_bounded_in_entries_and_memory(d):
    async def go():
        await populate(d)
        for i in range(500):  # warm up: first-time allocations are not growth
            await d.ask(call("ListNetworks", "a{sv}", [{"search": Variant("s", f"warm{i}")}], serial=i + 1))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3_000):
            query = ({"search": Variant("s", f"no-such-{i}")} if i % 2
                     else {"offset": Variant("u", i), "limit": Variant("u", 1)})
            reply = await d.ask(call("ListNetworks", "a{sv}", [query], serial=i + 1000))
            assert reply.signature == "aa{sv}"
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        return grown
    grown = run(go())
    assert len(d.manager._bodies) <= LIST_CACHE_ENTRIES
    assert grown < 256 << 10, f"3,000 distinct ListNetworks queries kept {grown} bytes"


def test_list_cache_is_emptied_when_the_version_moves(d):
    async def go():
        await populate(d)
        for i in range(10):
            await d.ask(call("ListNetworks", "a{sv}", [{"offset": Variant("u", i)}]))
        held = len(d.manager._bodies)
        await d.engine.attach_vm("vm-3", "fcbr1", 3)
        listed = await d.ask(call("ListNetworks", "a{sv}", [{"search": Variant("s", "fcbr1-vlan-3")}]))
        return held, listed
    held, listed = run(go())
    assert held == 10
    assert len(d.manager._bodies) == 1  # the old version's replies all went at once
    assert {e["Name"]: e["VmCount"] for e in unwrap(listed.body[0])}["fcbr1-vlan-3"] == 1


def test_list_entries_and_get_network_are_the_field_table(d):
    async def go():
        await populate(d)
        listed = await d.ask(call("ListNetworks", "a{sv}", [{"search": Variant("s", "fcbr0")}]))
        got = await d.ask(call("GetNetwork", "s", ["fcbr0"]))
        return unwrap(listed.body[0]), unwrap(got.body[0])
    listed, got = run(go())
    assert list(listed[0]) == [f.prop for f in LISTED]
    assert list(got) == [f.prop for f in NETWORK_FIELDS]
    assert got["VmCount"] == 2 and got["Status"] == "active" and got["Path"] == network_path(got["Id"])
    running = [v for v in got["Vms"] if v["VmId"] == "vm-1"][0]
    assert running["State"] == "running" and running["Tap"] == got["Taps"][0]
    assert running["Mac"] == "02:fc:00:00:00:01" and running["VmName"] == "web"


def test_network_object_properties_are_the_field_table(d):
    run(populate(d, vlans=[5]))
    obj = next(iter(d.manager.objects.values()))
    spec = obj.introspect()
    assert {(p.name, p.signature) for p in spec.properties} == {(f.prop, f.sig) for f in EXPORTED}
    assert obj.Name == "fcbr1-vlan-5" and obj.Vlan == 5 and obj.Vms == []


def test_get_managed_objects_from_the_cache_equals_every_objects_properties(d):
    async def go():
        await populate(d)
        root = await d.ask(call("GetManagedObjects", path="/", interface=OBJECT_MANAGER_IFACE))
        under = await d.ask(call("GetManagedObjects", path=MANAGER_PATH, interface=OBJECT_MANAGER_IFACE))
        leaf = await d.ask(call("GetManagedObjects", path=network_path(next(iter(d.manager.objects))),
                                interface=OBJECT_MANAGER_IFACE))
        return root, under, leaf
    root, under, leaf = run(go())
    expected = {network_path(net_id): {NETWORK_IFACE: {f.prop: unwrap(getattr(obj, f.prop)) for f in EXPORTED}}
                for net_id, obj in d.manager.objects.items()}
    assert unwrap(under.body[0]) == expected
    manager = {MANAGER_PATH: {MANAGER_IFACE: {"Version": d.manager.Version, "Host": "node1",
                                              "NetworkCount": 41, "TapCount": 1}}}
    assert unwrap(root.body[0]) == {**expected, **manager}
    assert leaf.body[0] == {}


def test_describe_follows_taps_which_do_not_move_the_engine_version(d):
    async def go():
        await populate(d)
        first = json.loads((await d.ask(call("Describe"))).body[0])
        version = d.engine.version
        await d.engine.create_tap("vm-2", "eth0")
        assert d.engine.version == version
        second = json.loads((await d.ask(call("Describe"))).body[0])
        return first, second
    first, second = run(go())
    vms = lambda doc: {v["vm_id"]: v["state"] for n in doc["networks"] for v in n["vms"]}
    assert vms(first) == {"vm-1": "running", "vm-2": "stopped"}
    assert vms(second) == {"vm-1": "running", "vm-2": "running"}
    assert [n["name"] for n in second["networks"]][-1] == "fcbr1-vlan-1"  # newest first
    assert second["bridges"]["fcbr0"]["present"] is True and second["host"] == "node1"


def test_describe_is_json_with_a_network_per_block_and_a_vm_per_line(d):
    run(populate(d))
    text = run(d.ask(call("Describe"))).body[0]
    doc = json.loads(text)
    net = doc["networks"][0]  # fcbr0, auto-created last
    assert net["name"] == "fcbr0" and set(net) == {f.key for f in NETWORK_FIELDS if f.prop != "Path"}
    lines = text.splitlines()
    assert [json.loads(line.strip().rstrip(","))["vm_id"] for line in lines if '"vm_id"' in line] == ["vm-1", "vm-2"]
    assert lines[:2] == ["{", '  "bridges": {'] and lines[-3:] == ["    }", "  ]", "}"]


def test_a_rolled_back_attachment_is_not_left_in_cached_replies(d, monkeypatch):
    async def go():
        await populate(d)
        await d.ask(call("Describe"))
        net = d.engine.find_network("fcbr1-vlan-2")

        registry = d.engine.registry
        real_commit = registry.commit

        def full(payload):
            raise OSError(28, "No space left on device")

        async def read_during_commit(change=None):
            # a bulk read while the attachment is in memory but not yet on disk
            await d.ask(call("GetManagedObjects", path=MANAGER_PATH, interface=OBJECT_MANAGER_IFACE))
            monkeypatch.setattr(registry.journal, "append", full)
            return await real_commit(change)
        monkeypatch.setattr(registry, "commit", read_during_commit)
        with pytest.raises(E.Internal):
            await d.engine.attach_vm("vm-9", "fcbr1", 2)
        monkeypatch.undo()
        reply = await d.ask(call("GetManagedObjects", path=MANAGER_PATH, interface=OBJECT_MANAGER_IFACE))
        return unwrap(reply.body[0])[network_path(net.id)][NETWORK_IFACE]
    props = run(go())
    assert props["VmCount"] == 0 and props["Vms"] == []


def test_list_bridges_does_not_describe_the_networks(d, monkeypatch):
    run(populate(d))
    monkeypatch.setattr(d.engine, "list_networks", lambda *a: pytest.fail("ListBridges listed the networks"))
    rows = run(d.manager.ListBridges.__wrapped__(d.manager))
    assert [unwrap(r) for r in rows] == [
        {"Name": "fcbr0", "Present": True, "Create": True, "Uplink": "", "VlanFiltering": True},
        {"Name": "fcbr1", "Present": True, "Create": False, "Uplink": "", "VlanFiltering": True}]


def test_a_caller_flooding_bulk_reads_is_refused_beyond_its_queue_and_others_are_not(d):
    async def go():
        await populate(d)
        handler = d.conn.handlers[0]
        answers = [handler(call("Describe", sender=":1.9", serial=i + 1)) for i in range(40)]
        other = await d.ask(call("Describe", sender=":1.10", serial=99))
        for _ in range(100_000):
            if not d.manager.lanes.queued(":1.9"):
                break
            await asyncio.sleep(0)
        return answers, other
    answers, other = run(go())
    refused = [a for a in answers if isinstance(a, Message)]
    per_caller = d.manager.lanes.per_caller
    assert len(refused) == 40 - per_caller
    assert {r.error_name for r in refused} == {LIMITS_EXCEEDED}
    assert "wait for their replies" in refused[0].body[0]
    assert other.signature == "s"
    described = [m for m in d.conn.sent if m.reply_serial <= 40]
    assert len(described) == per_caller  # every accepted call was answered
    assert d.manager.lanes._lanes == {}  # an idle caller holds nothing


def test_a_caller_that_does_not_read_gets_no_more_than_its_unread_budget(d, monkeypatch):
    async def go():
        await populate(d, vlans=range(1, 101))
        one = len((await d.ask(call("Describe", sender=":1.10", serial=1))).body[0])
        monkeypatch.setattr(lanes, "UNREAD_BYTES", int(2.5 * one))
        d.conn.deaf.add(":1.9")
        handler = d.conn.handlers[0]
        for round in range(5):
            for i in range(16):
                handler(call("Describe", sender=":1.9", serial=round * 100 + i + 1))
            reply = await d.ask(call("Describe", sender=":1.10", serial=99))  # a reader is served meanwhile
            assert reply.signature == "s"
        return d.manager.lanes.queued(":1.9")
    queued = run(go())
    to_deaf = [m for m in d.conn.sent if m.destination == ":1.9"]
    assert len(to_deaf) == 3  # past 2.5 replies' worth, it is pinged and gets nothing until it answers
    assert queued == d.manager.lanes.per_caller  # the rest waits for the ping's answer, or is refused
    assert d.conn.pinged.count(":1.9") == 1
