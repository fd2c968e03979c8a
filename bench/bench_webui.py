"""Networks page with 4,094 networks: the web UI's server response time,
against the same request to fcnetd over D-Bus (one full ListNetworks)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from common import Client, Figure, p50

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.webstack import HttpUser, Stack, seed_registry  # noqa: E402

MS = 1000.0


async def bench_webui(figures: list[Figure], workdir: str) -> None:
    nets = [(f"fcbr0-vlan-{v}", "fcbr0", v, f"2026-01-01T00:00:{v % 60:02d}.{v:06d}Z") for v in range(1, 4095)]
    stack = Stack(registry=seed_registry(nets, [(f"vm-{i}", f"fcbr0-vlan-{1 + i % 4094}") for i in range(2000)]))
    try:
        user = HttpUser(stack.url, "admin")
        for _ in range(5):
            user.get("/api/networks")
        page, first, sorted_, search = [], [], [], []
        for _ in range(30):
            t = time.perf_counter()
            user.get("/networks")
            page.append(time.perf_counter() - t)
            t = time.perf_counter()
            status, body = user.get("/api/networks?page=1")
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            user.get("/api/networks?sort=vms&order=desc&page=3")
            sorted_.append(time.perf_counter() - t)
            t = time.perf_counter()
            user.get("/api/networks?search=vlan-40&type=vlan")
            search.append(time.perf_counter() - t)
        c = await Client(stack.bus.address).open()
        direct = [await c.timed("ListNetworks", "a{sv}", {}) for _ in range(10)]
        c.close()
        total = p50(page) + p50(first)
        figures.append(Figure("Networks page, 4,094 networks: HTML + first page of data", total * MS, "ms",
                              "ListNetworks of all over D-Bus", p50(direct) * MS, "< 150 ms", total * MS < 150))
        figures.append(Figure("Networks page data sorted by VMs, page 3", p50(sorted_) * MS, "ms",
                              "first page, newest first", p50(first) * MS, "< 150 ms", p50(sorted_) * MS < 150))
        figures.append(Figure("Networks page data, search + type filter", p50(search) * MS, "ms",
                              "first page, newest first", p50(first) * MS, "< 150 ms", p50(search) * MS < 150))
        print(f"  web UI 4,094 networks: page {total * MS:.1f} ms, sorted {p50(sorted_) * MS:.1f} ms, "
              f"search {p50(search) * MS:.1f} ms", flush=True)
    finally:
        stack.close()


if __name__ == "__main__":
    figs: list[Figure] = []
    asyncio.run(bench_webui(figs, "/tmp"))
    from common import table
    print(table(figs))
