"""The D-Bus API. Each method decodes its arguments, calls the engine and
encodes the answer; errors become D-Bus errors in one place (answering)."""

import asyncio
import contextlib
import functools
import json
import logging
import struct
import time
from collections import OrderedDict

from . import __version__, caller
from .bus import (DBusError, DictElement, Message, MessageType, PremarshalledReply, ServiceInterface, Variant,
                  call, dict_array_body, funnelled_property, method, signal, wants_reply)
from .diagnose import Diagnoser, check_timeout_ms
from .engine import Engine
from .errors import FcnetError, InvalidArgs, NoSuchVm
from .lanes import Lanes, sliced
from .model import Network, check_id, check_nic, excerpt
from .names import (ACCESS_DENIED, ERROR_PREFIX, LIMITS_EXCEEDED, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE,
                    NETWORK_PATH_PREFIX, NO_REPLY, OBJECT_MANAGER_IFACE, PEER_IFACE, network_path)
from .schema import BY_PROP, EXPORTED, LISTED, NETWORK_FIELDS, Field, plain, vm_count
from .traffic import FIELDS as TRAFFIC_FIELDS, SAMPLE_SECONDS, SAMPLES

log = logging.getLogger("fcnetd.service")
SIGNAL_COALESCE_SECONDS = 0.05
PING_SECONDS = 5.0  # a caller still reading its replies answers sooner
LIST_CACHE_BYTES = 8 << 20  # ListNetworks replies kept, one per filter (all 4,094 networks: 1.9 MB)
LIST_CACHE_ENTRIES = 64  # and at most this many of them: a distinct search costs ~1 KB of bookkeeping
FILTER_OPTIONS = {"search": ("s", str), "type": ("s", str), "bridge": ("s", str), "mode": ("s", str),
                  "unused": ("b", bool)}
ADDRESSING_OPTIONS = {"mode": ("s", str), "subnet": ("s", str), "dhcp": ("b", bool)}
ACTOR_OPTION = {"actor": ("s", str)}  # who the change is made for, recorded in the audit trail
CREATE_OPTIONS = {"description": ("s", str), **ADDRESSING_OPTIONS, **ACTOR_OPTION}
ATTACH_OPTIONS = {"vm_name": ("s", str), "nic": ("s", str), "mac": ("s", str), "ip": ("s", str),
                  **ADDRESSING_OPTIONS, **ACTOR_OPTION}
MOVE_OPTIONS = {"mac": ("s", str), "ip": ("s", str), **ADDRESSING_OPTIONS, **ACTOR_OPTION}
TAP_OPTIONS = {"owner_uid": ("u", int), "owner_gid": ("u", int), "tap_name": ("s", str), **ACTOR_OPTION}
TYPE_NAMES = {"s": "string", "b": "boolean", "u": "uint32", "q": "uint16"}
LIST_OPTIONS = {**FILTER_OPTIONS, "offset": ("u", int), "limit": ("u", int)}
PROBE_OPTIONS = {"timeout_ms": ("u", int)}
ISOLATION_TIMEOUT_MS = 1000  # the isolation probe's wait: a frame crosses a bridge in microseconds
TRAFFIC_OPTIONS = {"vm": ("s", str), "nic": ("s", str), "seconds": ("u", int)}
TRAFFIC_SECONDS = int(SAMPLE_SECONDS * SAMPLES)  # the whole history: the default and the most
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
            name = key if len(key) <= 40 and key.isprintable() else excerpt(key)
            raise InvalidArgs(name, f"unknown option; known options are {', '.join(sorted(spec))}")
        sig, kind = spec[key]
        if variant.signature != sig:
            raise InvalidArgs(key, f"must be of D-Bus type '{sig}' ({TYPE_NAMES[sig]}), got '{variant.signature}'")
        out[key] = variant.value
    return out


def change_options(given: dict, spec: dict) -> dict:
    """parse_options for a method that changes state: its `actor` is checked
    and made part of the current call's caller (caller.py), for the audit
    entries the change writes."""
    opts = parse_options(given, spec)
    if "actor" in opts:
        caller.acting_for(caller.check_actor(opts.pop("actor")))
    return opts


def to_variant(f: Field, value) -> Variant:
    if f.sig == "aa{sv}":  # rows of VM_FIELDS, all strings
        value = [{k: Variant("s", v) for k, v in row.items()} for row in value]
    return Variant(f.sig, value)


def variants(engine: Engine, net: Network, fields=NETWORK_FIELDS) -> dict:
    return {f.prop: to_variant(f, f.get(engine, net)) for f in fields}


class Summary:
    __slots__ = ("net", "count", "status", "rates", "entry", "_element")

    def __init__(self, net: Network, count: int, status: str, rates: tuple, entry: dict):
        self.net, self.count, self.status, self.rates, self.entry = net, count, status, rates, entry
        self._element = None

    @property
    def element(self) -> DictElement:
        if self._element is None:
            self._element = DictElement(self.entry)
        return self._element


class Summaries:
    """ListNetworks entries, cached with their marshalled form: a network is
    never edited, so only its VM count, status and rates can change, and most
    entries are reused as they are (building 4,094 entries of Variants costs
    ~80 ms, marshalling them another ~20 ms); an idle network's rates stay 0."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._cache: dict[str, Summary] = {}

    def get(self, net: Network) -> dict:
        return self.summary(net).entry

    def summary(self, net: Network) -> Summary:
        count = vm_count(self.engine, net)
        status = self.engine.status(net)
        rates = self.engine.traffic.rate(net.id)
        hit = self._cache.get(net.id)
        if (hit is not None and hit.net is net and hit.count == count and hit.status == status
                and hit.rates == rates):
            return hit
        hit = self._cache[net.id] = Summary(net, count, status, rates, variants(self.engine, net, LISTED))
        return hit

    def forget(self, net: Network) -> None:
        self._cache.pop(net.id, None)


# -- the wire form of the bulk replies ------------------------------------------
def _put_string(out: bytearray, text: str) -> None:
    raw = text.encode()
    out += struct.pack("<I", len(raw)) + raw + b"\0"


def string_body(text: str) -> bytes:
    """The marshalled body of a reply of signature 's'."""
    out = bytearray()
    _put_string(out, text)
    return bytes(out)


def managed_entry(path: str, interface: str, props: DictElement) -> bytes:
    """One {oa{sa{sv}}} entry of a GetManagedObjects reply, marshalled for
    an 8-aligned start (where every dict entry starts)."""
    out = bytearray()
    _put_string(out, path)
    out += bytes(-len(out) & 3)
    at = len(out)
    out += bytes(4)  # the a{sa{sv}}'s length, filled in below
    out += bytes(-len(out) & 7)
    first = len(out)
    _put_string(out, interface)
    out += bytes(-len(out) & 3)
    out += props.at4 if len(out) & 7 else props.at0
    struct.pack_into("<I", out, at, len(out) - first)
    return bytes(out)


def managed_body(entries: list[bytes]) -> bytes:
    """The marshalled body of a{oa{sa{sv}}} made of managed_entry()s."""
    out = bytearray(8)  # the array's length, then padding to its first entry
    for e in entries:
        out += bytes(-len(out) & 7)
        out += e
    struct.pack_into("<I", out, 0, len(out) - 8)
    return bytes(out)


class Detail:
    __slots__ = ("net", "status", "rates", "vms", "managed", "described")

    def __init__(self, net: Network, status: str, rates: tuple, vms: tuple):
        self.net, self.status, self.rates, self.vms = net, status, rates, vms
        self.managed: bytes | None = None
        self.described: str | None = None


class Details:
    """Per network, its GetManagedObjects entry and its Describe JSON (each
    made when first asked for), kept while what they show is the same. The
    key is the content itself (the network, its status, its attachments and
    their TAPs), not a counter, so nothing that changes them can be missed,
    a rolled-back change included (and its traffic rates, which Describe shows)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._cache: dict[str, Detail] = {}

    def _detail(self, net: Network) -> Detail:
        # Checked for every network on every rebuild: no allocation for the
        # common network without VMs.
        status = self.engine.status(net)
        rates = self.engine.traffic.rate(net.id)
        atts = self.engine.registry.by_network.get(net.id)
        hit = self._cache.get(net.id)
        same = hit is not None and hit.net is net and hit.status == status and hit.rates == rates
        if atts:
            taps = self.engine.taps
            vms = tuple((a, taps.get(a.key)) for a in atts.values())
            if same and hit.vms == vms:
                return hit
        else:
            vms = ()
            if same and not hit.vms:
                return hit
        hit = self._cache[net.id] = Detail(net, status, rates, vms)
        return hit

    def managed(self, net: Network) -> bytes:
        d = self._detail(net)
        if d.managed is None:
            d.managed = managed_entry(network_path(net.id), NETWORK_IFACE,
                                      DictElement(variants(self.engine, net, EXPORTED)))
        return d.managed

    def described(self, net: Network) -> str:
        d = self._detail(net)
        if d.described is None:
            d.described = network_json(plain(self.engine, net))
        return d.described

    def keep_only(self, nets) -> None:
        """Forgets networks that are gone (a sliced pass may have cached one
        that was deleted meanwhile)."""
        if len(self._cache) != len(nets):
            self._cache = {n.id: self._cache[n.id] for n in nets if n.id in self._cache}


def bridge_rows(engine: Engine) -> dict[str, dict]:
    """The allowed bridges: their config and state, nothing of the networks."""
    rows = {}
    for name, cfg in engine.config.bridges.items():
        state = engine.bridges.get(name)
        rows[name] = {"allowed": True, "create": cfg.create, "uplink": cfg.uplink, "mtu": cfg.mtu,
                      "present": state is not None,
                      "vlan_filtering": state.vlan_filtering if state is not None else None}
    return rows


def network_json(view: dict) -> str:
    """One network of Describe, indented for its place in the list, one VM
    a line: json's indenting encoder is pure Python, ~10x slower than its
    compact one, which a network with a thousand VMs would feel."""
    lines = []
    for key in sorted(view):
        value = view[key]
        if key == "vms" and value:
            text = "[\n        " + ",\n        ".join(json.dumps(v, sort_keys=True) for v in value) + "\n      ]"
        else:
            text = json.dumps(value)
        lines.append(f"      {json.dumps(key)}: {text}")
    return "    {\n" + ",\n".join(lines) + "\n    }"


def describe_text(host: str, bridges: dict, networks: list[str]) -> str:
    """Describe's JSON (indent 2, sorted keys) from each network's JSON,
    already indented for its place in the list ("networks" sorts last)."""
    head = json.dumps({"bridges": bridges, "host": host}, indent=2, sort_keys=True)[:-2]
    if not networks:
        return head + ',\n  "networks": []\n}'
    return head + ',\n  "networks": [\n' + ",\n".join(networks) + "\n  ]\n}"


def check_rows(checks) -> list[dict]:
    """Diagnose's checks as aa{sv}: strings, and the DHCP probe's servers (aa{sv})."""
    rows = []
    for check in checks:
        row = check.row()
        servers = row.pop("Servers", None)
        out = {k: Variant("s", v) for k, v in row.items()}
        if servers is not None:
            out["Servers"] = Variant("aa{sv}", [{k: Variant("s", v) for k, v in s.items()} for s in servers])
        rows.append(out)
    return rows


class NetworkObject(ServiceInterface):
    """One network; its properties are made from schema.EXPORTED below."""

    def __init__(self, engine: Engine, net: Network, stats: RequestStats):
        super().__init__(NETWORK_IFACE)
        self.engine, self.net, self.stats = engine, net, stats

    @method()
    @funnel
    async def Delete(self):
        await self.engine.delete_network(self.net.id)

    def emit_usage(self) -> None:
        # Vms can hold a thousand entries: invalidate it rather than resend it
        # on every VM start; clients that show it fetch it again.
        self.emit_properties_changed(
            {p: BY_PROP[p].get(self.engine, self.net) for p in ("VmCount", "Taps", "Status")}, ["Vms"])


def _property(f: Field):
    def getter(self):
        return to_variant(f, f.get(self.engine, self.net)).value
    getter.__name__ = f.prop
    getter.__annotations__ = {"return": f.sig}  # dbus-fast reads the D-Bus type from here
    return funnelled_property()(getter)


for _f in EXPORTED:
    setattr(NetworkObject, _f.prop, _property(_f))
del _f


class Manager(ServiceInterface):
    def __init__(self, engine: Engine, conn):
        super().__init__(MANAGER_IFACE)
        self.engine, self.conn = engine, conn
        self.stats = RequestStats()
        self.summaries = Summaries(engine)
        self.details = Details(engine)
        self.lanes = Lanes(self._read_by)
        # ListNetworks replies by query, all of one engine version: cleared
        # at once when it moves, capped in entries and in bytes.
        self._bodies: OrderedDict[tuple, bytes] = OrderedDict()
        self._bodies_version = None
        self._body_bytes = 0
        # Whole Describe and GetManagedObjects replies, with the generation they show.
        self._whole: dict[str, tuple[tuple, bytes]] = {}
        self.objects: dict[str, NetworkObject] = {}
        self._dirty: set[str] = set()
        self._flush_handle = None
        # Reload: the daemon's reload, set by the daemon (it owns the config).
        self.reload_config = None
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

    def drift_detected(self, what: str, detail: str) -> None:
        """The engine repaired a change made behind fcnetd's back."""
        self.DriftDetected(what, detail)

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

    def _generation(self) -> tuple:
        """Moves whenever anything Describe or GetManagedObjects shows may
        have: engine.version (networks, attachments, bridges, config),
        engine.tap_generation (every TAP change, reconcile's included) and
        the traffic sample (Describe's rates)."""
        return (self.engine.version, self.engine.tap_generation, self.engine.traffic.seq)

    # -- bulk reads: one at a time per caller, sliced, cached ------------------
    def install_fast_paths(self) -> None:
        """To be installed after the access gate, which has then checked
        the caller and the signature."""
        self.conn.add_message_handler(self._bulk_call)

    def _bulk_call(self, msg):
        """Takes the bulk reads out of dbus-fast's dispatch into the caller's
        lane (lanes.py), answered from marshalled caches."""
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if msg.interface == OBJECT_MANAGER_IFACE:
            if msg.member != "GetManagedObjects" or msg.signature != "":
                return None
            build, name = self._managed_objects_reply, "GetManagedObjects"
        elif msg.path == MANAGER_PATH and msg.interface in (MANAGER_IFACE, None):
            spec = self._bulk_methods.get((msg.member, msg.signature))
            if spec is None:
                return None
            build, name = getattr(self, spec), msg.member
        else:
            return None
        if not wants_reply(msg):
            return True  # a read nobody waits for
        if not self.lanes.submit(msg.sender, lambda: self._serve(msg, name, build)):
            self.stats.observe(name, "LimitsExceeded", 0.0)
            return Message.new_error(
                msg, LIMITS_EXCEEDED,
                f"{name}: this connection already has {self.lanes.per_caller} bulk reads in progress "
                "or queued; wait for their replies before sending more")
        return True

    _bulk_methods = {("ListNetworks", "a{sv}"): "_list_networks_reply",
                     ("CountNetworks", "a{sv}"): "_count_networks_reply",
                     ("GetNetwork", "s"): "_get_network_reply",
                     ("Describe", ""): "_describe_reply"}

    async def _serve(self, msg, name: str, build) -> int:
        """Answers one bulk read; returns the bytes of a large reply (the
        small ones, errors included, are not worth counting)."""
        try:
            with answering(self.stats, name):
                reply = await build(msg)
        except DBusError as e:
            reply = Message.new_error(msg, e.type, e.text)
        self.conn.send(reply)
        return len(reply.raw_body) if isinstance(reply, PremarshalledReply) else 0

    async def _read_by(self, caller: str) -> bool:
        """Pings the caller: the bus delivers the ping behind our replies, so
        an answer means they were read. False if that cannot be known."""
        try:
            await asyncio.wait_for(call(self.conn, caller, "/", PEER_IFACE, "Ping"), PING_SECONDS)
        except asyncio.TimeoutError:
            return False  # a client that answers no ping (not any D-Bus library): paced instead
        except DBusError as e:
            # AccessDenied: a bus policy without fcnetd's ping rule; NoReply:
            # the caller left.
            return e.type not in (ACCESS_DENIED, NO_REPLY)
        return True

    async def _list_networks_reply(self, msg):
        return PremarshalledReply(msg, "aa{sv}", self._list_body(self._query(msg.body[0])))

    async def _count_networks_reply(self, msg):
        return Message.new_method_return(msg, "u", [self._count(msg.body[0])])

    async def _get_network_reply(self, msg):
        return Message.new_method_return(msg, "a{sv}", [self._network(msg.body[0])])

    async def _describe_reply(self, msg):
        return PremarshalledReply(msg, "s", await self._whole_reply("Describe"))

    async def _managed_objects_reply(self, msg):
        """dbus-fast's own GetManagedObjects calls every property getter of
        every object and checks the whole result after each (quadratic:
        ~0.4 s at 4,094 networks); this answers from marshalled entries."""
        path = msg.path
        networks = path == "/" or NETWORK_PATH_PREFIX.startswith(path + "/")
        manager = path == "/" or MANAGER_PATH.startswith(path + "/")
        if not networks:
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [{}])
        kind = "objects+manager" if manager else "objects"
        return PremarshalledReply(msg, "a{oa{sa{sv}}}", await self._whole_reply(kind))

    async def _whole_reply(self, kind: str) -> bytes:
        """A reply over every network, kept until the generation moves. Its
        per-network pieces are brought up to date in slices first (other
        calls run in between); the reply is then put together in one go,
        so it shows one moment, not a mix."""
        hit = self._whole.get(kind)
        if hit is not None and hit[0] == self._generation():
            return hit[1]
        piece = self.details.described if kind == "Describe" else self.details.managed
        await sliced(list(self.engine.registry.networks.values()), piece)
        nets = self.engine.list_networks() if kind == "Describe" else list(self.engine.registry.networks.values())
        pieces = [piece(n) for n in nets]
        self.details.keep_only(nets)
        if kind == "Describe":
            body = string_body(describe_text(self.engine.host, bridge_rows(self.engine), pieces))
        else:
            entries = pieces
            if kind == "objects+manager":
                entries.append(managed_entry(MANAGER_PATH, MANAGER_IFACE, DictElement(self._manager_props())))
            body = managed_body(entries)
        if self._whole.get(kind, (None,))[0] != self._generation():
            self._whole = {k: v for k, v in self._whole.items() if v[0] == self._generation()}
        self._whole[kind] = (self._generation(), body)
        return body

    def _manager_props(self) -> dict:
        return {"Version": Variant("s", __version__), "Host": Variant("s", self.engine.host),
                "NetworkCount": Variant("u", len(self.engine.registry.networks)),
                "TapCount": Variant("u", len(self.engine.taps))}

    # -- ListNetworks, CountNetworks, GetNetwork --------------------------------
    @staticmethod
    def _query(filter: dict) -> tuple[str, str, str, str, bool, int, int]:
        f = parse_options(filter, LIST_OPTIONS)
        return (f.get("search", ""), f.get("type", ""), f.get("bridge", ""), f.get("mode", ""),
                f.get("unused", False), f.get("offset", 0), f.get("limit", 0))

    def _select(self, query: tuple[str, str, str, str, bool, int, int]) -> list[Network]:
        search, kind, bridge, mode, unused, offset, limit = query
        nets = self.engine.list_networks(search, kind, bridge, mode, unused)
        return nets[offset:offset + (limit or len(nets))]

    def _list_body(self, query: tuple[str, str, str, str, bool, int, int]) -> bytes:
        """The marshalled reply, kept per query until anything listed changes:
        the web UI and scripts ask the same questions again and again. Every
        reply kept is of the current version, so a move clears them all, and
        distinct queries (each search, each offset) evict each other."""
        version = (self.engine.version, self.engine.traffic.seq)  # the rates move with each sample
        if version != self._bodies_version:
            self._bodies.clear()
            self._bodies_version, self._body_bytes = version, 0
        body = self._bodies.get(query)
        if body is not None:
            self._bodies.move_to_end(query)
            return body
        body = dict_array_body([self.summaries.summary(n).element for n in self._select(query)])
        self._bodies[query] = body
        self._body_bytes += len(body)
        while len(self._bodies) > 1 and (self._body_bytes > LIST_CACHE_BYTES
                                         or len(self._bodies) > LIST_CACHE_ENTRIES):
            self._body_bytes -= len(self._bodies.popitem(last=False)[1])
        return body

    def _count(self, filter: dict) -> int:
        f = parse_options(filter, FILTER_OPTIONS)
        return len(self.engine.list_networks(f.get("search", ""), f.get("type", ""), f.get("bridge", ""),
                                             f.get("mode", ""), f.get("unused", False)))

    def _network(self, ref: str) -> dict:
        return variants(self.engine, self.engine.find_network(ref))

    # -- methods ---------------------------------------------------------------
    # ListNetworks, CountNetworks, GetNetwork and Describe normally take the
    # lanes (_bulk_call); these declarations serve introspection.
    @method()
    @funnel
    async def CreateNetwork(self, name: "s", bridge: "s", vlan: "q", options: "a{sv}") -> "o":
        opts = change_options(options, CREATE_OPTIONS)
        net = await self.engine.create_network(name, bridge, vlan, opts.get("description", ""),
                                               mode=opts.get("mode", "bridge"), subnet=opts.get("subnet", ""),
                                               dhcp=opts.get("dhcp"))
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
    async def DeleteNetworkWithOptions(self, network: "s", options: "a{sv}"):
        # DeleteNetwork with an `actor` for the audit trail (the web UI's
        # signed-in user): the contract's signature cannot grow an argument.
        change_options(options, ACTOR_OPTION)
        await self.engine.delete_network(network)

    @method()
    @funnel
    async def Reload(self):
        # systemctl reload's ExecReload: answers once the new config is in
        # force and reconciled, so the reload job ends when the reload does.
        await self.reload_config("Reload call")

    @method()
    @funnel
    async def GetNetwork(self, network: "s") -> "a{sv}":
        return self._network(network)

    @method()
    @funnel
    async def ListNetworks(self, filter: "a{sv}") -> "aa{sv}":
        return [self.summaries.get(n) for n in self._select(self._query(filter))]

    @method()
    @funnel
    async def CountNetworks(self, filter: "a{sv}") -> "u":
        return self._count(filter)

    @method()
    @funnel
    async def AttachVm(self, vm_id: "s", bridge: "s", vlan: "q", options: "a{sv}") -> "o":
        opts = change_options(options, ATTACH_OPTIONS)
        net = await self.engine.attach_vm(vm_id, bridge, vlan, opts.get("vm_name", ""),
                                          opts.get("nic", "eth0"), opts.get("mac", ""), opts.get("ip", ""),
                                          opts.get("mode"), opts.get("subnet"), opts.get("dhcp"))
        return self._path(net)

    @method()
    @funnel
    async def MoveVm(self, vm_id: "s", nic: "s", bridge: "s", vlan: "q", options: "a{sv}") -> "o":
        opts = change_options(options, MOVE_OPTIONS)
        net = await self.engine.move_vm(vm_id, nic, bridge, vlan, opts.get("mac", ""), opts.get("ip", ""),
                                        opts.get("mode"), opts.get("subnet"), opts.get("dhcp"))
        return self._path(net)

    @method()
    @funnel
    async def DetachVm(self, vm_id: "s", nic: "s"):
        await self.engine.detach_vm(vm_id, nic)

    @method()
    @funnel
    async def CreateTap(self, vm_id: "s", nic: "s", options: "a{sv}") -> "s":
        opts = change_options(options, TAP_OPTIONS)
        return await self.engine.create_tap(vm_id, nic, opts.get("owner_uid"), opts.get("owner_gid"),
                                            opts.get("tap_name", ""))

    @method()
    @funnel
    async def DeleteTap(self, vm_id: "s", nic: "s"):
        await self.engine.delete_tap(vm_id, nic)

    @method()
    @funnel
    async def Describe(self) -> "s":
        return describe_text(self.engine.host, bridge_rows(self.engine),
                             [self.details.described(n) for n in self.engine.list_networks()])

    @method()
    @funnel
    async def ListBridges(self) -> "aa{sv}":
        return [{"Name": Variant("s", name), "Present": Variant("b", row["present"]),
                 "Create": Variant("b", row["create"]), "Uplink": Variant("s", row["uplink"]),
                 "VlanFiltering": Variant("b", bool(row["vlan_filtering"]))}
                for name, row in bridge_rows(self.engine).items()]

    # -- traffic ---------------------------------------------------------------
    @method()
    @funnel
    async def GetTraffic(self, network: "s", options: "a{sv}") -> "aa{sv}":
        """The network's (or one VM NIC's) rates, oldest first, one entry a sample."""
        opts = parse_options(options, TRAFFIC_OPTIONS)
        seconds = opts.get("seconds", TRAFFIC_SECONDS)
        if not 1 <= seconds <= TRAFFIC_SECONDS:
            raise InvalidArgs("seconds", f"must be 1 to {TRAFFIC_SECONDS} (fcnetd keeps one hour of traffic)")
        if "nic" in opts and "vm" not in opts:
            raise InvalidArgs("nic", "goes with option vm (the VM whose NIC it is)")
        net = self.engine.find_network(network)
        history = self.engine.traffic
        if "vm" in opts:
            vm, nic = check_id(opts["vm"], "vm"), check_nic(opts.get("nic", "eth0"))
            att = self.engine.registry.attachments.get((vm, nic))
            if att is None or att.network_id != net.id:
                raise NoSuchVm(f"VM {vm} has no NIC {nic} attached to network {net.name}")
            series = history.nic_series(vm, nic, seconds)
        else:
            series = history.network_series(net.id, seconds)
        return [{"Time": Variant("d", at), **{k: Variant("d", float(v)) for k, v in zip(TRAFFIC_FIELDS, rates)}}
                for at, rates in series]

    # -- signals ---------------------------------------------------------------
    @signal()
    def DriftDetected(self, what: "s", detail: "s") -> "ss":
        """A change made behind fcnetd's back, and what was done (engine.TAP_REPAIRS...)."""
        return [what, detail]

    # -- Diagnose --------------------------------------------------------------
    @method()
    @funnel
    async def Diagnose(self, network: "s") -> "aa{sv}":
        return check_rows(await Diagnoser(self.engine).network(network, False, 0))

    @method()
    @funnel
    async def ProbeDhcp(self, network: "s", options: "a{sv}") -> "aa{sv}":
        """Diagnose's checks and the DHCP probe (check dhcp.probe)."""
        opts = parse_options(options, PROBE_OPTIONS)
        timeout = check_timeout_ms(opts.get("timeout_ms", 2000))
        return check_rows(await Diagnoser(self.engine).network(network, True, timeout))

    @method()
    @funnel
    async def ProbeIsolation(self, network: "s", options: "a{sv}") -> "aa{sv}":
        """Diagnose's checks and the isolation probe (check vlan.isolation)."""
        opts = parse_options(options, PROBE_OPTIONS)
        timeout = check_timeout_ms(opts.get("timeout_ms", ISOLATION_TIMEOUT_MS))
        return check_rows(await Diagnoser(self.engine).network(network, timeout=timeout, isolation=True))

    @method()
    @funnel
    async def DiagnoseVm(self, vm_id: "s", nic: "s") -> "aa{sv}":
        return check_rows(await Diagnoser(self.engine).vm(vm_id, nic))

    @method()
    @funnel
    async def DiagnosePath(self, vm_a: "s", vm_b: "s") -> "aa{sv}":
        return check_rows(await Diagnoser(self.engine).path(vm_a, vm_b))

    # -- properties ------------------------------------------------------------
    @funnelled_property()
    def Version(self) -> "s":
        return __version__

    @funnelled_property()
    def Host(self) -> "s":
        return self.engine.host

    @funnelled_property()
    def NetworkCount(self) -> "u":
        return len(self.engine.registry.networks)

    @funnelled_property()
    def TapCount(self) -> "u":
        return len(self.engine.taps)
