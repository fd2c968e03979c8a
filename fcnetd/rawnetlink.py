"""rtnetlink at the byte level, where pyroute2's generality cost too much on
a hot path. pyroute2 still builds and encodes every message fcnetd sends;
this module only walks buffers of netlink messages and carries bytes.

- parse_link_events: each TAP creation sends several link events, and
  decoding them with pyroute2 cost more than creating the TAP; the few
  fields needed are read straight from nlmsghdr, ifinfomsg and a handful
  of attributes (a bridge's VLAN filtering among them, so its state comes
  with the event instead of costing a request).
- parse_port_vlans: every bridge port's VLANs from one AF_BRIDGE dump, for
  reconcile; pyroute2 decoded each port's message in full. The same
  AF_BRIDGE messages come as events (PortVlans) whenever a port's VLANs
  change, each with all of them.
- RequestSocket: the VM-start path's link change. The kernel carries it out
  inside sendmsg() and has queued its acknowledgement before sendmsg()
  returns, so there is nothing to wait for; pyroute2's asynchronous
  transport (a protocol, a queue and an async generator per request) spent
  0.15 ms around a 0.19 ms request. It also carries dumps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

NLMSG_ERROR, NLMSG_DONE, RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 2, 3, 16, 17, 18
IFLA_IFNAME, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_AF_SPEC = 3, 10, 16, 18, 26
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_VLAN_FILTERING, IFLA_BR_VLAN_DEFAULT_PVID = 7, 39
IFLA_BRIDGE_VLAN_INFO = 2
BRIDGE_VLAN_INFO_PVID, BRIDGE_VLAN_INFO_UNTAGGED = 0x2, 0x4
BRIDGE_VLAN_INFO_RANGE_BEGIN, BRIDGE_VLAN_INFO_RANGE_END = 0x8, 0x10
RTEXT_FILTER_BRVLAN = 0x2
IFF_UP, IF_OPER_UP, AF_BRIDGE = 0x1, 6, 7
SO_RCVBUFFORCE = 33  # not in Python's socket module
_NLA_F_NESTED = 0x8000
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER
_NLMSGHDR = struct.Struct("=LHHLL")
_IFINFO = struct.Struct("=BxHiII")
_IFINFO_HEAD = struct.Struct("=BxHi")  # family, type, index
_RTA = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_VLAN_INFO = struct.Struct("=HH")  # struct bridge_vlan_info: flags, vid
_EVENT_NAMES = {RTM_NEWLINK: "RTM_NEWLINK", RTM_DELLINK: "RTM_DELLINK"}
# bridge_vlan_info flags -> the names port_vlans uses; shared, not rebuilt per VID
_VLAN_FLAGS = {bits: frozenset(name for bit, name in ((BRIDGE_VLAN_INFO_PVID, "pvid"),
                                                      (BRIDGE_VLAN_INFO_UNTAGGED, "untagged")) if bits & bit)
               for bits in range(8)}


class LinkEvent(NamedTuple):
    """One link change as the kernel announced it. The first four fields are
    the original event tuple (event, ifname, up, carrier); the rest came
    later and default to "not said"."""
    event: str  # "RTM_NEWLINK" or "RTM_DELLINK"
    ifname: str | None
    up: bool
    carrier: bool
    index: int = 0
    master: int = 0  # the bridge (or other master) it is enslaved to; 0: none
    kind: str | None = None  # IFLA_INFO_KIND: "bridge", "tun", ...
    vlan_filtering: bool | None = None  # bridges only; None: the kernel did not say
    default_pvid: int | None = None  # bridges only; None: the kernel did not say


class PortVlans(NamedTuple):
    """A bridge port's VLANs as the kernel announced them: an AF_BRIDGE
    RTM_NEWLINK on RTNLGRP_LINK, sent whenever they change (`bridge vlan
    add/del`, enslaving), with all of them, not the change."""
    ifname: str | None
    index: int
    master: int  # the bridge it is a port of (the bridge itself, for its own VLANs)
    vlans: dict[int, frozenset[str]]  # VID -> flags ("pvid", "untagged"); {}: none


def messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(offset, end, type, sequence number) of each message in a buffer; the
    payload lies between offset + 16 and end."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield offset, offset + length, mtype, seq
        offset += (length + 3) & ~3


def _attrs(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in data[pos:end]."""
    while pos + _RTA.size <= end:
        alen, atype = _RTA.unpack_from(data, pos)
        if alen < _RTA.size or pos + alen > end:
            return
        yield atype & _NLA_TYPE_MASK, pos + _RTA.size, pos + alen
        pos += (alen + 3) & ~3


def _bridge_vlan_state(data: bytes, pos: int, end: int) -> tuple[bool | None, int | None]:
    """(vlan_filtering, default_pvid) from a bridge's IFLA_INFO_DATA payload;
    ~50 attributes, on every bridge event, so walked inline."""
    filtering = pvid = None
    unpack = _RTA.unpack_from
    while pos + 4 <= end:
        alen, atype = unpack(data, pos)
        if alen < 4:
            break
        if atype == IFLA_BR_VLAN_FILTERING:
            filtering = data[pos + 4] != 0
        elif atype == IFLA_BR_VLAN_DEFAULT_PVID:
            pvid = _U16.unpack_from(data, pos + 4)[0]
            break  # put after the filtering flag, and only by kernels that filter
        pos += (alen + 3) & ~3
    return filtering, pvid


def _link_info(data: bytes, pos: int, end: int) -> tuple[str | None, bool | None, int | None]:
    """(kind, vlan_filtering, default_pvid) from an IFLA_LINKINFO payload."""
    kind, state = None, (None, None)
    for atype, start, stop in _attrs(data, pos, end):
        if atype == IFLA_INFO_KIND:
            kind = data[start:stop].split(b"\0", 1)[0].decode()
        elif atype == IFLA_INFO_DATA and kind == "bridge":  # the kernel puts the kind first
            state = _bridge_vlan_state(data, start, stop)
    return (kind, *state)


# The kernel does not flag IFLA_LINKINFO NLA_F_NESTED today; a kernel that
# did would still be understood, at no cost to the walk.
_EVENT_ATTRS = frozenset((IFLA_IFNAME, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_LINKINFO | _NLA_F_NESTED))


def _link_event(data: bytes, offset: int, end: int, mtype: int) -> LinkEvent:
    base = offset + _NLMSGHDR.size
    _family, _type, index, flags, _change = _IFINFO.unpack_from(data, base)
    pos = base + _IFINFO.size
    ifname, carrier, master, info = None, False, 0, (None, None, None)
    # Inline, one set lookup per attribute: this loop runs for every
    # attribute (~40) of every link event parsed.
    unpack = _RTA.unpack_from
    while pos + 4 <= end:
        alen, atype = unpack(data, pos)
        if alen < 4:
            break
        if atype in _EVENT_ATTRS:
            if atype == IFLA_IFNAME:
                ifname = data[pos + 4:pos + alen].split(b"\0", 1)[0].decode()
            elif atype == IFLA_OPERSTATE:
                carrier = data[pos + 4] == IF_OPER_UP
            elif atype == IFLA_MASTER:
                master = _U32.unpack_from(data, pos + 4)[0]
            else:
                info = _link_info(data, pos + 4, min(pos + alen, end))
        pos += (alen + 3) & ~3
    return LinkEvent(_EVENT_NAMES[mtype], ifname, bool(flags & IFF_UP), carrier, index, master, *info)


def _port_vlans(data: bytes, offset: int, end: int) -> PortVlans:
    base = offset + _NLMSGHDR.size
    index = _IFINFO_HEAD.unpack_from(data, base)[2]
    ifname, master, vlans = None, 0, {}
    for atype, start, stop in _attrs(data, base + _IFINFO.size, end):
        if atype == IFLA_IFNAME:
            ifname = data[start:stop].split(b"\0", 1)[0].decode()
        elif atype == IFLA_MASTER:
            master = _U32.unpack_from(data, start)[0]
        elif atype == IFLA_AF_SPEC:
            _vlan_infos(data, start, stop, vlans)
    return PortVlans(ifname, index, master, vlans)


def _link_messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(offset, end, type, key) of each link message in a buffer: a link's
    own (key: its ifindex) and a bridge port's VLAN notice (AF_BRIDGE
    RTM_NEWLINK; key: minus its ifindex, so a link keeps one of each). An
    AF_BRIDGE RTM_DELLINK, a port leaving its bridge, is skipped: the
    link's own event says so (master 0)."""
    for offset, end, mtype, _seq in messages(data):
        if mtype in _EVENT_NAMES:
            family, _type, index = _IFINFO_HEAD.unpack_from(data, offset + _NLMSGHDR.size)
            if family != AF_BRIDGE:
                yield offset, end, mtype, index
            elif mtype == RTM_NEWLINK:
                yield offset, end, mtype, -index


def parse_link_events(data: bytes) -> Iterator[LinkEvent]:
    """Yields a LinkEvent for each link message in a buffer of rtnetlink
    messages (bridge ports' VLAN notices left out)."""
    for offset, end, mtype, key in _link_messages(data):
        if key > 0:
            yield _link_event(data, offset, end, mtype)


def latest_link_events(buffers: list[bytes]) -> list[LinkEvent | PortVlans]:
    """The newest event of each link in buffers, and the newest VLAN notice
    of each bridge port, in the order of those newest ones. Each carries the
    whole state, so the older ones say nothing the newest does not; a TAP
    creation sends several for the TAP and its bridge, and parsing an event
    costs ~40 attribute steps."""
    newest: dict[int, tuple[bytes, int, int, int]] = {}
    for data in buffers:
        for offset, end, mtype, key in _link_messages(data):
            newest.pop(key, None)  # re-insert: order by the newest event
            newest[key] = (data, offset, end, mtype)
    return [_link_event(data, offset, end, mtype) if key > 0 else _port_vlans(data, offset, end)
            for key, (data, offset, end, mtype) in newest.items()]


def parse_port_vlans(data: bytes, into: dict[int, dict[int, frozenset[str]]]) -> None:
    """Adds each bridge port's VLANs (VID -> flags, "pvid"/"untagged") from a
    buffer of an AF_BRIDGE link dump made with RTEXT_FILTER_BRVLAN, by
    interface index. A port without VLANs (a kernel without VLAN filtering)
    gets an empty dict. A bridge appears too, with its own ("self") VLANs."""
    for offset, end, mtype, _seq in messages(data):
        if mtype != RTM_NEWLINK:
            continue
        base = offset + _NLMSGHDR.size
        family, _type, index, _flags, _change = _IFINFO.unpack_from(data, base)
        if family != AF_BRIDGE:
            continue
        vlans = into.setdefault(index, {})
        for atype, start, stop in _attrs(data, base + _IFINFO.size, end):
            if atype == IFLA_AF_SPEC:
                _vlan_infos(data, start, stop, vlans)


def _vlan_infos(data: bytes, pos: int, end: int, into: dict[int, frozenset[str]]) -> None:
    """Adds the VLANs of an IFLA_AF_SPEC payload to `into`. Events list
    them compressed: a run of VIDs with the same flags is two entries, its
    first VID marked RANGE_BEGIN and its last RANGE_END."""
    begin = None
    for vtype, vstart, _vstop in _attrs(data, pos, end):
        if vtype != IFLA_BRIDGE_VLAN_INFO:
            continue
        flags, vid = _VLAN_INFO.unpack_from(data, vstart)
        if flags & BRIDGE_VLAN_INFO_RANGE_BEGIN:
            begin = vid
            continue
        first = begin if begin is not None and flags & BRIDGE_VLAN_INFO_RANGE_END else vid
        begin = None
        names = _VLAN_FLAGS[flags & 0x6]
        for each in range(first, vid + 1):
            into[each] = names


def ack_errno(data: bytes, seq: int) -> int | None:
    """The errno (0: success) of the acknowledgement of `seq` in a buffer of
    netlink messages, or None if it is not there."""
    for offset, _end, mtype, mseq in messages(data):
        if mtype == NLMSG_ERROR and mseq == seq:
            return -_ERRNO.unpack_from(data, offset + _NLMSGHDR.size)[0]
    return None


def dump_end(data: bytes, seq: int) -> int | None:
    """The errno (0: success) that ends dump `seq` in a buffer of netlink
    messages (NLMSG_DONE, or NLMSG_ERROR for a refused dump), or None if
    the dump goes on."""
    for offset, end, mtype, mseq in messages(data):
        if mseq == seq and mtype in (NLMSG_DONE, NLMSG_ERROR):
            payload = offset + _NLMSGHDR.size
            return -_ERRNO.unpack_from(data, payload)[0] if payload + _ERRNO.size <= end else 0
    return None


class RequestSocket:
    """A socket of fcnetd's own for requests, one at a time; no group
    subscriptions, so everything it reads answers a request of its own (or
    one that was cancelled: hence the sequence numbers)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = itertools.count(1)
        self._lock = asyncio.Lock()  # one request at a time: each reads its own ACK

    def _send(self, encode: Callable[[int], bytes]) -> int:
        seq = next(self._seq) & 0xFFFFFFFF or next(self._seq)
        self.sock.send(encode(seq))
        return seq

    async def _recv(self) -> bytes:
        try:
            return self.sock.recv(1 << 16)  # the kernel never sends a dump part above 32 KiB
        except BlockingIOError:  # not answered within sendmsg(): wait for it
            return await asyncio.get_running_loop().sock_recv(self.sock, 1 << 16)

    async def request(self, encode: Callable[[int], bytes]) -> None:
        """Sends encode(seq), one netlink request with NLM_F_ACK, and returns
        once the kernel acknowledged it; a refusal raises OSError with the
        kernel's errno."""
        async with self._lock:
            seq = self._send(encode)
            while True:
                code = ack_errno(await self._recv(), seq)
                if code is not None:
                    if code:
                        raise OSError(code, os.strerror(code))
                    return

    async def dump(self, encode: Callable[[int], bytes]) -> list[bytes]:
        """Sends encode(seq), one netlink dump request, and returns the
        buffers that answer it (the final NLMSG_DONE included); a refusal
        raises OSError with the kernel's errno. The kernel fills each part
        while the previous one is read, so a large dump is read in one go."""
        async with self._lock:
            seq = self._send(encode)
            parts = []
            while True:
                data = await self._recv()
                # One buffer holds one answer; one left unread by a cancelled
                # request is not ours.
                if len(data) < _NLMSGHDR.size or _NLMSGHDR.unpack_from(data)[3] != seq:
                    continue
                parts.append(data)
                code = dump_end(data, seq)
                if code is not None:
                    if code:
                        raise OSError(code, os.strerror(code))
                    return parts

    def close(self) -> None:
        self.sock.close()
