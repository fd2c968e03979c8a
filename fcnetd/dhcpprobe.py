"""The DHCP probe: which DHCP servers answer in a network's bridge and VLAN.

A probe port (probeport.py) is plugged into the network's bridge, a tagged
member of the network's VLAN and of no other (untagged: a plain port, as a
TAP of that network is); a raw socket on its own end sends one
DHCPDISCOVER (with the broadcast flag, tagged with the VLAN where the port
is tagged) and collects the OFFERs until the timeout. Nothing is leased: a
DISCOVER only asks.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from .errors import Internal
from .netlink import Netlink
from .probeport import ProbePort, mac_bytes, mac_text

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
    async with ProbePort(netlink, network_id, bridge, bridge_index, {vlan: set()} if vlan else None) as port:
        await port.ready()
        return await exchange(port.own, port.mac, chaddr or port.mac, vlan, timeout)
