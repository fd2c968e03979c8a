"""fcnetd's nftables table, `inet fcnetd`: rendered from the nat networks as
text (render, a pure function) and replaced in one libnftables transaction.
The only module importing nftables (Debian's python3-nftables, the binding
firewalld uses; tools/bootstrap.sh exposes it to the virtualenv).

The table is wholly fcnetd's and nothing else is read or changed: no other
table, no chain of anyone else's. Rebuilding it whole from the registry is
what makes a crash harmless: whatever state a killed daemon left, the next
apply leaves exactly what the registry implies (`add table` makes the
`delete` valid when there is none, and the kernel commits all of it or
nothing). Named counters (nat_<network id's hex>_{out,in}) survive a rebuild:
their values are read first and written back as the new counters' start.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, collapse_addresses

from .errors import Internal

FAMILY, TABLE = "inet", "fcnetd"
_RESET = f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
_COUNTER_VALUES = re.compile(r"packets \d+ bytes \d+")


@dataclass(frozen=True)
class NatNet:
    """What the firewall needs of one nat network."""
    id: str
    subnet: IPv4Network
    gateway: IPv4Address
    port: str  # its L3 port: the bridge, or the VLAN device of a tagged network


def counter_names(network_id: str) -> tuple[str, str]:
    """(out, in): packets forwarded from the network, replies let back in."""
    short = network_id.replace("-", "").lower()
    return f"nat_{short}_out", f"nat_{short}_in"


# Never forwarded from a nat network: link-local, where clouds serve their
# metadata (the host's credentials) at 169.254.169.254 to whoever asks.
NEVER_FORWARDED = IPv4Network("169.254.0.0/16")


def render(nets: Iterable[NatNet], fenced: Iterable[IPv4Network],
           counters: Mapping[str, tuple[int, int]] | None = None) -> str:
    """The libnftables command that makes the table what `nets` imply; with
    no nat network, the command that deletes it. fenced: every subnet of an
    fcnetd network (bridge networks' included): a nat network may forward
    to none of them but its own. counters: name -> (packets, bytes) to start
    the named counters from.

    Every rule is keyed on the network's L3 port, never on addresses alone:
    a VM can send any source address, and one outside its subnet is
    dropped before anything else looks at it. A nat network is IPv4 only:
    no IPv6 crosses its port to the host or beyond."""
    nets = sorted(nets, key=lambda n: n.id)
    if not nets:
        return _RESET
    counters = counters or {}
    fenced = list(fenced)
    ports = ", ".join(f'"{n.port}"' for n in nets)
    lines = [_RESET.rstrip("\n"), f"table {FAMILY} {TABLE} {{"]
    for net in nets:
        for name in counter_names(net.id):
            packets, octets = counters.get(name, (0, 0))
            lines.append(f"\tcounter {name} {{ packets {packets} bytes {octets} }}")

    lines += ["\tchain postrouting {", "\t\ttype nat hook postrouting priority srcnat; policy accept;"]
    lines += [f'\t\tiifname "{n.port}" oifname != "{n.port}" ip saddr {n.subnet} masquerade' for n in nets]
    lines.append("\t}")

    lines += ["\tchain forward {", "\t\ttype filter hook forward priority filter; policy accept;"]
    for net in nets:
        out, back = counter_names(net.id)
        port = f'"{net.port}"'
        others = list(collapse_addresses(s for s in fenced if not s.overlaps(net.subnet)))
        # First: where br_netfilter is loaded, frames the bridge forwards
        # between its ports pass here too, in and out through the bridge
        # (any VLAN of it); they are the bridge's, not routed.
        lines += [f"\t\tiifname {port} oifname {port} accept",
                  f"\t\tiifname {port} ip saddr != {net.subnet} drop",
                  f"\t\tiifname {port} meta nfproto ipv6 drop",
                  f"\t\toifname {port} meta nfproto ipv6 drop",
                  # No forwarding between fcnetd networks, whatever their mode.
                  f"\t\tiifname {port} oifname {{ {ports} }} drop"]
        if others:
            lines.append(f"\t\tiifname {port} ip daddr {{ {', '.join(map(str, others))} }} drop")
        lines += [f"\t\tiifname {port} ip daddr {NEVER_FORWARDED} drop",
                  f'\t\tiifname {port} counter name "{out}" accept',
                  f'\t\toifname {port} ct state established,related counter name "{back}" accept',
                  # An admin's own port forward (DNAT) to a VM is the admin's to open.
                  f"\t\toifname {port} ct status dnat accept",
                  f"\t\toifname {port} drop"]
    lines.append("\t}")

    # From a nat network to the host: DHCP (its DISCOVER goes to the
    # broadcast address), DNS and ICMP to its gateway; nothing else. And
    # the gateway answers only its own port: dnsmasq's DNS is no open
    # resolver for whatever else routes to it.
    lines += ["\tchain input {", "\t\ttype filter hook input priority filter; policy accept;"]
    for net in nets:
        port = f'iifname "{net.port}"'
        gw = net.gateway
        lines += [f'\t\tip daddr {gw} iifname != {{ "{net.port}", "lo" }} drop',
                  f"\t\t{port} meta nfproto ipv6 drop",
                  f"\t\t{port} ct state established,related accept",
                  f"\t\t{port} ip daddr {{ {gw}, 255.255.255.255 }} udp dport 67 accept",
                  f"\t\t{port} ip daddr {gw} udp dport 53 accept",
                  f"\t\t{port} ip daddr {gw} tcp dport 53 accept",
                  f"\t\t{port} ip daddr {gw} ip protocol icmp accept",
                  f"\t\t{port} drop"]
    lines += ["\t}", "}", ""]
    return "\n".join(lines)


class Firewall:
    """The table in the kernel of the current network namespace. Every call
    is one short netlink exchange, made in the caller's thread."""

    def __init__(self):
        # Imported here, when the first nat network needs it: a host with
        # bridge networks only runs without the binding installed.
        try:
            import nftables
        except ImportError as e:
            raise Internal("nat networks need libnftables' Python binding (Debian: apt install nftables "
                           f"python3-nftables): {e}") from e
        self._nft = nftables.Nftables()

    def _cmd(self, command: str, what: str, json_output: bool = False) -> str:
        self._nft.set_json_output(json_output)
        rc, output, error = self._nft.cmd(command)
        if rc != 0:
            raise Internal(f"nftables: {what}: {error.strip() or f'libnftables returned {rc}'}")
        return output

    def base_chains(self) -> list[dict]:
        """Every base chain of every table on the host (family, table, name,
        hook, policy), read only."""
        output = self._cmd("list chains", "reading the chains", json_output=True)
        chains = []
        for item in json.loads(output or "{}").get("nftables", []):
            chain = item.get("chain")
            if chain and chain.get("hook"):
                chains.append({k: chain.get(k, "") for k in ("family", "table", "name", "hook", "policy")})
        return chains

    def listing(self) -> str | None:
        """The table as nft prints it, counter values left out (they move
        on their own), or None if there is none."""
        try:
            text = self._cmd(f"list table {FAMILY} {TABLE}", "reading table inet fcnetd")
        except Internal as e:
            if "No such file or directory" in str(e):
                return None
            raise
        return _COUNTER_VALUES.sub("", text)

    def counters(self) -> dict[str, tuple[int, int]]:
        """The table's named counters: name -> (packets, bytes); {} without a table."""
        try:
            output = self._cmd(f"list counters table {FAMILY} {TABLE}", "reading the counters", json_output=True)
        except Internal as e:
            if "No such file or directory" in str(e):
                return {}
            raise
        found = {}
        for item in json.loads(output or "{}").get("nftables", []):
            counter = item.get("counter")
            if counter and counter.get("table") == TABLE:
                found[counter["name"]] = (counter.get("packets", 0), counter.get("bytes", 0))
        return found

    def apply(self, nets: Iterable[NatNet], fenced: Iterable[IPv4Network]) -> None:
        """Replaces the table with what `nets` imply, in one transaction
        (deletes it when there is no nat network); Internal if refused, and
        then the kernel kept the table as it was."""
        self._cmd(render(nets, fenced, self.counters()), "replacing table inet fcnetd")
