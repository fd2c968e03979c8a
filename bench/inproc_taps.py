"""Baselines run inside the bench namespace: the same TAP work done
in-process with fcnetd's own pyroute2 code, and with `ip` shell-outs.

  inproc_taps.py pyroute2|shell create N BRIDGE PREFIX START  -> {"create": [seconds...]}
  inproc_taps.py pyroute2|shell delete N BRIDGE PREFIX        -> {"delete_total": seconds}
"""

import asyncio
import json
import subprocess
import sys
import time

from fcnetd.netlink import Netlink


async def pyroute2_create(names: list[str], bridge: str) -> dict:
    nl = Netlink()
    await nl.open()
    br = await nl.ensure_bridge(bridge, True, 0, False)
    lat = []
    for i, name in enumerate(names):
        t = time.perf_counter()
        await nl.create_tap(name, f"bench-{name}", "eth0", br, 0, 1000, None, 0)
        lat.append(time.perf_counter() - t)
    nl.close()
    return {"create": lat}


async def pyroute2_delete(names: list[str]) -> dict:
    nl = Netlink()
    await nl.open()
    t = time.perf_counter()
    await asyncio.gather(*(nl.delete_link(name) for name in names))
    total = time.perf_counter() - t
    nl.close()
    return {"delete_total": total}


def shell_create(names: list[str], bridge: str) -> dict:
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], capture_output=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], capture_output=True)
    lat = []
    for name in names:
        t = time.perf_counter()
        for cmd in (["ip", "tuntap", "add", "dev", name, "mode", "tap", "user", "1000", "vnet_hdr"],
                    ["ip", "link", "set", name, "master", bridge, "alias", f"fcnetd:bench-{name}:eth0", "up"]):
            subprocess.run(cmd, check=True)
        lat.append(time.perf_counter() - t)
    return {"create": lat}


def shell_delete(names: list[str]) -> dict:
    t = time.perf_counter()
    procs = [subprocess.Popen(["ip", "link", "del", name]) for name in names]
    for proc in procs:
        proc.wait()
    return {"delete_total": time.perf_counter() - t}


if __name__ == "__main__":
    kind, action, n, bridge, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    start = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    names = [f"{prefix}{i:06d}" for i in range(start, start + n)]
    if kind == "pyroute2":
        result = asyncio.run(pyroute2_create(names, bridge) if action == "create" else pyroute2_delete(names))
    else:
        result = shell_create(names, bridge) if action == "create" else shell_delete(names)
    print(json.dumps(result))
