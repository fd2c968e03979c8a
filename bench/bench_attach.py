"""AttachVm and DetachVm as the registry grows: one daemon per size, each
started on a schema-1 registry.json with 4,094 networks on 100 bridges and
that many attachments (~25 a network at 100,000; a bridge takes at most
1,023 VM NICs). The daemons run side by side and take turns, so noise from
the machine hits every size alike."""

from __future__ import annotations

import os

from common import Client, Figure, Sandbox, bridge_of, p50, write_registry

MS = 1000.0
NETWORKS = 4094
BRIDGES = 100  # 100,000 attachments fit: 1,000 a bridge


async def bench_attach(figures: list[Figure], workdir: str, sizes=(0, 10_000, 100_000), samples: int = 20,
                       rounds: int = 4) -> None:
    boxes: dict[int, Sandbox] = {}
    try:
        for n in sizes:
            boxes[n] = Sandbox(os.path.join(workdir, f"attach-{n}"), bridges=BRIDGES, metrics=False)
            write_registry(boxes[n].state, NETWORKS, n, BRIDGES)
            boxes[n].start()
        clients = {n: await Client(sb.bus.address).open() for n, sb in boxes.items()}
        attach = {n: [] for n in sizes}
        detach = {n: [] for n in sizes}
        per = samples // rounds
        for r in range(rounds):
            for n, c in clients.items():
                vms = [f"new-{r}-{i}" for i in range(per)]
                for i, vm in enumerate(vms):
                    vid = 1 + (r * per + i) % NETWORKS
                    attach[n].append(await c.timed("AttachVm", "ssqa{sv}", vm, bridge_of(vid, BRIDGES), vid, {}))
                for vm in vms:
                    detach[n].append(await c.timed("DetachVm", "ss", vm, "eth0"))
        for c in clients.values():
            c.close()
    finally:
        for sb in boxes.values():
            sb.close()
    empty = sizes[0]
    for what, lat in (("AttachVm", attach), ("DetachVm", detach)):
        base = p50(lat[empty]) * MS
        for n in sizes[1:]:
            ms = p50(lat[n]) * MS
            last = n == sizes[-1]
            figures.append(Figure(f"{what} p50, {n:,} attachments on {NETWORKS:,} networks", ms, "ms",
                                  f"{empty:,} attachments", base, "<= 2x" if last else "-",
                                  ms <= 2 * base if last else None))
        print(f"  {what} p50: " + ", ".join(f"{n:,} attachments {p50(lat[n]) * MS:.2f} ms" for n in sizes),
              flush=True)
