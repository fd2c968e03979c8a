"""The VM-start path's netlink requests: acknowledgements read by hand
(the socket itself is tried in tests/system/test_rawnetlink.py)."""

import errno
import struct

from pyroute2.netlink.rtnl import RTM_NEWLINK

from fcnetd.rawnetlink import ack_errno as _ack


def _error_msg(seq: int, err: int) -> bytes:
    payload = struct.pack("=i", -err) + struct.pack("=LHHLL", 32, RTM_NEWLINK, 5, seq, 0)
    return struct.pack("=LHHLL", 16 + len(payload), 2, 0, seq, 0) + payload


def test_ack_is_found_by_sequence_number():
    data = _error_msg(6, errno.ENODEV) + _error_msg(7, 0)
    assert _ack(data, 7) == 0
    assert _ack(data, 6) == errno.ENODEV
    assert _ack(data, 8) is None
    assert _ack(b"", 1) is None
