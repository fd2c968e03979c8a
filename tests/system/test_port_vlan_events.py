"""A bridge port's VLAN notice from a real kernel, read by the daemon's
LinkMonitor in a namespace of the test's own: enslaving a port sends an
AF_BRIDGE RTM_NEWLINK, which arrives as PortVlans with the port's name and
its bridge, beside the port's own LinkEvent. (Its VLANs are {} on a kernel
without bridge VLAN filtering, as here; the kernel tier changes them.)"""

import json

CODE = r"""
import asyncio, json, subprocess, socket
from fcnetd.netlink import LinkMonitor
from fcnetd.rawnetlink import LinkEvent, PortVlans

async def main():
    got = []
    monitor = LinkMonitor().open()
    task = asyncio.get_running_loop().create_task(monitor.run(got.append))
    for cmd in (["ip", "link", "add", "br0", "type", "bridge"],
                ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v0p"],
                ["ip", "link", "set", "v0", "master", "br0"]):
        subprocess.run(cmd, check=True)
    bridge = socket.if_nametoindex("br0")
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        if any(isinstance(e, PortVlans) and e.ifname == "v0" for e in got):
            break
        await asyncio.sleep(0.02)
    task.cancel()
    print(json.dumps({"bridge": bridge, "index": socket.if_nametoindex("v0"),
                      "notices": [[e.ifname, e.index, e.master, {str(k): sorted(v) for k, v in e.vlans.items()}]
                                  for e in got if isinstance(e, PortVlans)],
                      "own": [[e.ifname, e.master] for e in got if isinstance(e, LinkEvent) and e.ifname == "v0"]}))
asyncio.run(main())
"""


def test_enslaving_a_port_sends_a_vlan_notice_with_its_bridge(ns):
    seen = json.loads(ns.python(CODE))
    notices = [n for n in seen["notices"] if n[0] == "v0"]
    assert notices, f"no PortVlans for v0: {seen}"
    name, index, master, vlans = notices[-1]
    assert (index, master) == (seen["index"], seen["bridge"]), seen
    assert vlans in ({}, {"1": ["pvid", "untagged"]}), vlans  # without / with VLAN filtering
    assert ["v0", seen["bridge"]] in seen["own"], "the port's own event still comes, with its master"
    assert all(n[0] != "br0" or n[2] == seen["bridge"] for n in seen["notices"])
