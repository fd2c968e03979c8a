"""A VM launcher's CreateTap while another connection floods bulk reads
(bench/flood.py: Describe, GetManagedObjects, ListNetworks at 4,094
networks, replies read slowly), against quiet runs. Quiet and flooded
rounds take turns; a flooded round stops issuing calls at a deadline, so a
daemon that stalls still ends the bench (with fewer, slower samples)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from common import Client, Figure, Pool, Sandbox, bounded_gather, p, v, write_registry

HERE = os.path.dirname(os.path.abspath(__file__))
MS = 1000.0


async def settle(c: Client, deadline: float = 300) -> None:
    """Until the daemon answers a cheap call promptly again: what a flood
    left queued in it is worked off before the next round."""
    end = time.monotonic() + deadline
    while await c.timed("CountNetworks", "a{sv}", {}) > 0.02:
        if time.monotonic() > end:
            raise RuntimeError(f"fcnetd still slow {deadline:.0f} s after the flood stopped")


async def launch(c: Client, prefix: str, n: int, deadline: float) -> tuple[list[float], bool]:
    """n VMs' CreateTap one after another, as a launcher starts them, until
    the deadline; a call still unanswered then counts with the time it has
    waited (less than it would have taken). Returns (latencies, stalled)."""
    lat = []
    end = time.monotonic() + deadline
    for i in range(n):
        left = end - time.monotonic()
        if left <= 0:
            return lat, False
        t = time.perf_counter()
        try:
            await asyncio.wait_for(c.m("CreateTap", "ssa{sv}", f"{prefix}{i}", "eth0", {"owner_uid": v("u", 1000)}),
                                   left)
        except asyncio.TimeoutError:
            lat.append(time.perf_counter() - t)
            return lat, True
        lat.append(time.perf_counter() - t)
    return lat, False


def start_flood(address: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "flood.py"), address], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)})
    if proc.stdout.readline().strip() != "flooding":
        proc.kill()
        raise RuntimeError(f"flood.py did not start (exit {proc.wait()})")
    return proc


def stop_flood(proc: subprocess.Popen) -> dict:
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    return json.loads(out.strip().splitlines()[-1])


async def bench_bulk(figures: list[Figure], workdir: str, per_round: int = 100, rounds: int = 2,
                     deadline: float = 30) -> None:
    sb = Sandbox(os.path.join(workdir, "bulk"), bridges=2, metrics=False)
    try:
        write_registry(sb.state, 4094, 0)  # tagged networks on fcbr0; the launcher's TAPs go to fcbr1
        sb.start()
        c = await Client(sb.bus.address).open()
        pool = await Pool(sb.bus.address).open()
        await bounded_gather([pool.m("AttachVm", "ssqa{sv}", f"{kind}{r}-{i}", "fcbr1", 0, {})
                              for kind in "ql" for r in range(rounds) for i in range(per_round)])
        quiet, loud, flood_stats, stalled = [], [], [], 0
        for r in range(rounds):
            quiet += (await launch(c, f"q{r}-", per_round, deadline))[0]
            proc = start_flood(sb.bus.address)
            try:
                lat, stuck = await launch(c, f"l{r}-", per_round, deadline)
                loud += lat
                stalled += stuck
            finally:
                flood_stats.append(stop_flood(proc))
            await settle(c)
        c.close()
        pool.close()
    finally:
        sb.close()
    q99, l99 = p(quiet, 99) * MS, p(loud, 99) * MS
    figures.append(Figure("CreateTap p99 while another connection floods bulk reads (4,094 networks)", l99, "ms",
                          "no flood", q99, "<= 3x", l99 <= 3 * q99))
    errors = {}
    for s in flood_stats:
        for name, count in s["errors"].items():
            errors[name] = errors.get(name, 0) + count
    print(f"  CreateTap p99: quiet {q99:.1f} ms ({len(quiet)} calls), flooded {l99:.1f} ms ({len(loud)} calls "
          f"of {rounds * per_round} within {deadline:.0f} s a round, {stalled} round(s) ended in a stalled call); "
          f"flood read "
          f"{sum(s['replies'] for s in flood_stats)} replies, errors {errors or 'none'}", flush=True)

