"""Addresses of nat networks: subnets, gateways, VM addresses and MACs.

Pure functions, no I/O: the engine calls them with the registry's state (and
the host's prefixes, which the NAT plane reads) under the lock that makes
the choice atomic. Every refusal names the field and the rule.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from .errors import AddressUnavailable, InvalidArgs, excerpt

SUBNET_PREFIXES = (16, 29)  # a /30 leaves no address for a VM beside the gateway; a /15 is not a VM network
POOL_PREFIXES = (8, 24)
_CIDR_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}/[0-9]{1,2}")
_IP_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
# No network of VMs may take these: they are not unicast address space a
# host routes to a LAN (RFC 6890).
_SPECIAL = (
    (IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (IPv4Network("169.254.0.0/16"), "link-local (169.254.0.0/16, where clouds serve their metadata)"),
    (IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (IPv4Network("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
)
# Where a nat subnet a caller names may lie, besides [nat] pool: a nat
# network's subnet becomes a route of the host's own, so a public range
# would take the host's traffic to those addresses to a VM.
PRIVATE = (IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16"))
_MAC_TRIES = 64


def check_subnet(value: object, field: str = "subnet", prefixes: tuple[int, int] = SUBNET_PREFIXES) -> IPv4Network:
    """An IPv4 network written as str(IPv4Network) writes it (10.213.0.0/24):
    one spelling per subnet, so subnets compare as strings too."""
    low, high = prefixes
    rule = f"an IPv4 network like 10.213.0.0/24, prefix /{low} to /{high}"
    if not isinstance(value, str) or not _CIDR_RE.fullmatch(value):
        raise InvalidArgs(field, f"{excerpt(value)} must be {rule}")
    try:
        loose = IPv4Network(value, strict=False)
    except ValueError:
        raise InvalidArgs(field, f"{excerpt(value)} must be {rule}") from None
    if not low <= loose.prefixlen <= high:
        raise InvalidArgs(field, f"{value} has prefix /{loose.prefixlen}; it must be {rule}")
    if str(loose.network_address) != value.split("/")[0]:
        raise InvalidArgs(field, f"{value} has host bits set; did you mean {loose}?")
    if str(loose) != value:  # leading zeros in the prefix length
        raise InvalidArgs(field, f"{excerpt(value)} must be written as {loose}")
    for special, what in _SPECIAL:
        if loose.overlaps(special):
            raise InvalidArgs(field, f"{value} is {what}; a network's subnet must be unicast address space")
    return loose


def check_nat_subnet(subnet: IPv4Network, pool: IPv4Network, field: str = "subnet") -> IPv4Network:
    """A nat subnet a caller names: private address space or inside the pool."""
    if any(subnet.subnet_of(p) for p in (*PRIVATE, pool)):
        return subnet
    raise InvalidArgs(field, f"{subnet} is neither private address space (10.0.0.0/8, 172.16.0.0/12, "
                             f"192.168.0.0/16) nor inside [nat] pool ({pool}): a nat network's subnet becomes a "
                             "route of the host, which would send the host's own traffic for it to the VMs")


def check_unicast_mac(mac: str, field: str = "mac") -> str:
    """A VM NIC's MAC (in check_mac's form): unicast and not all zeros."""
    if int(mac[:2], 16) & 1:
        raise InvalidArgs(field, f"{mac} is a multicast address; a VM NIC needs a unicast MAC "
                                 "(first octet even, e.g. 02:...)")
    if mac == "00:00:00:00:00:00":
        raise InvalidArgs(field, "00:00:00:00:00:00 is no NIC's address; a VM NIC needs a unicast MAC")
    return mac


def check_ip(value: object, field: str = "ip") -> IPv4Address:
    """A dotted quad as str(IPv4Address) writes it (no leading zeros)."""
    if isinstance(value, str) and _IP_RE.fullmatch(value):
        try:
            address = IPv4Address(value)
        except ValueError:
            pass
        else:
            if str(address) == value:
                return address
    raise InvalidArgs(field, f"{excerpt(value)} must be an IPv4 address like 10.213.0.2")


def gateway(subnet: IPv4Network) -> IPv4Address:
    """fcnetd's own address on a nat network: the first host address."""
    return subnet.network_address + 1


def pick_subnet(pool: IPv4Network, taken: Iterable[IPv4Network], prefix: int = 24) -> IPv4Network:
    """The first /`prefix` of `pool` that overlaps nothing in `taken`. One
    pass over `taken` sorted, so a pool of 256 /24s beside 4,094 networks
    costs a sort, not a million overlap tests."""
    size = 1 << (32 - prefix)
    low, high = int(pool.network_address), int(pool.broadcast_address)
    spans = sorted((int(t.network_address), int(t.broadcast_address)) for t in taken if t.overlaps(pool))
    candidate = low
    for start, end in spans:
        if end < candidate:
            continue
        if start >= candidate + size:
            break  # sorted by start: nothing later reaches the candidate
        candidate = low + -(-(end + 1 - low) // size) * size  # the next aligned block after this span
        if candidate > high:
            break
    if candidate + size - 1 <= high:
        return IPv4Network((candidate, prefix))
    raise AddressUnavailable(
        f"subnet: the pool {pool} has no free /{prefix} (each overlaps another network or a host address "
        f"or route); give a subnet, or an admin widens [nat] pool")


def conflict(subnet: IPv4Network, taken: Iterable[tuple[IPv4Network, str]]) -> str | None:
    """What `subnet` overlaps, as `taken` describes it, or None."""
    for other, what in taken:
        if subnet.overlaps(other):
            return what
    return None


def capacity(subnet: IPv4Network) -> int:
    """How many VM addresses a nat subnet has: all but the network and
    broadcast addresses and the gateway."""
    return subnet.num_addresses - 3


def allocate(subnet: IPv4Network, used: set[IPv4Address], wanted: IPv4Address | None = None) -> IPv4Address:
    """A VM's address: `wanted` if it may be had, else the lowest free host
    address after the gateway."""
    gw = gateway(subnet)
    if wanted is not None:
        if wanted not in subnet:
            why = f"is outside the network's subnet {subnet}"
        elif wanted == subnet.network_address:
            why = f"is the network address of {subnet}"
        elif wanted == subnet.broadcast_address:
            why = f"is the broadcast address of {subnet}"
        elif wanted == gw:
            why = f"is the gateway's address (fcnetd's own on {subnet})"
        elif wanted in used:
            why = "is taken by another VM NIC on this network"
        else:
            return wanted
        raise AddressUnavailable(f"ip: {wanted} {why}")
    address = gw + 1
    while address < subnet.broadcast_address:
        if address not in used:
            return address
        address += 1
    raise AddressUnavailable(f"ip: the subnet {subnet} has no free address ({capacity(subnet):,} "
                             "VM addresses, all in use); detach a VM or use a network with a larger subnet")


def new_mac(taken: set[str]) -> str:
    """A random locally administered unicast MAC (first octet 02) not in
    `taken`. 2^40 choices: a clash is retried, never expected twice."""
    for _ in range(_MAC_TRIES):
        mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        if mac not in taken:
            return mac
    raise AddressUnavailable("mac: no free MAC found; this should not happen, try again")


def claim_mac(taken: set[str], wanted: str = "") -> str:
    """A VM NIC's MAC on a nat network, where it keys the VM's static
    lease: `wanted` (already in check_mac's form) if it is unicast and no
    other NIC on the network has it, else a new one."""
    if not wanted:
        return new_mac(taken)
    check_unicast_mac(wanted)
    if wanted in taken:
        raise AddressUnavailable(f"mac: {wanted} is taken by another VM NIC on this network; "
                                 "its DHCP lease is keyed by MAC")
    return wanted
