"""What nat networks left in the kernel, the processes and the files, read
back for the fault tier (tests/faults/test_nat_kills.py), and a cheap DHCP
client to ask fcnetd's dnsmasq for a lease as any MAC.

Each reader goes to the source a user would: `nft -j` for the tables, an
RTM_GETADDR dump for addresses (iproute2 6.1 does not show IFA_PROTO),
/proc/*/cmdline for dnsmasq processes, the state directory's nat/ files,
and a real busybox udhcpc for what dnsmasq hands out.
"""

from __future__ import annotations

import json
import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from fcnetd.firewall import NatNet, render
from fcnetd.nat import l3_port
from fcnetd.netlink import FCNETD_ADDRESS_PROTO
from fcnetd.registry import Snapshot
from tests.system.harness import Netns, run

ADMIN_TABLE = """table inet admin {
\tchain input {
\t\ttype filter hook input priority 10; policy accept;
\t\tudp dport 9999 drop
\t}
}
"""


def nft(ns: Netns, *args: str, stdin: str | None = None, check: bool = True):
    return run(["ip", "netns", "exec", ns.name, "nft", *args], input=stdin, check=check)


def table_json(ns: Netns, family: str, name: str) -> list | None:
    """A table as `nft -j` lists it, handles and counter values left out
    (the kernel numbers objects as it makes them, traffic moves counters);
    None if there is no such table."""
    res = nft(ns, "-j", "list", "table", family, name, check=False)
    if res.returncode != 0:
        assert "No such file or directory" in res.stderr, res.stderr
        return None
    return [_structure(item) for item in json.loads(res.stdout)["nftables"] if "metainfo" not in item]


def _structure(value):
    if isinstance(value, dict):
        return {k: _structure(v) for k, v in value.items() if k not in ("handle", "packets", "bytes")}
    if isinstance(value, list):
        return [_structure(v) for v in value]
    return value


def expected_fcnetd_table(reg: Snapshot) -> list | None:
    """What fcnetd/firewall.py renders for the registry's networks, loaded
    into a scratch namespace so the kernel normalises it as it did ours."""
    nets = [n for n in reg.networks.values() if n.mode == "nat"]
    text = render([NatNet(n.id, IPv4Network(n.subnet), IPv4Address(n.gateway), l3_port(n)) for n in nets],
                  [IPv4Network(n.subnet) for n in reg.networks.values() if n.subnet])
    scratch = Netns()
    try:
        nft(scratch, "-f", "-", stdin=text)
        return table_json(scratch, "inet", "fcnetd")
    finally:
        scratch.delete()


def addresses(ns: Netns) -> list[tuple[str, IPv4Interface, int]]:
    """(device, address/prefix, IFA_PROTO) of every IPv4 address in `ns`."""
    out = ns.python(
        "import asyncio, json\n"
        "from fcnetd.netlink import Netlink\n"
        "async def main():\n"
        "    nl = Netlink()\n"
        "    await nl.open()\n"
        "    try:\n"
        "        print(json.dumps([[a.ifname, str(a.interface), a.proto] for a in await nl.addresses()]))\n"
        "    finally:\n"
        "        nl.close()\n"
        "asyncio.run(main())\n")
    return [(name, IPv4Interface(interface), proto) for name, interface, proto in json.loads(out)]


def gateways(ns: Netns) -> set[tuple[str, IPv4Interface]]:
    """The addresses fcnetd marked as its own (IFA_PROTO 0xfc)."""
    return {(name, interface) for name, interface, proto in addresses(ns) if proto == FCNETD_ADDRESS_PROTO}


def nat_file(state_dir: str, network_id: str, suffix: str) -> str | None:
    try:
        with open(os.path.join(state_dir, "nat", network_id + suffix)) as f:
            return f.read()
    except FileNotFoundError:
        return None


def hosts_entries(text: str) -> set[tuple[str, str]]:
    """(MAC, address) of each line of a dnsmasq --dhcp-hostsfile."""
    return {(mac.lower(), ip) for mac, ip in (line.split(",") for line in text.splitlines() if line.strip())}


def lease_entries(text: str | None) -> list[tuple[str, str]]:
    """(MAC, address) of each lease in a dnsmasq leases file."""
    return [(f[1].lower(), f[2]) for f in (line.split() for line in (text or "").splitlines()) if len(f) >= 3]


class LanClient:
    """A namespace joined to a bridge of the daemon's namespace by a veth
    (a port fcnetd did not make), where busybox udhcpc asks for a lease as
    whatever MAC it is given, as a VM with that MAC would."""

    def __init__(self, ns: Netns, bridge: str, tag: str):
        self.netns = Netns()
        self.port, self.ifname = f"lan{tag}", f"cl{tag}"
        ns.ip("link", "add", self.port, "type", "veth", "peer", "name", self.ifname)
        ns.ip("link", "set", self.port, "master", bridge, "up")
        ns.ip("link", "set", self.ifname, "netns", self.netns.name)

    def lease(self, mac: str, tries: int = 4) -> str | None:
        """The address dnsmasq leases to `mac`, or None after `tries` DISCOVERs
        a second apart. The lease is kept (no RELEASE), as a VM keeps it."""
        self.netns.ip("link", "set", self.ifname, "down")
        self.netns.ip("link", "set", self.ifname, "address", mac)
        self.netns.ip("link", "set", self.ifname, "up")
        res = run(["ip", "netns", "exec", self.netns.name, "busybox", "udhcpc", "-q", "-n", "-f", "-i", self.ifname,
                   "-s", "/bin/true", "-t", str(tries), "-T", "1", "-A", "1"], check=False)
        for line in res.stderr.splitlines():
            if "lease of " in line and " obtained" in line:
                return line.split("lease of ", 1)[1].split()[0]
        return None

    def close(self) -> None:
        self.netns.delete()  # takes the veth pair with it
