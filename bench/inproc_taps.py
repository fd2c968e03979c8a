"""Baselines run inside the bench namespace: the TAP work of CreateTap done
in-process, three ways, and deletion.

  pyroute2  pyroute2's own API, as a program would use it: link("add",
            kind="tuntap") then link("set") to enslave, tag and raise it
  netlink   fcnetd's netlink module in-process (the daemon's code without
            D-Bus): what the bus and the daemon's dispatch add, and no more
  shell     `ip tuntap add` and `ip link set` shell-outs

  inproc_taps.py pyroute2|netlink|shell create N BRIDGE PREFIX START -> {"create": [seconds...]}
  inproc_taps.py netlink|shell delete N BRIDGE PREFIX                -> {"delete_total": seconds}
"""

import asyncio
import errno
import json
import subprocess
import sys
import time

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from fcnetd.netlink import Netlink


async def pyroute2_create(names: list[str], bridge: str) -> dict:
    ipr = AsyncIPRoute()
    try:
        await ipr.link("add", ifname=bridge, kind="bridge")
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise
    br = (await ipr.link("get", ifname=bridge))[0]["index"]
    await ipr.link("set", index=br, state="up")
    lat = []
    for name in names:
        t = time.perf_counter()
        await ipr.link("add", ifname=name, kind="tuntap", mode="tap", uid=1000,
                       ifr={"no_pi": True, "vnet_hdr": True})
        await ipr.link("set", ifname=name, master=br, ifalias=f"fcnetd:bench-{name}:eth0", state="up")
        lat.append(time.perf_counter() - t)
    ipr.close()
    return {"create": lat}


async def netlink_create(names: list[str], bridge: str) -> dict:
    nl = Netlink()
    await nl.open()
    br = await nl.ensure_bridge(bridge, True, 0, False)
    lat = []
    for name in names:
        t = time.perf_counter()
        await nl.create_tap(name, f"bench-{name}", "eth0", br, 0, 1000, None, 0)
        lat.append(time.perf_counter() - t)
    nl.close()
    return {"create": lat}


async def netlink_delete(names: list[str]) -> dict:
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
    if action == "create":
        create = {"pyroute2": lambda: asyncio.run(pyroute2_create(names, bridge)),
                  "netlink": lambda: asyncio.run(netlink_create(names, bridge)),
                  "shell": lambda: shell_create(names, bridge)}[kind]
        result = create()
    else:
        result = shell_delete(names) if kind == "shell" else asyncio.run(netlink_delete(names))
    print(json.dumps(result))
