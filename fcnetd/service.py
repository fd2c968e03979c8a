"""The D-Bus API. Each method decodes its arguments, calls the engine and
encodes the answer; errors become D-Bus errors in one place (answering)."""

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections import OrderedDict

from . import __version__
from .bus import (DBusError, DictElement, MessageType, PremarshalledReply, PropertyAccess, ServiceInterface,
                  Variant, dbus_property, dict_array_body, method, wants_reply)
from .engine import Engine
from .errors import FcnetError, InvalidArgs
from .model import Network
from .names import ERROR_PREFIX, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE, network_path

log = logging.getLogger("fcnetd.service")
SIGNAL_COALESCE_SECONDS = 0.05
LIST_CACHE_BYTES = 8 << 20  # ListNetworks replies kept, one per filter (all 4,094 networks: 1.9 MB)
FILTER_OPTIONS = {"search": ("s", str), "type": ("s", str), "bridge": ("s", str)}
LIST_OPTIONS = {**FILTER_OPTIONS, "offset": ("u", int), "limit": ("u", int)}
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RequestStats:
    """Requests by method and result, and a latency histogram, for metrics."""

    def __init__(self):
        self.count: dict[tuple[str, str], int] = {}
        self.buckets = {b: 0 for b in LATENCY_BUCKETS}
        self.total = 0
        self.seconds = 0.0

    def observe(self, name: str, result: str, seconds: float) -> None:
        key = (name, result)
        self.count[key] = self.count.get(key, 0) + 1
        self.total += 1
        self.seconds += seconds
        for b in LATENCY_BUCKETS:
            if seconds <= b:
                self.buckets[b] += 1
                break


@contextlib.contextmanager
def answering(stats: RequestStats, name: str):
    """Turns domain errors into D-Bus errors; anything unexpected is logged
    with its traceback and reaches the caller only as Error.Internal. Every
    call is counted by method and result."""
    started = time.perf_counter()
    result = "ok"
    try:
        yield
    except FcnetError as e:
        result = e.name if not isinstance(e, InvalidArgs) else "InvalidArgs"
        raise DBusError(e.dbus_name, str(e)) from None
    except Exception:
        result = "Internal"
        log.exception("%s failed", name)
        raise DBusError(ERROR_PREFIX + "Internal",
                        f"{name} failed inside fcnetd; the daemon's log has the details") from None
    finally:
        stats.observe(name, result, time.perf_counter() - started)


def funnel(fn):
    """Every D-Bus method goes through answering()."""
    @functools.wraps(fn)
    async def wrapper(self, *args):
        with answering(self.stats, fn.__name__):
            return await fn(self, *args)
    return wrapper


def parse_options(given: dict, spec: dict) -> dict:
    """a{sv} options to plain values; spec maps key -> (dbus type, python type)."""
    out = {}
    for key, variant in given.items():
        if key not in spec:
            raise InvalidArgs(key, f"unknown option; known options are {', '.join(sorted(spec))}")
        sig, kind = spec[key]
        if variant.signature != sig:
            raise InvalidArgs(key, f"must be of D-Bus type '{sig}', got '{variant.signature}'")
        out[key] = variant.value
    return out


class Summary:
    __slots__ = ("net", "count", "status", "entry", "_element")

    def __init__(self, net: Network, count: int, status: str, entry: dict):
        self.net, self.count, self.status, self.entry = net, count, status, entry
        self._element = None

    @property
    def element(self) -> DictElement:
        if self._element is None:
            self._element = DictElement(self.entry)
        return self._element


class Summaries:
    """ListNetworks entries, cached with their marshalled form: a network is
    never edited, so only its VM count and status can change, and most
    entries are reused as they are (building 4,094 entries of Variants costs
    ~80 ms, marshalling them another ~20 ms)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._cache: dict[str, Summary] = {}

    def get(self, net: Network) -> dict:
        return self.summary(net).entry

    def summary(self, net: Network) -> Summary:
        count = len(self.engine.registry.by_network.get(net.id, ()))
        status = self.engine.status(net)
        hit = self._cache.get(net.id)
        if hit is not None and hit.net is net and hit.count == count and hit.status == status:
            return hit
        entry = {
            "Id": Variant("s", net.id), "Name": Variant("s", net.name),
            "Bridge": Variant("s", net.bridge), "Vlan": Variant("q", net.vlan),
            "Type": Variant("s", net.kind), "Host": Variant("s", net.host),
            "Created": Variant("s", net.created), "Origin": Variant("s", net.origin),
            "Description": Variant("s", net.description), "VmCount": Variant("u", count),
            "Status": Variant("s", status), "Path": Variant("o", network_path(net.id)),
        }
        hit = self._cache[net.id] = Summary(net, count, status, entry)
        return hit

    def forget(self, net: Network) -> None:
        self._cache.pop(net.id, None)


def vm_entries(engine: Engine, net: Network) -> list[dict]:
    view = engine.vms_of(net)
    return [{"VmId": Variant("s", v["vm_id"]), "VmName": Variant("s", v["vm_name"]),
             "Nic": Variant("s", v["nic"]), "Mac": Variant("s", v["mac"]),
             "Attached": Variant("s", v["attached"]), "Tap": Variant("s", v["tap"]),
             "State": Variant("s", v["state"])} for v in view]


def network_detail(summaries: Summaries, engine: Engine, net: Network) -> dict:
    d = dict(summaries.get(net))
    d["Vms"] = Variant("aa{sv}", vm_entries(engine, net))
    d["Taps"] = Variant("as", [t.name for t in engine.taps_of(net)])
    return d


class NetworkObject(ServiceInterface):
    def __init__(self, engine: Engine, net: Network, stats: RequestStats):
        super().__init__(NETWORK_IFACE)
        self.engine, self.net, self.stats = engine, net, stats

    @method()
    @funnel
    async def Delete(self):
        await self.engine.delete_network(self.net.id)

    @dbus_property(access=PropertyAccess.READ)
    def Id(self) -> "s":
        return self.net.id

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> "s":
        return self.net.name

    @dbus_property(access=PropertyAccess.READ)
    def Bridge(self) -> "s":
        return self.net.bridge

    @dbus_property(access=PropertyAccess.READ)
    def Vlan(self) -> "q":
        return self.net.vlan

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":
        return self.net.kind

    @dbus_property(access=PropertyAccess.READ)
    def Host(self) -> "s":
        return self.net.host

    @dbus_property(access=PropertyAccess.READ)
    def Created(self) -> "s":
        return self.net.created

    @dbus_property(access=PropertyAccess.READ)
    def Origin(self) -> "s":
        return self.net.origin

    @dbus_property(access=PropertyAccess.READ)
    def Description(self) -> "s":
        return self.net.description

    @dbus_property(access=PropertyAccess.READ)
    def VmCount(self) -> "u":
        return len(self.engine.registry.by_network.get(self.net.id, {}))

    @dbus_property(access=PropertyAccess.READ)
    def Vms(self) -> "aa{sv}":
        return vm_entries(self.engine, self.net)

    @dbus_property(access=PropertyAccess.READ)
    def Taps(self) -> "as":
        return [t.name for t in self.engine.taps_of(self.net)]

    @dbus_property(access=PropertyAccess.READ)
    def Status(self) -> "s":
        return self.engine.status(self.net)

    def emit_usage(self) -> None:
        # Vms can hold a thousand entries: invalidate it rather than resend it
        # on every VM start; clients that show it fetch it again.
        self.emit_properties_changed(
            {"VmCount": self.VmCount, "Taps": self.Taps, "Status": self.Status}, ["Vms"])


class Manager(ServiceInterface):
    def __init__(self, engine: Engine, conn):
        super().__init__(MANAGER_IFACE)
        self.engine, self.conn = engine, conn
        self.stats = RequestStats()
        self.summaries = Summaries(engine)
        self._bodies: OrderedDict[tuple, tuple[tuple, bytes]] = OrderedDict()  # query -> (version, body)
        self._body_bytes = 0
        self.objects: dict[str, NetworkObject] = {}
        self._dirty: set[str] = set()
        self._flush_handle = None
        engine.on_network_added = self._added
        engine.on_network_removed = self._removed
        engine.on_network_changed = self._changed

    def method_signatures(self) -> dict[tuple[str, str], str]:
        """(interface, member) -> in-signature of every method we serve."""
        out = {}
        for spec in (self.introspect(), NetworkObject(None, None, None).introspect()):
            for m in spec.methods:
                out[(spec.name, m.name)] = "".join(a.signature for a in m.in_args)
        return out

    def export_all(self) -> None:
        self.conn.export(MANAGER_PATH, self)
        for net in self.engine.registry.networks.values():
            self._added(net, announce=False)

    # -- engine observers --------------------------------------------------
    def _added(self, net: Network, announce: bool = True) -> None:
        obj = NetworkObject(self.engine, net, self.stats)
        self.objects[net.id] = obj
        self.conn.export(network_path(net.id), obj)
        if announce:
            self._counts_changed()

    def _removed(self, net: Network) -> None:
        self.summaries.forget(net)
        if self.objects.pop(net.id, None) is not None:
            self.conn.unexport(network_path(net.id))
        self._dirty.discard(net.id)
        self._counts_changed()

    def _changed(self, net: Network) -> None:
        # Bursts of VM starts coalesce into one PropertiesChanged per network.
        self._dirty.add(net.id)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(SIGNAL_COALESCE_SECONDS, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for net_id in dirty:
            if (obj := self.objects.get(net_id)) is not None:
                obj.emit_usage()
        self.emit_properties_changed({"TapCount": len(self.engine.taps)})

    def _counts_changed(self) -> None:
        self.emit_properties_changed({"NetworkCount": len(self.engine.registry.networks)})

    def _path(self, net: Network) -> str:
        return network_path(net.id)

    # -- methods ---------------------------------------------------------------
    @method()
    @funnel
    async def CreateNetwork(self, name: "s", bridge: "s", vlan: "q", options: "a{sv}") -> "o":
        opts = parse_options(options, {"description": ("s", str)})
        net = await self.engine.create_network(name, bridge, vlan, opts.get("description", ""))
        return self._path(net)

    @method()
    @funnel
    async def EnsureNetwork(self, bridge: "s", vlan: "q") -> "ob":
        net, created = await self.engine.ensure_network(bridge, vlan)
        return [self._path(net), created]

    @method()
    @funnel
    async def DeleteNetwork(self, network: "s"):
        await self.engine.delete_network(network)

    @method()
    @funnel
    async def GetNetwork(self, network: "s") -> "a{sv}":
        return network_detail(self.summaries, self.engine, self.engine.find_network(network))

    @staticmethod
    def _query(filter: dict) -> tuple[str, str, str, int, int]:
        f = parse_options(filter, LIST_OPTIONS)
        return (f.get("search", ""), f.get("type", ""), f.get("bridge", ""), f.get("offset", 0),
                f.get("limit", 0))

    def _select(self, query: tuple[str, str, str, int, int]) -> list[Network]:
        search, kind, bridge, offset, limit = query
        nets = self.engine.list_networks(search, kind, bridge)
        return nets[offset:offset + (limit or len(nets))]

    def _list_body(self, query: tuple[str, str, str, int, int]) -> bytes:
        """The marshalled reply, kept per query until anything listed changes:
        the web UI and scripts ask the same questions again and again."""
        version = self.engine.version
        hit = self._bodies.get(query)
        if hit is not None and hit[0] == version:
            self._bodies.move_to_end(query)
            return hit[1]
        body = dict_array_body([self.summaries.summary(n).element for n in self._select(query)])
        if hit is not None:
            del self._bodies[query]
            self._body_bytes -= len(hit[1])
        self._bodies[query] = (version, body)
        self._body_bytes += len(body)
        while self._body_bytes > LIST_CACHE_BYTES and len(self._bodies) > 1:
            self._body_bytes -= len(self._bodies.popitem(last=False)[1][1])
        return body

    @method()
    @funnel
    async def ListNetworks(self, filter: "a{sv}") -> "aa{sv}":
        # Calls normally take the marshalled path in _list_networks_call;
        # this one serves introspection and calls that name no interface.
        return [self.summaries.get(n) for n in self._select(self._query(filter))]

    def install_fast_paths(self) -> None:
        """To be installed after the access gate, which has then checked
        the caller and the signature."""
        self.conn.add_message_handler(self._list_networks_call)

    def _list_networks_call(self, msg):
        """ListNetworks answered from the entries' cached marshalled bytes."""
        if (msg.member != "ListNetworks" or msg.interface != MANAGER_IFACE or msg.path != MANAGER_PATH
                or msg.message_type != MessageType.METHOD_CALL or msg.signature != "a{sv}"):
            return None
        with answering(self.stats, "ListNetworks"):  # a DBusError raised here is sent as the reply
            body = self._list_body(self._query(msg.body[0]))
        if wants_reply(msg):
            self.conn.send(PremarshalledReply(msg, "aa{sv}", body))
        return True

    @method()
    @funnel
    async def CountNetworks(self, filter: "a{sv}") -> "u":
        f = parse_options(filter, FILTER_OPTIONS)
        return len(self.engine.list_networks(f.get("search", ""), f.get("type", ""), f.get("bridge", "")))

    @method()
    @funnel
    async def AttachVm(self, vm_id: "s", bridge: "s", vlan: "q", options: "a{sv}") -> "o":
        opts = parse_options(options, {"vm_name": ("s", str), "nic": ("s", str), "mac": ("s", str)})
        net = await self.engine.attach_vm(vm_id, bridge, vlan, opts.get("vm_name", ""),
                                          opts.get("nic", "eth0"), opts.get("mac", ""))
        return self._path(net)

    @method()
    @funnel
    async def DetachVm(self, vm_id: "s", nic: "s"):
        await self.engine.detach_vm(vm_id, nic)

    @method()
    @funnel
    async def CreateTap(self, vm_id: "s", nic: "s", options: "a{sv}") -> "s":
        opts = parse_options(options, {"owner_uid": ("u", int), "owner_gid": ("u", int),
                                              "tap_name": ("s", str)})
        return await self.engine.create_tap(vm_id, nic, opts.get("owner_uid"), opts.get("owner_gid"),
                                            opts.get("tap_name", ""))

    @method()
    @funnel
    async def DeleteTap(self, vm_id: "s", nic: "s"):
        await self.engine.delete_tap(vm_id, nic)

    @method()
    @funnel
    async def Describe(self) -> "s":
        return json.dumps(self.engine.describe(), indent=2, sort_keys=True)

    @method()
    @funnel
    async def ListBridges(self) -> "aa{sv}":
        out = []
        for name, info in self.engine.describe()["bridges"].items():
            out.append({"Name": Variant("s", name), "Present": Variant("b", info["present"]),
                        "Create": Variant("b", info["create"]), "Uplink": Variant("s", info["uplink"]),
                        "VlanFiltering": Variant("b", bool(info["vlan_filtering"]))})
        return out

    # -- properties ------------------------------------------------------------
    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> "s":
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def Host(self) -> "s":
        return self.engine.host

    @dbus_property(access=PropertyAccess.READ)
    def NetworkCount(self) -> "u":
        return len(self.engine.registry.networks)

    @dbus_property(access=PropertyAccess.READ)
    def TapCount(self) -> "u":
        return len(self.engine.taps)
