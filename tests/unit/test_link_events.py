"""The daemon's link-event reader: hand-parsed rtnetlink messages, read in
batches."""

import asyncio
import socket
import struct

from fcnetd.netlink import Netlink
from fcnetd.rawnetlink import parse_link_events


def _attr(t, payload):
    raw = struct.pack("=HH", 4 + len(payload), t) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _link_msg(mtype, family, flags, name, oper):
    """An rtnetlink link message as the kernel sends it: nlmsghdr, ifinfomsg,
    IFLA_IFNAME and IFLA_OPERSTATE."""
    body = struct.pack("=BxHiII", family, 1, 7, flags, 0) + _attr(3, name.encode() + b"\0") + _attr(16, bytes([oper]))
    return struct.pack("=LHHLL", 16 + len(body), mtype, 0, 0, 0) + body


def test_link_event_parser_reads_name_flags_and_carrier():
    data = _link_msg(16, 0, 1, "vmtap123456", 6) + _link_msg(17, 0, 0, "fcbr0", 2) + _link_msg(16, 7, 1, "ignored", 6)
    assert list(parse_link_events(data)) == [("RTM_NEWLINK", "vmtap123456", True, True),
                                             ("RTM_DELLINK", "fcbr0", False, False)]


def test_link_watcher_sleeps_while_a_batch_waits():
    """Regression: during the batch delay the event socket stayed in the
    selector, readable, so the event loop woke on every turn (a busy spin
    that took a CPU from the bus and the caller after every TAP change)."""
    async def scenario():
        loop = asyncio.get_running_loop()
        ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        selects = 0
        select = loop._selector.select

        def counting_select(timeout=None):
            nonlocal selects
            selects += 1
            return select(timeout)
        loop._selector.select = counting_select
        events = []
        nl = Netlink()
        watcher = loop.create_task(nl.watch_links(lambda *e: events.append(e), sock=ours))
        try:
            await asyncio.sleep(0.01)
            before = selects
            for i in range(5):
                kernel.send(_link_msg(16, 0, 1, f"vmtap00000{i}", 6))
                await asyncio.sleep(4 * Netlink.EVENT_BATCH_SECONDS)
            turns = selects - before
        finally:
            watcher.cancel()
            kernel.close()
            nl.close()
        return events, turns
    events, turns = asyncio.run(scenario())
    assert [e[1] for e in events] == [f"vmtap00000{i}" for i in range(5)]
    assert turns < 60, f"the event loop turned {turns} times for 5 event batches"
