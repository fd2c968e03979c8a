"""The DHCP probe: which DHCP servers answer in a network's bridge and VLAN.

A probe port is a veth pair of fcnetd's own, made, used and deleted inside
one Diagnose call: its bridge-side end is a port of the network's bridge,
a tagged member of the network's VLAN and of no other (untagged: a plain
port, as a TAP of that network is); its other end stays in the daemon's
namespace with no address, and a raw socket on it sends one DHCPDISCOVER
(with the broadcast flag, tagged with the VLAN where the port is tagged)
and collects the OFFERs until the timeout. Nothing is leased: a DISCOVER
only asks.

Both ends are named `fcprobe<4 digits>{b,d}` and carry the ifalias
`fcnetd-probe:<network id>`. The kernel cannot set an alias while it makes
the pair, so a daemon killed between the two steps leaves a veth with the
name and no alias: reap() takes both for probe ports (a veth of that name
with another alias is not fcnetd's and is left alone).
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from .errors import FcnetError, Internal
from .netlink import Device, Netlink, translate

PREFIX = "fcprobe"
MARK = "fcnetd-probe:"
NAME_TRIES = 8
READY_SECONDS = 3.0  # the kernel raises a veth's carrier within a second (linkwatch)
RESEND_SECONDS = 1.0
ETH_P_ALL, ETH_P_IP, ETH_P_8021Q = 0x0003, 0x0800, 0x8100
PACKET_OUTGOING = 4
DHCP_MAGIC = b"\x63\x82\x53\x63"
DHCPDISCOVER, DHCPOFFER = 1, 2
BOOTP_FLAG_BROADCAST = 0x8000


@dataclass(frozen=True)
class Offer:
    """One server's answer."""
    mac: str  # the frame's source: the server's (or its relay's) MAC
    server: str  # its server identifier (option 54), else the packet's source address
    address: str  # the address it offered
    subnet: str  # that address's network, from the offered mask ("" without one)
    router: str = ""

    def row(self) -> dict:
        return {"Mac": self.mac, "Server": self.server, "Address": self.address, "Subnet": self.subnet,
                "Router": self.router}

    def __str__(self) -> str:
        return (f"{self.server} (MAC {self.mac}) offered {self.address}"
                + (f" in {self.subnet}" if self.subnet else "") + (f", router {self.router}" if self.router else ""))


# -- packets (pure) -----------------------------------------------------------------
def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def discover_frame(src_mac: str, chaddr: str, xid: int, vlan: int = 0) -> bytes:
    """An Ethernet frame with a DHCPDISCOVER from 0.0.0.0 to the broadcast
    address, 802.1Q-tagged with `vlan` when it is not 0; `chaddr` is the
    client it asks for."""
    options = bytes([53, 1, DHCPDISCOVER, 55, 4, 1, 3, 6, 54, 255])
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, BOOTP_FLAG_BROADCAST, bytes(4),
                        bytes(4), bytes(4), bytes(4), mac_bytes(chaddr), b"", b"") + DHCP_MAGIC + options
    bootp += bytes(max(0, 300 - len(bootp)))  # the minimum BOOTP size some servers insist on
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp  # checksum 0: none (IPv4 allows it)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                         bytes(4), b"\xff" * 4)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    tag = struct.pack("!HH", ETH_P_8021Q, vlan) if vlan else b""
    return b"\xff" * 6 + mac_bytes(src_mac) + tag + struct.pack("!H", ETH_P_IP) + header + udp


def _options(data: bytes) -> dict[int, bytes]:
    found, pos = {}, 0
    while pos < len(data):
        code = data[pos]
        if code == 255:
            break
        if code == 0:
            pos += 1
            continue
        if pos + 1 >= len(data):
            break
        size = data[pos + 1]
        found.setdefault(code, data[pos + 2:pos + 2 + size])
        pos += 2 + size
    return found


def parse_offer(frame: bytes, xid: int) -> Offer | None:
    """The OFFER in an Ethernet frame (tagged or not) answering `xid`, or None."""
    try:
        (ethertype,) = struct.unpack_from("!H", frame, 12)
        pos = 14
        if ethertype == ETH_P_8021Q:
            (ethertype,) = struct.unpack_from("!H", frame, 16)
            pos = 18
        if ethertype != ETH_P_IP or frame[pos] >> 4 != 4 or frame[pos + 9] != socket.IPPROTO_UDP:
            return None
        source = IPv4Address(frame[pos + 12:pos + 16])
        pos += (frame[pos] & 0xF) * 4
        sport, dport = struct.unpack_from("!HH", frame, pos)
        bootp = pos + 8
        if (sport, dport) != (67, 68) or frame[bootp] != 2:
            return None
        (got,) = struct.unpack_from("!I", frame, bootp + 4)
        if got != xid or frame[bootp + 236:bootp + 240] != DHCP_MAGIC:
            return None
        opts = _options(frame[bootp + 240:])
        if opts.get(53) != bytes([DHCPOFFER]):
            return None
        offered = IPv4Address(frame[bootp + 16:bootp + 20])
        server = IPv4Address(opts[54][:4]) if len(opts.get(54, b"")) >= 4 else source
        mask = opts.get(1, b"")
        subnet = str(IPv4Interface(f"{offered}/{IPv4Address(mask[:4])}").network) if len(mask) >= 4 else ""
        router = str(IPv4Address(opts[3][:4])) if len(opts.get(3, b"")) >= 4 else ""
        return Offer(mac_text(frame[6:12]), str(server), str(offered), subnet, router)
    except (struct.error, IndexError, ValueError):
        return None  # not a well-formed answer: someone else's frame


# -- the probe port ---------------------------------------------------------------------
def _no_ipv6(name: str) -> None:
    """No link-local address, router solicitation or DAD from a port that lives a second or two."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1\n")
    except OSError:
        pass  # no IPv6 in this kernel


class ProbePort:
    """`async with ProbePort(netlink, network_id, bridge, vlan) as port:`
    a probe port plugged into `bridge` (an index) in `vlan`; deleted on
    the way out, whatever happened (a cancelled call included)."""

    def __init__(self, netlink: Netlink, network_id: str, bridge: str, bridge_index: int, vlan: int):
        self.netlink, self.network_id = netlink, network_id
        self.bridge, self.bridge_index, self.vlan = bridge, bridge_index, vlan
        self.port = self.own = ""
        self.mac = ""

    async def __aenter__(self) -> ProbePort:
        await self._create()
        try:
            await self._plug()
        except BaseException:
            await self._delete()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._delete()

    async def _create(self) -> None:
        for attempt in range(NAME_TRIES):
            stem = f"{PREFIX}{random.randrange(10**4):04d}"
            try:
                await self.netlink.create_veth(stem + "b", stem + "d")
            except Exception as e:
                if getattr(e, "code", None) == errno.EEXIST and attempt < NAME_TRIES - 1:
                    continue
                raise translate(e, Device("device", stem + "b"), "create") from e
            self.port, self.own = stem + "b", stem + "d"
            return

    async def _plug(self) -> None:
        alias = MARK + self.network_id
        indexes = {}
        for name in (self.port, self.own):
            msg = await self.netlink.link(name)
            if msg is None:
                raise Internal(f"probe port {name}: deleted right after it was made")
            indexes[name] = msg["index"]
            if name == self.own:
                self.mac = msg.get("address")
            await self.netlink.set_alias(msg["index"], alias, Device("device", name))
            _no_ipv6(name)
        port = Device("device", self.port)
        await self.netlink.set_master(indexes[self.port], self.bridge_index, port, self.bridge)
        if self.vlan:
            # A tagged member of its VLAN and of nothing else (not the
            # bridge's default VLAN, which enslaving gave it).
            await self.netlink.set_port_vlans(indexes[self.port], {self.vlan: set()}, port)
        for name in (self.port, self.own):
            await self.netlink.set_up(indexes[name], Device("device", name))

    async def ready(self) -> None:
        """Waits until both ends have carrier (the bridge forwards through
        a port only then); the kernel's linkwatch raises it within a second."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_SECONDS
        while loop.time() < deadline:
            states = [await self.netlink.link(n) for n in (self.port, self.own)]
            if all(m is not None and m.get("operstate") == "UP" for m in states):
                return
            await asyncio.sleep(0.02)
        raise Internal(f"probe port {self.port} on bridge {self.bridge} got no carrier in {READY_SECONDS:g} s")

    async def _delete(self) -> None:
        if self.port:
            # Shielded: a cancelled call still deletes its port.
            await asyncio.shield(self.netlink.delete_link(self.port, Device("device", self.port)))


async def exchange(ifname: str, src_mac: str, chaddr: str, vlan: int, timeout: float) -> list[Offer]:
    """Sends a DHCPDISCOVER on `ifname` (again each second) and returns the
    distinct OFFERs that arrive within `timeout` seconds. The wait is the
    event loop's: nothing blocks."""
    loop = asyncio.get_running_loop()
    xid = random.getrandbits(32)
    frame = discover_frame(src_mac, chaddr, xid, vlan)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                         socket.htons(ETH_P_ALL))
    offers: dict[tuple[str, str], Offer] = {}
    try:
        sock.bind((ifname, ETH_P_ALL))
        deadline = loop.time() + timeout
        resend = loop.time()
        while (now := loop.time()) < deadline:
            if now >= resend:
                sock.send(frame)
                resend = now + RESEND_SECONDS
            try:
                data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048),
                                                    min(deadline, resend) - now)
            except asyncio.TimeoutError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue
            offer = parse_offer(data, xid)
            if offer is not None:
                offers.setdefault((offer.mac, offer.server), offer)
    except OSError as e:
        raise Internal(f"DHCP probe on {ifname}: {e.strerror or e}") from e
    finally:
        sock.close()
    return list(offers.values())


async def probe(netlink: Netlink, network_id: str, bridge: str, bridge_index: int, vlan: int, chaddr: str,
                timeout: float) -> list[Offer]:
    """The whole probe: port made, DISCOVER sent, OFFERs collected, port
    deleted. chaddr: the client to ask for ("": the probe port's own MAC)."""
    async with ProbePort(netlink, network_id, bridge, bridge_index, vlan) as port:
        await port.ready()
        return await exchange(port.own, port.mac, chaddr or port.mac, vlan, timeout)


async def reap(netlink: Netlink) -> list[str]:
    """Deletes every probe port a killed daemon left; returns their names.
    Run with nothing probing (reconcile holds the engine's gate alone)."""
    reaped = []
    for event in await netlink.links_of_kind("veth"):
        name = event.ifname or ""
        if not name.startswith(PREFIX) or name[-1] not in "bd":
            continue
        msg = await netlink.link(name)
        alias = (msg.get("ifalias") or "") if msg is not None else None
        if alias is None or (alias and not alias.startswith(MARK)):
            continue  # gone with its peer already, or not fcnetd's
        try:
            await netlink.delete_link(name, Device("device", name))
        except FcnetError:
            continue
        reaped.append(name)
    return reaped
