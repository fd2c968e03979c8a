"""rtnetlink read by hand: acknowledgements, dump ends, and the bridge-port
VLAN dump (the sockets themselves are tried in tests/system/test_rawnetlink.py)."""

import errno
import struct

from pyroute2.netlink.rtnl import RTM_NEWLINK

from fcnetd.rawnetlink import ack_errno as _ack
from fcnetd.rawnetlink import dump_end, parse_port_vlans


def _error_msg(seq: int, err: int) -> bytes:
    payload = struct.pack("=i", -err) + struct.pack("=LHHLL", 32, RTM_NEWLINK, 5, seq, 0)
    return struct.pack("=LHHLL", 16 + len(payload), 2, 0, seq, 0) + payload


def _done_msg(seq: int, err: int = 0) -> bytes:
    return struct.pack("=LHHLLi", 20, 3, 2, seq, 0, -err)


def _attr(t, payload):
    raw = struct.pack("=HH", 4 + len(payload), t) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _port_msg(index: int, vlans: list[tuple[int, int]], family: int = 7, seq: int = 9) -> bytes:
    """One message of an AF_BRIDGE link dump with RTEXT_FILTER_BRVLAN:
    ifinfomsg, name, master, then IFLA_AF_SPEC with one IFLA_BRIDGE_VLAN_INFO
    (flags, vid) per VLAN (none: a kernel without VLAN filtering)."""
    body = struct.pack("=BxHiII", family, 1, index, 0x1043, 0) + _attr(3, f"port{index}".encode() + b"\0")
    body += _attr(10, struct.pack("=I", 2))
    if vlans:
        body += _attr(26 | 0x8000, b"".join(_attr(2, struct.pack("=HH", f, vid)) for f, vid in vlans))
    return struct.pack("=LHHLL", 16 + len(body), RTM_NEWLINK, 2, seq, 0) + body


def test_ack_is_found_by_sequence_number():
    data = _error_msg(6, errno.ENODEV) + _error_msg(7, 0)
    assert _ack(data, 7) == 0
    assert _ack(data, 6) == errno.ENODEV
    assert _ack(data, 8) is None
    assert _ack(b"", 1) is None


def test_a_dump_ends_with_done_or_a_refusal_of_its_own():
    assert dump_end(_port_msg(3, []), 9) is None
    assert dump_end(_port_msg(3, []) + _done_msg(9), 9) == 0
    assert dump_end(_done_msg(8), 9) is None
    assert dump_end(_error_msg(9, errno.EOPNOTSUPP), 9) == errno.EOPNOTSUPP
    assert dump_end(_done_msg(9, errno.EMSGSIZE), 9) == errno.EMSGSIZE


def test_every_ports_vlans_come_from_one_dump():
    """Item 8 of issue 9: one dump gives every port's VLANs, by index, in the
    form set_port_vlans compares with (VID -> {'pvid', 'untagged'})."""
    part1 = _port_msg(5, [(0x2 | 0x4, 10)]) + _port_msg(6, [(0, 10), (0, 20), (0x6, 1)])
    part2 = _port_msg(2, [(0x1 | 0x6, 1)]) + _port_msg(7, []) + _done_msg(9)
    result = {}
    for part in (part1, part2):
        parse_port_vlans(part, result)
    assert result == {5: {10: {"pvid", "untagged"}}, 6: {10: set(), 20: set(), 1: {"pvid", "untagged"}},
                      2: {1: {"pvid", "untagged"}}, 7: {}}


def test_messages_of_other_families_are_not_ports():
    result = {}
    parse_port_vlans(_port_msg(5, [(0x6, 10)], family=0), result)
    assert result == {}
