"""The VM-start path's netlink requests: acknowledgements read by hand."""

import asyncio
import errno
import struct

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from fcnetd.nlrequest import RequestSocket, _ack


def _error_msg(seq: int, err: int) -> bytes:
    payload = struct.pack("=i", -err) + struct.pack("=LHHLL", 32, RTM_NEWLINK, 5, seq, 0)
    return struct.pack("=LHHLL", 16 + len(payload), 2, 0, seq, 0) + payload


def test_ack_is_found_by_sequence_number():
    data = _error_msg(6, errno.ENODEV) + _error_msg(7, 0)
    assert _ack(data, 7) == 0
    assert _ack(data, 6) == errno.ENODEV
    assert _ack(data, 8) is None
    assert _ack(b"", 1) is None


def test_kernel_refusal_carries_its_errno():
    """A real request that cannot change anything: a device index no host has."""
    def encode(seq):
        msg = ifinfmsg()
        msg["index"] = 2**31 - 1
        msg["attrs"] = [("IFLA_IFALIAS", "fcnetd:test:eth0")]
        msg["header"].update(type=RTM_NEWLINK, flags=NLM_F_REQUEST | NLM_F_ACK, sequence_number=seq)
        msg.encode()
        return msg.data

    async def ask():
        sock = RequestSocket()
        try:
            await sock.request(encode)
        finally:
            sock.close()
    with pytest.raises(OSError) as e:
        asyncio.run(ask())
    assert e.value.errno in (errno.ENODEV, errno.EPERM)
