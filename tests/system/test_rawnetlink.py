"""The VM-start path's request socket against a real kernel, in a namespace
of the test's own: a change acknowledged, a refusal with its errno."""

CODE = r"""
import asyncio, errno
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWLINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from fcnetd.rawnetlink import RequestSocket

def encoder(index, alias):
    def encode(seq):
        msg = ifinfmsg()
        msg["index"] = index
        msg["attrs"] = [("IFLA_IFALIAS", alias)]
        msg["header"].update(type=RTM_NEWLINK, flags=NLM_F_REQUEST | NLM_F_ACK, sequence_number=seq)
        msg.encode()
        return msg.data
    return encode

async def main():
    sock = RequestSocket()
    try:
        await sock.request(encoder(1, "set-by-request-socket"))
        try:
            await sock.request(encoder(2**31 - 1, "nobody"))
        except OSError as e:
            print(errno.errorcode[e.errno])
    finally:
        sock.close()
asyncio.run(main())
"""


def test_request_socket_changes_a_link_and_reports_refusals(ns):
    assert ns.python(CODE).strip() == "ENODEV"
    assert ns.link("lo")["ifalias"] == "set-by-request-socket"
