"""The isolation probe: frames sent in a tagged network's VLAN must reach no
other VLAN of its bridge, nor its untagged segment.

Three probe ports (probeport.py) for the length of the call, all on the
network's bridge:
- the sender, a tagged member of the network's VLAN only, sends a broadcast
  and a unicast to the listener's MAC (a MAC its VLAN never learned, so the
  bridge floods it there as any unknown destination);
- the control, a tagged member of the network's VLAN too, must receive both:
  if it does not, the bridge forwarded nothing in the VLAN itself and the
  silence elsewhere proves nothing;
- the listener is a tagged member of every other VLAN of fcnetd's networks
  on the bridge and an untagged member of the bridge's default VLAN (the
  untagged segment), unless that is the network's own VLAN. One port for all
  of them: the kernel hands each frame's VLAN tag over with it
  (PACKET_AUXDATA), so the tag says which segment it came through, and a
  bridge has 1,023 ports, not one per VLAN to spare.

The frames carry the IEEE local experimental EtherType 0x88B5, a mark and
a random nonce: only this call's frames count, whatever else (another probe,
a VM) sends meanwhile. The network's VMs, and the uplink's switch, see the
two frames; they carry no address of any protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from dataclasses import dataclass

from .errors import Internal
from .netlink import Netlink
from .probeport import ProbePort, mac_bytes

ETHERTYPE = 0x88B5  # IEEE 802 local experimental: nobody's protocol
MARK = b"fcnetd-isolation"
NONCE_BYTES = 8
BROADCAST = "ff:ff:ff:ff:ff:ff"
KINDS = {b"B": "broadcast", b"U": "unicast"}  # the byte after the nonce, the kind of frame
MIN_FRAME = 60  # an Ethernet frame's minimum, without its FCS
ETH_P_ALL, ETH_P_8021Q = 0x0003, 0x8100
SOL_PACKET, PACKET_AUXDATA = 263, 8
TP_STATUS_VLAN_VALID = 0x10
PACKET_OUTGOING = 4
AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata


@dataclass(frozen=True)
class Seen:
    """What one probe saw. A leak is (VID the listener got it tagged with,
    None for untagged: the bridge's default VLAN; the kind of frame)."""
    sender: str  # the sender's port (the bridge side), e.g. fcprobe1234b
    sender_mac: str
    listener_mac: str  # the unicast's destination
    nonce: str  # hex
    control: frozenset  # kinds the control received
    leaks: frozenset  # {(vid | None, kind)}


# -- frames (pure) ---------------------------------------------------------------
def probe_frame(dst: str, src: str, vlan: int, nonce: bytes, kind: bytes) -> bytes:
    """One probe frame, 802.1Q-tagged with `vlan`, padded to the minimum size."""
    data = (mac_bytes(dst) + mac_bytes(src) + struct.pack("!HHH", ETH_P_8021Q, vlan, ETHERTYPE)
            + MARK + nonce + kind)
    return data.ljust(MIN_FRAME, b"\0")


def match(frame: bytes, nonce: bytes, aux_vid: int | None = None) -> tuple[int | None, str] | None:
    """(VID, kind) of one of this probe's frames, else None. The VID is the
    tag in the frame or, as the kernel usually hands it over, aux_vid (the
    tag it took off); None: the frame came untagged."""
    vid = aux_vid
    pos = 12
    try:
        (ethertype,) = struct.unpack_from("!H", frame, pos)
        if ethertype == ETH_P_8021Q:
            (tci, ethertype) = struct.unpack_from("!HH", frame, pos + 2)
            vid, pos = tci & 0x0FFF, pos + 4
    except struct.error:
        return None
    body = frame[pos + 2:]
    if ethertype != ETHERTYPE or not body.startswith(MARK + nonce):
        return None
    kind = KINDS.get(body[len(MARK) + len(nonce):len(MARK) + len(nonce) + 1])
    return None if kind is None else (vid, kind)


def aux_vid(ancdata) -> int | None:
    """The VLAN tag the kernel took off a received frame, from its
    PACKET_AUXDATA; None when it had none."""
    for level, kind, value in ancdata:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= AUXDATA.size:
            status, _len, _snap, _mac, _net, tci, _tpid = AUXDATA.unpack_from(value)
            if status & TP_STATUS_VLAN_VALID:
                return tci & 0x0FFF
    return None


# -- sockets -----------------------------------------------------------------------
def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                         socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.bind((ifname, ETH_P_ALL))
    except BaseException:
        sock.close()
        raise
    return sock


class _Collector:
    """Reads a socket whenever the event loop finds it readable and keeps
    this probe's frames: (VID or None, kind)."""

    def __init__(self, sock: socket.socket, nonce: bytes):
        self.sock, self.nonce = sock, nonce
        self.got: set[tuple[int | None, str]] = set()

    def __call__(self) -> None:
        while True:
            try:
                data, anc, _flags, addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(AUXDATA.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # a port going away under the socket: what was seen stands
            if addr[2] == PACKET_OUTGOING:
                continue
            found = match(data, self.nonce, aux_vid(anc))
            if found is not None:
                self.got.add(found)


async def exchange(sender: ProbePort, control: ProbePort, listener: ProbePort, vlan: int,
                   timeout: float) -> Seen:
    """Sends the two frames from `sender` and watches `control` and
    `listener` for `timeout` seconds, on the event loop (nothing blocks)."""
    loop = asyncio.get_running_loop()
    nonce = os.urandom(NONCE_BYTES)
    with contextlib.ExitStack() as stack:
        try:
            socks = {}
            for port in (sender, control, listener):
                socks[port.own] = stack.enter_context(_packet_socket(port.own))
            heard = {}
            for port in (control, listener):
                heard[port.own] = _Collector(socks[port.own], nonce)
                loop.add_reader(socks[port.own].fileno(), heard[port.own])
                stack.callback(loop.remove_reader, socks[port.own].fileno())
            for dst, kind in ((BROADCAST, b"B"), (listener.mac, b"U")):
                socks[sender.own].send(probe_frame(dst, sender.mac, vlan, nonce, kind))
        except OSError as e:
            raise Internal(f"isolation probe on {sender.own}: {e.strerror or e}") from e
        await asyncio.sleep(timeout)
        for collect in heard.values():
            collect()  # what is queued at the deadline still counts
    return Seen(sender.port, sender.mac, listener.mac, nonce.hex(),
                frozenset(kind for _vid, kind in heard[control.own].got), frozenset(heard[listener.own].got))


def listener_vlans(others: list[int], untagged: int) -> dict[int, set[str]]:
    """The listener's membership: tagged in each other VLAN, and the
    untagged segment's VID (0: none) as its PVID, egress untagged."""
    wanted = {vid: set() for vid in others}
    if untagged:
        wanted[untagged] = {"pvid", "untagged"}
    return wanted


async def probe(netlink: Netlink, network_id: str, bridge: str, bridge_index: int, vlan: int,
                others: list[int], untagged: int, timeout: float) -> Seen:
    """The whole probe: three ports made, two frames sent, the control and
    the listener watched for `timeout` seconds, the ports deleted.
    others: the bridge's other VLANs to watch; untagged: its default VLAN's
    VID, to watch untagged (0: not watched)."""
    async with contextlib.AsyncExitStack() as stack:
        ports = []
        for vlans in ({vlan: set()}, {vlan: set()}, listener_vlans(others, untagged)):
            ports.append(await stack.enter_async_context(ProbePort(netlink, network_id, bridge, bridge_index,
                                                                   vlans)))
        for port in ports:
            await port.ready()
        return await exchange(*ports, vlan, timeout)


def describe_leak(vid: int | None, untagged: int) -> str:
    """A leak's segment in words."""
    if vid is None or vid == untagged:
        return f"the untagged segment (VLAN {untagged})" if untagged else "the untagged segment"
    return f"VLAN {vid}"

