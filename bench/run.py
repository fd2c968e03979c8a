"""Every benchmark of fcnetd in one run; prints one table (figure, baseline,
ratio, target) and writes the same as JSON. Run as root: ./bench/run

Ratios against baselines measured in the same run are what count: these
machines are shared and noisy, absolute figures are for orientation.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

import floor
from common import (Client, Figure, Pool, Sandbox, WireClient, bounded_gather, decode, p, p50, run_in_ns, save,
                    table, v, write_registry)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from fcnetd import schema  # noqa: E402
from fcnetd.model import Attachment, Network  # noqa: E402
from fcnetd.registry import Registry, serialize  # noqa: E402

MS = 1000.0


async def attach(c: Pool, n: int, bridge: str, prefix: str) -> None:
    await bounded_gather([c.m("AttachVm", "ssqa{sv}", f"{prefix}{i}", bridge, 0, {}) for i in range(n)])


async def create_taps(c: Pool, start: int, n: int, prefix: str) -> list[float]:
    return [await c.timed("CreateTap", "ssa{sv}", f"{prefix}{i}", "eth0", {"owner_uid": v("u", 1000)})
            for i in range(start, start + n)]


async def provision(sb: Sandbox, c: Pool, n: int, bridge: str, prefix: str) -> dict:
    await attach(c, n, bridge, prefix)
    return {"create": await create_taps(c, 0, n, prefix)}


async def unprovision(c: Pool, n: int, prefix: str) -> float:
    """All n DeleteTap at once, spread over the pool's connections."""
    t = time.perf_counter()
    await bounded_gather([c.m("DeleteTap", "ss", f"{prefix}{i}", "eth0") for i in range(n)], limit=n)
    total = time.perf_counter() - t
    await bounded_gather([c.m("DetachVm", "ss", f"{prefix}{i}", "eth0") for i in range(n)])
    return total


def scrape(sb: Sandbox, url: str, count: int, gap: float) -> dict:
    return run_in_ns(sb.ns, os.path.join(HERE, "scraper.py"), url, "--count", str(count), "--gap", str(gap))


def baseline_ways(sb: Sandbox, names: list[str], program: str | None) -> dict:
    """Each baseline way: (its bridge, its TAP prefix, create(n, prefix,
    start) -> seconds per TAP)."""
    helper = os.path.join(HERE, "inproc_taps.py")

    def python_way(way, bridge):
        return lambda n, prefix, start: run_in_ns(sb.ns, helper, way, "create", str(n), bridge, prefix,
                                                  str(start))["create"]
    ways = {"pyroute2": ("bpr", "pr"), "netlink": ("bnl", "nl"), "shell": ("bsh", "sh"), "floor": ("bfl", "fl")}
    out = {}
    for name in names:
        bridge, short = ways[name]
        if name == "floor":
            sb.ns.ip("link", "add", bridge, "type", "bridge")
            sb.ns.ip("link", "set", bridge, "up")
            out[name] = (bridge, short, lambda n, prefix, start, bridge=bridge:
                         floor.create(program, sb.ns.name, n, bridge, prefix, start, 1000))
        else:
            out[name] = (bridge, short, python_way(name, bridge))
    return out


async def bench_provisioning(sb, c, figures, sizes, names, program):
    """D-Bus and the baseline ways take turns in chunks, so a noisy
    neighbour slows them alike; each fills its own bridge to the same size.
    The baselines' bridges are not in the daemon's allow-list."""
    helper = os.path.join(HERE, "inproc_taps.py")
    ways = baseline_ways(sb, names, program)
    for n in sizes:
        rounds = 20 if n == 1 else 10  # a single TAP is one sample: repeat it
        chunk = max(1, n // 10) if n > 1 else 1
        d_create, d_delete = [], []
        create = {way: [] for way in ways}
        delete = {"netlink": [], "shell": []}
        for r in range(rounds):
            tag = f"{n}r{r}-" if n == 1 else f"{n}-"
            start = 0 if n == 1 else r * chunk
            if n == 1 or r == 0:
                await attach(c, n, "fcbr0", f"p{tag}")
            d_create += await create_taps(c, start, chunk, f"p{tag}")
            for way, (bridge, short, make) in ways.items():
                create[way] += make(chunk, f"{short}{n}r{r if n == 1 else 0}x", start)
            if n == 1 or r == rounds - 1:
                d_delete.append(await unprovision(c, n, f"p{tag}"))
                for way, (bridge, short, _) in ways.items():
                    prefix = f"{short}{n}r{r if n == 1 else 0}x"
                    how = "shell" if way == "shell" else "netlink"
                    took = run_in_ns(sb.ns, helper, how, "delete", str(n), bridge, prefix)["delete_total"]
                    if way in delete:
                        delete[way].append(took)
        dbus_p50 = p50(d_create) * MS
        base = {way: p50(lat) * MS for way, lat in create.items()}
        label = f"{n} TAP" + (f", {rounds} rounds" if n == 1 else "s")
        if "pyroute2" in base:
            figures.append(Figure(f"CreateTap p50, {label} (D-Bus vs pyroute2 API in-process)", dbus_p50, "ms",
                                  "pyroute2", base["pyroute2"], "<= 1.5x", dbus_p50 <= 1.5 * base["pyroute2"]))
        if "netlink" in base:
            figures.append(Figure(f"CreateTap p50, {label} (D-Bus vs fcnetd's netlink code in-process)", dbus_p50,
                                  "ms", "fcnetd.netlink", base["netlink"], "-", None))
        if "shell" in base:
            figures.append(Figure(f"CreateTap p50, {label} (D-Bus vs ip shell-outs)", dbus_p50, "ms",
                                  "ip", base["shell"], "<= 0.4x (2.5x faster)", dbus_p50 * 2.5 <= base["shell"]))
        if "floor" in base:
            figures.append(Figure(f"CreateTap p50, {label} (D-Bus vs the floor: C, ioctl + rtnetlink)", dbus_p50,
                                  "ms", "C floor", base["floor"], "<= 2x", dbus_p50 <= 2 * base["floor"]))
        if "netlink" in delete and delete["netlink"]:
            figures.append(Figure(f"{n} concurrent DeleteTap over D-Bus, total", p50(d_delete), "s",
                                  "fcnetd.netlink in-process", p50(delete["netlink"]),
                                  "< 6 s" if n == 1000 else "-", p50(d_delete) < 6 if n == 1000 else None))
        print(f"  provisioning {n}: D-Bus p50 {dbus_p50:.2f} ms, "
              + ", ".join(f"{way} {ms:.2f} ms" for way, ms in base.items())
              + f", delete {p50(d_delete):.2f} s"
              + "".join(f" ({way} {p50(t):.2f} s)" for way, t in delete.items() if t), flush=True)


async def bench_scrape_and_memory(sb, c, figures, big: int):
    url = "http://127.0.0.1:9617/metrics"
    rss0 = sb.rss_kib()
    await provision(sb, c, 1000, "fcbr3", "m-")
    time.sleep(2.5)
    rss1 = sb.rss_kib()
    figures.append(Figure("daemon RSS at 1,000 TAPs", rss1 / 1024, "MiB", "idle", rss0 / 1024, "-", None))
    # A fresh snapshot before every scrape (gap > refresh period): each scrape renders.
    s = scrape(sb, url, 10, 1.2)
    cached = scrape(sb, url, 20, 0.0)
    ms = p50(s["latency"]) * MS
    figures.append(Figure("scrape p50, 1,000 TAPs", ms, "ms", "cached re-scrape", p50(cached["latency"]) * MS,
                          "< 50 ms", ms < 50))
    print(f"  scrape 1,000 TAPs: {ms:.1f} ms ({s['bytes']} bytes)", flush=True)

    # D-Bus p99 during a CreateTap burst, with and without a 100 ms scraper.
    async def burst(prefix):
        await bounded_gather([c.m("AttachVm", "ssqa{sv}", f"{prefix}{i}", "fcbr4", 0, {}) for i in range(300)])
        lat = await bounded_gather([c.timed("CreateTap", "ssa{sv}", f"{prefix}{i}", "eth0", {})
                                    for i in range(300)], limit=8)
        await unprovision(c, 300, prefix)
        return lat
    # Quiet and scraped bursts take turns, so drift and warm-up hit both alike.
    quiet, loud = [], []
    for r in range(3):
        quiet += await burst(f"q{r}-")
        scraper = subprocess.Popen(["ip", "netns", "exec", sb.ns.name, sys.executable,
                                    os.path.join(HERE, "scraper.py"), url, "--every", "0.1", "--for", "600"],
                                   stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            loud += await burst(f"l{r}-")
        finally:
            scraper.terminate()
            scraper.wait()
    q99, l99 = p(quiet, 99) * MS, p(loud, 99) * MS
    figures.append(Figure("CreateTap p99 in a burst while scraping every 100 ms", l99, "ms", "no scraping",
                          q99, "< 2x", l99 < 2 * q99))
    print(f"  burst p99: quiet {q99:.1f} ms, scraped {l99:.1f} ms", flush=True)

    # 10,000 TAPs over 10 bridges (a bridge holds at most 1,023 ports).
    per = big // 10
    for b in range(10):
        if b == 3:
            continue  # fcbr3 already holds the 1,000 TAPs above
        await provision(sb, c, per, f"fcbr{b}", f"b{b}-")
    time.sleep(2.5)
    ours = scrape(sb, url, 10, 1.2)
    ne = subprocess.Popen(["ip", "netns", "exec", sb.ns.name, "prometheus-node-exporter",
                           "--collector.disable-defaults", "--collector.netdev",
                           "--web.listen-address=127.0.0.1:9100"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        theirs = scrape(sb, "http://127.0.0.1:9100/metrics", 10, 0.2)
    finally:
        ne.terminate()
        ne.wait()
    o, t = p50(ours["latency"]) * MS, p50(theirs["latency"]) * MS
    n_taps = len(sb.ns.taps())
    figures.append(Figure(f"scrape p50, {n_taps:,} TAPs on 10 bridges", o, "ms", "node_exporter netdev", t,
                          "< 400 ms and < node_exporter", o < 400 and o < t))
    print(f"  scrape {n_taps} TAPs: fcnetd {o:.1f} ms ({ours['bytes']} bytes), node_exporter {t:.1f} ms "
          f"({theirs['bytes']} bytes)", flush=True)


def seeded_registry(state_dir: str, networks: int, attachments: int) -> Registry:
    reg = Registry(state_dir)
    nets = []
    for vid in range(1, networks + 1):
        net = Network.new("", "fcbr0", vid, "bench", "manual")
        reg.add_network(net)
        nets.append(net)
    for i in range(attachments):
        reg.add_attachment(Attachment(f"vm-{i}", "eth0", nets[i % len(nets)].id, f"vm-{i}"))
    return reg


def bench_registry_save(figures, workdir):
    reg = seeded_registry(os.path.join(workdir, "regbench"), 4094, 10000)
    os.makedirs(reg.state_dir, exist_ok=True)
    durable, plain = [], []
    for _ in range(10):
        t = time.perf_counter()
        reg.save_now()
        durable.append(time.perf_counter() - t)
        t = time.perf_counter()
        with open(os.path.join(reg.state_dir, "plain.json"), "wb") as f:
            f.write(serialize(reg.snapshot()))
        plain.append(time.perf_counter() - t)
    d, pl = p50(durable) * MS, p50(plain) * MS
    # Since the journal this is the background fold, not a cost any call waits for.
    figures.append(Figure("registry fold into registry.json, 4,094 networks + 10,000 attachments", d, "ms",
                          "same JSON, no fsync/rename", pl, "-", None))
    print(f"  registry fold: {d:.1f} ms (plain write {pl:.1f} ms)", flush=True)


async def bench_list(figures, workdir):
    sb = Sandbox(os.path.join(workdir, "list"), bridges=1, metrics=False)
    try:
        write_registry(sb.state, 4094, 0)
        sb.start()
        wire = WireClient(sb.bus.address)
        entries = decode(wire.m("ListNetworks", "a{sv}", {})).body[0]
        if len(entries) != 4094 or len(entries[0]) != len(schema.LISTED):
            raise RuntimeError(f"ListNetworks returned {len(entries)} entries of {len(entries[0])} keys")
        count = [wire.timed("CountNetworks", "a{sv}", {}) for _ in range(30)]
        received = [wire.timed("ListNetworks", "a{sv}", {}) for _ in range(30)]
        c = await Client(sb.bus.address).open()
        decoded = [await c.timed("ListNetworks", "a{sv}", {}) for _ in range(30)]
        c.close()
        wire.close()
        ms, dms = p50(received) * MS, p50(decoded) * MS
        figures.append(Figure("ListNetworks p50, all 4,094 networks, reply received", ms, "ms",
                              "CountNetworks", p50(count) * MS, "< 20 ms", ms < 20))
        figures.append(Figure("ListNetworks p50, all 4,094 networks, decoded by dbus-fast", dms, "ms",
                              "reply received", ms, "-", None))
        print(f"  ListNetworks 4,094: received in {ms:.1f} ms, decoded by dbus-fast in {dms:.1f} ms", flush=True)
    finally:
        sb.close()


GROUPS = {
    "provisioning": "CreateTap against every baseline (pyroute2, fcnetd.netlink, ip, the C floor), DeleteTap burst",
    "floor": "CreateTap against the C floor only",
    "scrape": "metrics scrapes, RSS, CreateTap bursts while scraping, 10,000 TAPs",
    "registry": "registry save at 4,094 networks + 10,000 attachments",
    "list": "ListNetworks of 4,094 networks",
    "webui": "the web UI's Networks page",
    "hosts": "the Networks page over 3 hosts (2 over SSH) vs 1 local host; a change on node2 to the web UI",
    "attach": "AttachVm / DetachVm at 0 / 10,000 / 100,000 attachments",
    "restart": "restart to READY=1 at 0 / N / 2N TAPs",
    "bulk": "CreateTap p99 while another connection floods bulk reads",
    "nat": "AttachVm + CreateTap on a nat vs a bridge network; TAP up to the guest's DHCP lease",
    "traffic": "the traffic history's sample at 10,000 vs 100 TAPs, in process",
}


async def main(args) -> int:
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    if only - set(GROUPS):
        print(f"bench: unknown figure group(s) {', '.join(sorted(only - set(GROUPS)))}; "
              f"choose from {', '.join(GROUPS)}", file=sys.stderr)
        return 2
    if args.skip_webui:
        only.discard("webui")
    workdir = tempfile.mkdtemp(prefix="fcnetd-bench-")
    ways = ["pyroute2", "netlink", "shell", "floor"] if "provisioning" in only else ["floor"] if "floor" in only else []
    program = None
    if "floor" in ways:
        try:
            program = floor.build(workdir)
        except floor.NoCompiler as e:
            print(f"bench: {e}", file=sys.stderr)
            return 2
    figures: list[Figure] = []
    sizes = [int(x) for x in args.sizes.split(",")]
    if ways or "scrape" in only:
        sb = Sandbox(os.path.join(workdir, "main")).start()
        try:
            pool = await Pool(sb.bus.address).open()
            if ways:
                await bench_provisioning(sb, pool, figures, sizes, ways, program)
            if "scrape" in only:
                await bench_scrape_and_memory(sb, pool, figures, args.big)
            pool.close()
        finally:
            sb.close()
    if "registry" in only:
        bench_registry_save(figures, workdir)
    if "list" in only:
        await bench_list(figures, workdir)
    if "attach" in only:
        from bench_attach import bench_attach
        await bench_attach(figures, workdir)
    if "restart" in only:
        from bench_restart import bench_restart
        await bench_restart(figures, workdir, args.restart_taps)
    if "bulk" in only:
        from bench_bulk import bench_bulk
        await bench_bulk(figures, workdir)
    if "nat" in only:
        from bench_nat import bench_nat
        await bench_nat(figures, workdir)
    if "traffic" in only:
        from bench_traffic import bench_traffic
        bench_traffic(figures)
    if "webui" in only:
        try:
            from bench_webui import bench_webui
        except ImportError:
            bench_webui = None
        if bench_webui is not None:
            await bench_webui(figures, workdir)
    if "hosts" in only and not args.skip_webui:
        from bench_hosts import bench_hosts
        await bench_hosts(figures, workdir)
    print()
    print(table(figures))
    save(figures, args.json)
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="figure groups (--only):\n"
                                 + "\n".join(f"  {k:<13} {d}" for k, d in GROUPS.items()))
    ap.add_argument("--only", default="", help="comma-separated figure groups to run (default: all)")
    ap.add_argument("--sizes", default="1,100,1000", help="TAP counts for the provisioning figures")
    ap.add_argument("--big", type=int, default=10000, help="TAPs for the large scrape figure")
    ap.add_argument("--restart-taps", type=int, default=1000, help="N for the restart figures (N and 2N TAPs)")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("--skip-webui", action="store_true")
    sys.exit(asyncio.run(main(ap.parse_args())))
