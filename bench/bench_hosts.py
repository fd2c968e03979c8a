"""Several hosts, two of them over SSH (tests/sshstack.py: real sshd,
dbus-daemon and fcnetd per host): the Networks page over node1 (local) +
node2 + node3 (ssh), 1,365 networks each, against the same page over node1
alone; and the time from a change on a host (a network created on its own
bus) to the web UI serving it: its event on /api/events, then the list the
page asks for then showing it (the page's own 80 ms burst delay left out)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time

from common import Figure, p50

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.sshstack import InNetns, SshStack  # noqa: E402
from tests.system.harness import Client  # noqa: E402
from tests.webstack import seed_registry  # noqa: E402

MS = 1000.0
PER_HOST = 1365
TRIALS = 15


def registry(host: str) -> dict:
    nets = [(f"{host}-vlan-{v}", "fcbr0", v, f"2026-01-01T00:{v // 60 % 60:02d}:{v % 60:02d}.{v:06d}Z")
            for v in range(1, PER_HOST + 1)]
    reg = seed_registry(nets, [(f"{host}-vm-{i}", f"{host}-vlan-{1 + i % PER_HOST}") for i in range(600)])
    for n in reg["networks"]:
        n["host"] = host
    return reg


def page_times(user) -> list[float]:
    for _ in range(5):
        user.get("/api/networks")
    out = []
    for _ in range(30):
        t = time.perf_counter()
        user.get("/networks")
        user.get("/api/networks?page=1")
        out.append(time.perf_counter() - t)
    return out


def change_to_ui(stack: SshStack, user, bus: str, host: str, trial: int) -> float:
    """One network created on `host`'s own bus; seconds until the web UI has
    sent its event and then lists it."""
    name = f"probe-{host}-{trial}"
    seen = threading.Event()
    opened = threading.Event()
    arrived: list[float] = []
    reader = InNetns(stack.client.name)

    def listen():
        with user.user.opener.open(stack.url + "/api/events", timeout=30) as stream:
            opened.set()
            for line in stream:
                if line.startswith(b"data:") and b'"added"' in line and f'"{host}"'.encode() in line:
                    arrived.append(time.perf_counter())
                    seen.set()
                    return
    job = reader.pool.submit(listen)
    opened.wait(10)
    try:
        start = time.perf_counter()
        Client(bus).call("CreateNetwork", "ssqa{sv}", name, "fcbr1", 0, {})
        if not seen.wait(20):
            raise AssertionError(f"no event for {name} from {host}")
        while not any(n["name"] == name for n in user.json("GET", f"/api/networks?search={name}")[1]["items"]):
            pass
        done = time.perf_counter()
    finally:
        job.result(30)
        reader.close()
        Client(bus).call("DeleteNetwork", "s", name)
    return done - start


async def bench_hosts(figures: list[Figure], workdir: str) -> None:
    # on a thread: the test harness's D-Bus client runs an event loop of its own
    await asyncio.to_thread(_bench_hosts, figures)


def _bench_hosts(figures: list[Figure]) -> None:
    stack = SshStack({name: registry(name) for name in ("node1", "node2", "node3")})
    try:
        three = stack.sign_in("admin")
        body = three.json("GET", "/api/networks")[1]
        assert body["answered"] == 3 and body["all"] == 3 * PER_HOST, (body["answered"], body["all"])
        alone_cfg = os.path.join(stack.dir, "webui-node1.toml")
        with open(alone_cfg, "w") as f:
            f.write(f'[hosts.node1]\nbus = "{stack.bus1.address}"\n')
        _, alone_url = stack.start_webui(alone_cfg)
        alone = stack.sign_in("admin", alone_url)
        over_three, over_one = p50(page_times(three)), p50(page_times(alone))
        figures.append(Figure(f"Networks page, 3 hosts (2 over SSH) x {PER_HOST:,} networks: HTML + first page",
                              over_three * MS, "ms", f"1 local host, {PER_HOST:,} networks", over_one * MS,
                              "< 150 ms", over_three * MS < 150))
        remote = [change_to_ui(stack, three, stack.node2.bus.address, "node2", i) for i in range(TRIALS)]
        local = [change_to_ui(stack, three, stack.bus1.address, "node1", i) for i in range(TRIALS)]
        figures.append(Figure("Change on node2 (over SSH) to the web UI listing it", p50(remote) * MS, "ms",
                              "the same on node1 (local bus)", p50(local) * MS, "< 250 ms", p50(remote) * MS < 250))
        print(f"  hosts: page over 3 hosts {over_three * MS:.1f} ms (1 local host {over_one * MS:.1f} ms); "
              f"change to UI node2/ssh {p50(remote) * MS:.1f} ms (max {max(remote) * MS:.1f}), "
              f"node1/local {p50(local) * MS:.1f} ms", flush=True)
    finally:
        stack.close()


if __name__ == "__main__":
    figs: list[Figure] = []
    asyncio.run(bench_hosts(figs, "/tmp"))
    from common import table
    print(table(figs))
