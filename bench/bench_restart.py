"""Restart time as TAPs grow: TAPs made through the daemon, then SIGTERM and
a new daemon timed from its spawn to READY=1 (what systemd waits for), at
0, N and 2N TAPs. Untagged: this host's kernel has no bridge VLAN
filtering; the kernel tier times tagged TAPs."""

from __future__ import annotations

import os

from common import Figure, Pool, Sandbox, bounded_gather, p50, v

PER_BRIDGE = 1000  # a bridge holds at most 1,023 ports


async def add_taps(pool: Pool, n: int) -> None:
    names = [(f"r-{i}", f"fcbr{i // PER_BRIDGE}") for i in range(n)]
    await bounded_gather([pool.m("AttachVm", "ssqa{sv}", vm, bridge, 0, {}) for vm, bridge in names])
    await bounded_gather([pool.m("CreateTap", "ssa{sv}", vm, "eth0", {"owner_uid": v("u", 1000)})
                          for vm, _ in names], limit=32)


async def bench_restart(figures: list[Figure], workdir: str, n: int = 1000, rounds: int = 5) -> None:
    """One daemon per size, side by side, restarted in turn: noise from the
    machine hits every size alike."""
    sizes = (0, n, 2 * n)
    boxes: dict[int, Sandbox] = {}
    try:
        for size in sizes:
            boxes[size] = sb = Sandbox(os.path.join(workdir, f"restart-{size}"),
                                       bridges=max(1, (size + PER_BRIDGE - 1) // PER_BRIDGE), metrics=False)
            sb.start()
            pool = await Pool(sb.bus.address).open()
            await add_taps(pool, size)
            pool.close()
        took = {size: [] for size in sizes}
        for _ in range(rounds):
            for size, sb in boxes.items():
                took[size].append(sb.restart())
                found = len(sb.ns.taps())
                if found != size:
                    raise RuntimeError(f"after a restart with {size} TAPs the namespace holds {found}")
    finally:
        for sb in boxes.values():
            sb.close()
    s0, s1, s2 = (p50(took[size]) for size in sizes)
    figures.append(Figure(f"restart to READY=1, {n:,} untagged TAPs", s1, "s", "no TAPs", s0, "-", None))
    figures.append(Figure(f"restart to READY=1, {2 * n:,} untagged TAPs", s2, "s", f"{n:,} TAPs", s1,
                          "<= 2x (linear)", s2 <= 2 * s1))
    print(f"  restart to READY=1: no TAPs {s0:.2f} s, {n:,} TAPs {s1:.2f} s, {2 * n:,} TAPs {s2:.2f} s", flush=True)
