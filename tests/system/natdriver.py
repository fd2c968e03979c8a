"""Runs a NatPlane inside the network namespace it is started in, for
tests/system/test_nat_plane.py: one JSON request a line on stdin, one JSON
answer a line on stdout ({"ok": result} or {"error": "Name: message"}).
A process of its own, so a test can kill it as a crash would.

Networks and attachments come as dicts and are handed over as
SimpleNamespaces with exactly the attributes NAT-DESIGN.md gives them.

    python -m tests.system.natdriver STATE_DIR
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from ipaddress import IPv4Network
from types import SimpleNamespace

from fcnetd.nat import NatPlane
from fcnetd.netlink import Netlink


def network(d: dict) -> SimpleNamespace:
    d = {"vlan": 0, "mode": "nat", "subnet": "", "dhcp": d.get("mode", "nat") == "nat", **d}
    gateway = str(IPv4Network(d["subnet"]).network_address + 1) if d["mode"] == "nat" else ""
    return SimpleNamespace(gateway=gateway, **d)


def attachments(items: list) -> list[SimpleNamespace]:
    return [SimpleNamespace(vm_id=a.get("vm_id", "vm"), nic=a.get("nic", "eth0"), mac=a["mac"], ip=a["ip"])
            for a in items]


async def answer(plane: NatPlane, nl: Netlink, req: dict):
    op = req["op"]
    if op == "network_added":
        net = network(req["net"])
        return await plane.network_added(net, await nl.bridge(net.bridge), [network(n) for n in req["networks"]])
    if op == "network_removed":
        return await plane.network_removed(network(req["net"]), [network(n) for n in req["networks"]])
    if op == "leases_changed":
        return await plane.leases_changed(network(req["net"]), attachments(req["attachments"]),
                                          attachments(req.get("released", [])))
    if op == "converge":
        nets = [network(n) for n in req["networks"]]
        bridges = {n.bridge: await nl.bridge(n.bridge) for n in nets}
        by_network = {i: attachments(a) for i, a in req.get("attachments", {}).items()}
        return await plane.converge(nets, by_network, bridges)
    if op == "host_prefixes":
        return [[str(prefix), what] for prefix, what in await plane.host_prefixes()]
    if op == "snapshot":
        return plane.snapshot()
    if op == "close":
        return await plane.close()
    raise ValueError(f"unknown op {op!r}")


async def main(state_dir: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="natdriver %(name)s: %(message)s")
    nl = Netlink()
    await nl.open()
    plane = NatPlane(nl, state_dir)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        try:
            reply = {"ok": await answer(plane, nl, json.loads(line))}
        except Exception as e:
            logging.exception("request failed")
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    nl.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
