"""Baselines run inside the bench namespace: the same TAP work done
in-process with fcnetd's own pyroute2 code, and with `ip` shell-outs."""

import asyncio
import json
import subprocess
import sys
import time

from fcnetd.netlink import Netlink


async def pyroute2_run(n: int, bridge: str) -> dict:
    nl = Netlink()
    await nl.open()
    br = await nl.ensure_bridge(bridge, True, 0, False)
    lat = []
    names = [f"vmtapp{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        t = time.perf_counter()
        await nl.create_tap(name, f"bench-{i}", "eth0", br, 0, 1000, None, 0)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    await asyncio.gather(*(nl.delete_link(name) for name in names))
    delete_total = time.perf_counter() - t
    nl.close()
    return {"create": lat, "delete_total": delete_total}


def shell_run(n: int, bridge: str) -> dict:
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], capture_output=True)
    lat = []
    names = [f"vmtaps{i:06d}" for i in range(n)]
    for i, name in enumerate(names):
        t = time.perf_counter()
        for cmd in (["ip", "tuntap", "add", "dev", name, "mode", "tap", "user", "1000", "vnet_hdr"],
                    ["ip", "link", "set", name, "master", bridge, "alias", f"fcnetd:bench-{i}:eth0"],
                    ["ip", "link", "set", name, "up"]):
            subprocess.run(cmd, check=True)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    procs = [subprocess.Popen(["ip", "link", "del", name]) for name in names]
    for proc in procs:
        proc.wait()
    return {"create": lat, "delete_total": time.perf_counter() - t}


if __name__ == "__main__":
    kind, n, bridge = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = asyncio.run(pyroute2_run(n, bridge)) if kind == "pyroute2" else shell_run(n, bridge)
    print(json.dumps(result))
