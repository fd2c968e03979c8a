"""DHCP DISCOVERs built by hand, and the server replies they draw, read from
a TAP or an uplink's far end: so a test can ask "does anyone in this VLAN
answer this MAC?" from any port and any tag, which a real client (it only
sits on its own TAP) cannot."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass

from .frames import BROADCAST, TPID

ETH_IPV4 = 0x0800
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER = 1, 2
KINDS = {2: "OFFER", 5: "ACK", 6: "NAK"}  # DHCP message types a server sends
BOOTP_BROADCAST = 0x8000  # "answer by broadcast": the reply reaches every port of the VLAN


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def discover(src: bytes, chaddr: str, xid: int, vid: int | None = None) -> bytes:
    """A DISCOVER from Ethernet address `src` asking for client `chaddr`
    (aa:bb:..), with the broadcast flag, tagged `vid` if given."""
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, BOOTP_BROADCAST, bytes(4), bytes(4),
                        bytes(4), bytes(4), bytes.fromhex(chaddr.replace(":", "")).ljust(16, b"\0"), b"", b"")
    bootp += MAGIC + bytes([53, 1, DISCOVER, 55, 3, 1, 3, 6, 255])
    bootp = bootp.ljust(300, b"\0")
    udp = struct.pack("!HHHH", 68, 67, 8 + len(bootp), 0) + bootp  # UDP checksum 0: none, valid over IPv4
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0, bytes(4),
                     b"\xff" * 4)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    tag = struct.pack("!HH", TPID, vid) if vid is not None else b""
    return BROADCAST + src + tag + struct.pack("!H", ETH_IPV4) + ip + udp


@dataclass(frozen=True)
class Reply:
    vid: int | None  # the 802.1Q tag it carried where it was read
    xid: int
    kind: int  # DHCP message type (2: OFFER)
    yiaddr: str  # the address offered
    server: str  # option 54, the server identifier


def reply(data: bytes, aux_vid: int | None = None) -> Reply | None:
    """The DHCP server reply in an Ethernet frame, else None."""
    vid, at = aux_vid, 12
    etype = struct.unpack("!H", data[at:at + 2])[0]
    if etype == TPID:
        vid = struct.unpack("!H", data[at + 2:at + 4])[0] & 0x0FFF
        at += 4
        etype = struct.unpack("!H", data[at:at + 2])[0]
    at += 2
    if etype != ETH_IPV4 or len(data) < at + 20 or data[at + 9] != socket.IPPROTO_UDP:
        return None
    at += (data[at] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", data[at:at + 4])
    bootp = data[at + 8:]
    if (sport, dport) != (67, 68) or len(bootp) < 240 or bootp[0] != 2 or bootp[236:240] != MAGIC:
        return None
    options, i = {}, 240
    while i < len(bootp) and bootp[i] != 255:
        if bootp[i] == 0:
            i += 1
            continue
        options[bootp[i]] = bootp[i + 2:i + 2 + bootp[i + 1]]
        i += 2 + bootp[i + 1]
    kind = options.get(53, b"\0")[0]
    server = str(ipaddress.IPv4Address(options[54])) if len(options.get(54, b"")) == 4 else ""
    return Reply(vid, struct.unpack("!I", bootp[4:8])[0], kind, str(ipaddress.IPv4Address(bootp[16:20])), server)
