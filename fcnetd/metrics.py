"""Prometheus metrics (prometheus-client imported here only).

The daemon refreshes an immutable Snapshot about once a second: the event
loop copies its state (cheap), a worker thread adds the TAP counters from
/proc/net/dev. The HTTP thread renders a scrape from the latest snapshot and
caches the text until the next one, so a scrape does no netlink and no file
I/O and never waits for the event loop. The same snapshot feeds the traffic
history (traffic.py), with or without the HTTP side.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
                                    InfoMetricFamily, SummaryMetricFamily)
from prometheus_client.registry import Collector

from . import __version__, ipam, nat as natmod, procstats
from .traffic import TapCounters
from .firewall import Firewall
from .schema import LABELS
from .service import LATENCY_BUCKETS

REFRESH_SECONDS = 1.0
NETWORK_LABELS = [f.label for f in LABELS]  # fcnetd_network_info's, from the field table
NAME_AT = NETWORK_LABELS.index("network")
log = logging.getLogger("fcnetd.metrics")


@dataclass(frozen=True)
class TapRow:
    tap: str
    vm: str
    nic: str
    network: str
    up: bool
    carrier: bool
    counters: procstats.Counters | None
    network_id: str = ""
    index: int = 0


@dataclass(frozen=True)
class Snapshot:
    taken: float
    host: str
    networks: tuple  # (NETWORK_LABELS values, kind, vms, taps)
    taps: tuple[TapRow, ...]
    bridges: tuple  # (name, present, up, vlan_filtering)
    requests: dict
    latency_buckets: dict
    latency_count: int
    latency_sum: float
    registry_writes: dict
    registry_write_seconds: tuple  # (count, sum)
    reconcile: dict
    access_denied: int
    nat: tuple = ()  # (network, addresses used, free, leases, {"out"/"in": (packets, bytes)}, dnsmasq restarts)


def capture(daemon, nat: bool = True) -> dict:
    """Runs in the event loop: copies what the snapshot needs, nothing more
    (nat: the nat networks' figures too, which only a scrape shows)."""
    engine = daemon.engine
    reg = engine.registry
    tap_count: dict[str, int] = {}
    taps = []
    for key, tap in engine.taps.items():
        att = reg.attachments.get(key)
        net = reg.networks.get(att.network_id) if att else None
        if net is not None:
            tap_count[net.id] = tap_count.get(net.id, 0) + 1
        taps.append((tap.name, key[0], key[1], net.name if net else "", tap.up, tap.carrier,
                     net.id if net else "", tap.index))
    networks = [(tuple(str(f.get(engine, net)) for f in LABELS), net.kind,
                 len(reg.by_network.get(net.id, ())), tap_count.get(net.id, 0))
                for net in reg.networks.values()]
    bridges = [(name, st is not None, bool(st and st.up), bool(st and st.vlan_filtering))
               for name, st in ((n, engine.bridges.get(n)) for n in engine.config.bridges)]
    stats = daemon.manager.stats
    sources = engine.nat.metric_sources() if nat and engine.nat is not None else {}
    nat = []
    for net_id in sources:
        net = reg.networks.get(net_id)
        if net is None:
            continue
        used = sum(1 for a in reg.by_network.get(net_id, {}).values() if a.ip)
        nat.append((net_id, net.name, used, ipam.capacity(net.network) - used))
    return {
        "host": engine.host, "networks": tuple(networks), "taps": taps, "bridges": tuple(bridges),
        "requests": dict(stats.count), "latency_buckets": dict(stats.buckets),
        "latency_count": stats.total, "latency_sum": stats.seconds,
        "registry_writes": dict(engine.stats.registry_writes),
        "registry_write_seconds": (engine.stats.registry_write_count, engine.stats.registry_write_sum),
        "reconcile": dict(engine.stats.reconcile),
        "access_denied": daemon.gate.denied if daemon.gate else 0,
        "nat": tuple(nat), "nat_sources": sources,
    }


_nft_reader: Firewall | None = None  # the worker thread's own (refreshes run one at a time)


def build(state: dict, read_counters=procstats.read) -> Snapshot:
    """Runs in a worker thread: adds kernel counters, and nat networks'
    leases and forwarding counters, to a captured state."""
    global _nft_reader
    names = {t[0] for t in state["taps"]}
    counters = read_counters(names) if names else {}
    taps = tuple(TapRow(*t[:6], counters.get(t[0]), *t[6:]) for t in state["taps"])
    nat = ()
    if state.get("nat"):
        if _nft_reader is None:
            _nft_reader = Firewall()
        seen = natmod.read_metrics(state["nat_sources"], _nft_reader)
        nat = tuple((name, used, free, seen[net_id]["leases"],
                     # nat_<id>_out / nat_<id>_in
                     {n.rsplit("_", 1)[1]: v for n, v in seen[net_id]["counters"].items()},
                     seen[net_id]["dnsmasq_restarts"])
                    for net_id, name, used, free in state["nat"])
    rest = {k: v for k, v in state.items() if k not in ("taps", "nat", "nat_sources")}
    return Snapshot(taken=time.time(), taps=taps, nat=nat, **rest)


COUNTER_FIELDS = (
    ("receive_bytes", "rx_bytes", "Bytes the VM sent (received by the host on the TAP)."),
    ("receive_packets", "rx_packets", "Packets the VM sent."),
    ("receive_errors", "rx_errors", "Receive errors on the TAP."),
    ("receive_drops", "rx_drops", "Packets the VM sent that the host dropped."),
    ("transmit_bytes", "tx_bytes", "Bytes sent to the VM."),
    ("transmit_packets", "tx_packets", "Packets sent to the VM."),
    ("transmit_errors", "tx_errors", "Transmit errors on the TAP."),
    ("transmit_drops", "tx_drops", "Packets for the VM that were dropped (VM not reading)."),
)
TAP_GAUGES = (
    ("up", "up", "1 if the TAP is administratively up."),
    ("carrier", "carrier", "1 if a VMM has the TAP open."),
)


def traffic_rows(taps: tuple[TapRow, ...]):
    """The snapshot's TAPs as the traffic history takes them."""
    return (TapCounters(r.vm, r.nic, r.network_id, r.index, r.counters.rx_bytes, r.counters.tx_bytes,
                        r.counters.rx_packets, r.counters.tx_packets)
            for r in taps if r.counters is not None)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class TapSeries:
    """Renders the per-TAP series, ten per TAP, in the text format.

    prometheus-client's generic encoder validates and escapes every label
    of every sample (~15 µs a sample, 150 ms for 1,000 TAPs). Here the label
    block of each TAP is built once and reused while the TAP lives, which
    makes a 10,000-TAP scrape affordable. Everything else goes through
    prometheus-client."""

    def __init__(self):
        self._labels: dict[tuple, str] = {}

    def render(self, taps: tuple[TapRow, ...]) -> str:
        cache, fresh = self._labels, {}
        blocks = []
        for row in taps:
            key = (row.tap, row.vm, row.nic, row.network)
            block = cache.get(key)
            if block is None:
                block = (f'{{network="{_escape(row.network)}",nic="{_escape(row.nic)}",'
                         f'tap="{_escape(row.tap)}",vm="{_escape(row.vm)}"}} ')
            fresh[key] = block
            blocks.append((block, row))
        self._labels = fresh  # forget TAPs that are gone
        out = []
        for field_name, attr, doc in COUNTER_FIELDS:
            name = f"fcnetd_tap_{field_name}_total"
            out.append(f"# HELP {name} {doc}\n# TYPE {name} counter\n")
            out.extend(f"{name}{block}{getattr(row.counters, attr)}\n"
                       for block, row in blocks if row.counters is not None)
        for field_name, attr, doc in TAP_GAUGES:
            name = f"fcnetd_tap_{field_name}"
            out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
            out.extend(f"{name}{block}{1 if getattr(row, attr) else 0}\n" for block, row in blocks)
        return "".join(out)


def _nat_families(rows: tuple):
    addresses = GaugeMetricFamily("fcnetd_nat_addresses", "VM addresses of a nat network by state.",
                                  labels=["network", "state"])
    leases = GaugeMetricFamily("fcnetd_nat_dhcp_leases", "DHCP leases the network's dnsmasq holds.",
                               labels=["network"])
    packets = CounterMetricFamily("fcnetd_nat_packets", "Packets forwarded: out of the network, replies in.",
                                  labels=["network", "direction"])
    nbytes = CounterMetricFamily("fcnetd_nat_bytes", "Bytes forwarded: out of the network, replies in.",
                                 labels=["network", "direction"])
    restarts = CounterMetricFamily("fcnetd_nat_dnsmasq_restarts", "Times the network's dnsmasq was restarted.",
                                   labels=["network"])
    for name, used, free, held, counters, restarted in rows:
        addresses.add_metric([name, "used"], used)
        addresses.add_metric([name, "free"], free)
        leases.add_metric([name], held)
        for direction, (npackets, count) in sorted(counters.items()):
            packets.add_metric([name, direction], npackets)
            nbytes.add_metric([name, direction], count)
        restarts.add_metric([name], restarted)
    yield from (addresses, leases, packets, nbytes, restarts)


class SnapshotCollector(Collector):
    def __init__(self):
        self.snapshot: Snapshot | None = None

    def collect(self):
        s = self.snapshot
        if s is None:
            return
        yield InfoMetricFamily("fcnetd_build", "fcnetd build.", value={"version": __version__})
        by_type = GaugeMetricFamily("fcnetd_networks", "Networks in the registry by type.", labels=["type"])
        for kind in ("bridge", "vlan"):
            by_type.add_metric([kind], sum(1 for n in s.networks if n[1] == kind))
        yield by_type
        info = InfoMetricFamily("fcnetd_network", "One series per network.", labels=NETWORK_LABELS)
        vms = GaugeMetricFamily("fcnetd_network_vms", "VM NICs attached to the network.", labels=["network"])
        taps = GaugeMetricFamily("fcnetd_network_taps", "TAPs (running VM NICs) on the network.",
                                 labels=["network"])
        for labels, _kind, nvms, ntaps in s.networks:
            info.add_metric(labels, {})
            name = labels[NAME_AT]
            vms.add_metric([name], nvms)
            taps.add_metric([name], ntaps)
        yield info
        yield vms
        yield taps
        present = GaugeMetricFamily("fcnetd_bridge_present", "1 if the allowed bridge exists.", labels=["bridge"])
        bup = GaugeMetricFamily("fcnetd_bridge_up", "1 if the bridge is up.", labels=["bridge"])
        vf = GaugeMetricFamily("fcnetd_bridge_vlan_filtering", "1 if VLAN filtering is on.", labels=["bridge"])
        for name, is_present, is_up, filtering in s.bridges:
            present.add_metric([name], int(is_present))
            bup.add_metric([name], int(is_up))
            vf.add_metric([name], int(filtering))
        yield present
        yield bup
        yield vf
        req = CounterMetricFamily("fcnetd_dbus_requests", "D-Bus method calls by method and result.",
                                  labels=["method", "result"])
        for (m, r), n in sorted(s.requests.items()):
            req.add_metric([m, r], n)
        yield req
        hist = HistogramMetricFamily("fcnetd_dbus_request_duration_seconds", "D-Bus method call latency.")
        cumulative, buckets = 0, []
        for b in LATENCY_BUCKETS:
            cumulative += s.latency_buckets.get(b, 0)
            buckets.append((repr(b), cumulative))
        buckets.append(("+Inf", s.latency_count))
        hist.add_metric([], buckets, s.latency_sum)
        yield hist
        writes = CounterMetricFamily("fcnetd_registry_writes", "Registry writes by result.", labels=["result"])
        for result in ("ok", "error"):
            writes.add_metric([result], s.registry_writes.get(result, 0))
        yield writes
        count, total = s.registry_write_seconds
        yield SummaryMetricFamily("fcnetd_registry_write_duration_seconds",
                                  "Time spent writing the registry (temp file, fsync, rename).",
                                  count_value=count, sum_value=total)
        rec = CounterMetricFamily("fcnetd_reconcile", "Reconcile results: TAPs adopted and reaped, drift repaired.",
                                  labels=["result"])
        for result in ("adopted", "reaped", "drift"):
            rec.add_metric([result], s.reconcile.get(result, 0))
        yield rec
        denied = CounterMetricFamily("fcnetd_access_denied", "Callers refused by the daemon's own check.")
        denied.add_metric([], s.access_denied)
        yield denied
        yield from _nat_families(s.nat)
        age = GaugeMetricFamily("fcnetd_snapshot_timestamp_seconds", "When these figures were taken.")
        age.add_metric([], s.taken)
        yield age


class Exposition:
    """The rendered text of the newest snapshot, made at most once per snapshot."""

    def __init__(self):
        self.collector = SnapshotCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._lock = threading.Lock()
        self._rendered_for: Snapshot | None = None
        self.taps = TapSeries()
        self._text = b""

    def publish(self, snapshot: Snapshot) -> None:
        self.collector.snapshot = snapshot  # one reference swap: readers see old or new, whole

    def render(self) -> bytes:
        with self._lock:
            snap = self.collector.snapshot
            if snap is not self._rendered_for:
                taps = self.taps.render(snap.taps) if snap is not None else ""
                self._text = generate_latest(self.registry) + taps.encode()
                self._rendered_for = snap
            return self._text


class Refresher:
    """The snapshot, about once a second, for the traffic history and,
    when metrics are served, for the scrape."""

    def __init__(self, daemon, exposition: Exposition | None = None):
        self.daemon = daemon
        self.exposition = exposition
        self._task = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def refresh(self) -> None:
        state = capture(self.daemon, nat=self.exposition is not None)
        snapshot = await asyncio.to_thread(build, state)
        self.daemon.engine.traffic.feed(snapshot.taken, traffic_rows(snapshot.taps))
        if self.exposition is not None:
            self.exposition.publish(snapshot)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # metrics must never take the daemon down
                log.exception("metrics refresh failed")
            await asyncio.sleep(REFRESH_SECONDS)

    def stop(self) -> None:
        if self._task:
            self._task.cancel()


class MetricsServer:
    def __init__(self, host: str, port: int):
        self.exposition = Exposition()
        exposition = self.exposition

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404, "try /metrics")
                    return
                body = exposition.render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.address = self.httpd.server_address
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fcnetd-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
