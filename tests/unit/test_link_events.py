"""The daemon's link-event reader: hand-parsed rtnetlink messages, read in
batches, a bridge's state carried in its own events."""

import asyncio
import os
import socket
import struct

from fcnetd.netlink import BridgeState, LinkMonitor, bridge_state_of
from fcnetd.rawnetlink import LinkEvent, latest_link_events, parse_link_events

# Link events a 6.18 kernel sent while a bridge br0 (index 2, without VLAN
# filtering support) was created, a TAP d0 (index 3) made and enslaved to
# it, and br0 set up: the messages as the kernel builds them, ~40 attributes
# each, IFLA_LINKINFO late among them.
CAPTURED = open(os.path.join(os.path.dirname(__file__), "data", "bridge_link_events.bin"), "rb").read()


def _attr(t, payload):
    raw = struct.pack("=HH", 4 + len(payload), t) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _link_msg(mtype, family, flags, name, oper, index=7, extra=b""):
    """An rtnetlink link message: nlmsghdr, ifinfomsg, IFLA_IFNAME,
    IFLA_OPERSTATE and any further attributes."""
    body = (struct.pack("=BxHiII", family, 1, index, flags, 0) + _attr(3, name.encode() + b"\0")
            + _attr(16, bytes([oper])) + extra)
    return struct.pack("=LHHLL", 16 + len(body), mtype, 0, 0, 0) + body


def _bridge_info(filtering=None, pvid=None, nested_flag=0x8000):
    """IFLA_LINKINFO {IFLA_INFO_KIND "bridge", IFLA_INFO_DATA {...}}, with
    unrelated bridge attributes around the two that matter."""
    data = _attr(1, struct.pack("=I", 1500)) + _attr(5, struct.pack("=I", 0))
    if filtering is not None:
        data += _attr(7, bytes([filtering]))
    data += _attr(8, struct.pack("=H", 0x8100))
    if pvid is not None:
        data += _attr(39, struct.pack("=H", pvid))
    return _attr(18 | nested_flag, _attr(1, b"bridge\0") + _attr(2 | nested_flag, data))


def test_link_event_parser_reads_name_flags_and_carrier():
    data = _link_msg(16, 0, 1, "vmtap123456", 6) + _link_msg(17, 0, 0, "fcbr0", 2) + _link_msg(16, 7, 1, "ignored", 6)
    assert [e[:4] for e in parse_link_events(data)] == [("RTM_NEWLINK", "vmtap123456", True, True),
                                                        ("RTM_DELLINK", "fcbr0", False, False)]


def test_a_bridge_event_carries_vlan_filtering_and_default_pvid():
    msg = _link_msg(16, 0, 1, "fcbr0", 6, index=4, extra=_attr(10, struct.pack("=I", 0)) + _bridge_info(1, 10))
    (event,) = parse_link_events(msg)
    assert event == LinkEvent("RTM_NEWLINK", "fcbr0", True, True, 4, 0, "bridge", True, 10)
    assert bridge_state_of(event) == BridgeState("fcbr0", 4, True, True, 10)


def test_vlan_filtering_switched_off_is_seen_in_the_event():
    """Item 6 of issue 9: filtering turned off behind fcnetd's back must be
    visible from the event itself, without another request."""
    (event,) = parse_link_events(_link_msg(16, 0, 1, "fcbr0", 6, index=4, extra=_bridge_info(0, 1, nested_flag=0)))
    assert event.vlan_filtering is False and bridge_state_of(event).vlan_filtering is False


def test_a_kernel_without_vlan_filtering_says_filtering_off_and_no_pvid():
    events = list(parse_link_events(CAPTURED))
    bridges = [e for e in events if e.ifname == "br0"]
    assert bridges and all(e.kind == "bridge" and e.vlan_filtering is False and e.default_pvid is None
                           for e in bridges)
    assert bridge_state_of(bridges[-1]) == BridgeState("br0", 2, True, False, 1)


def test_a_port_event_carries_its_master():
    events = [e for e in parse_link_events(CAPTURED) if e.ifname == "d0"]
    assert [e.master for e in events] == [0, 2, 2] and all(e.kind == "tun" for e in events)
    assert all(bridge_state_of(e) is None for e in events)


def test_a_deleted_bridge_has_no_state():
    (event,) = parse_link_events(_link_msg(17, 0, 0, "fcbr0", 2, extra=_bridge_info(1, 1)))
    assert bridge_state_of(event) is None


def test_a_truncated_attribute_ends_the_walk_without_reading_past_the_message():
    bad = _link_msg(16, 0, 1, "fcbr0", 6, extra=struct.pack("=HH", 200, 18) + b"\0" * 8)
    assert [e[:4] for e in parse_link_events(bad)] == [("RTM_NEWLINK", "fcbr0", True, True)]


def test_only_the_newest_event_of_each_link_is_parsed_in_a_batch():
    first = _link_msg(16, 0, 0, "vmtap1", 2, index=11)
    other = _link_msg(16, 0, 1, "fcbr0", 6, index=4, extra=_bridge_info(1, 1))
    last = _link_msg(16, 0, 1, "vmtap1", 6, index=11)
    port_notice = _link_msg(16, 7, 1, "vmtap1", 6, index=11)
    events = latest_link_events([first + other, last + port_notice])
    assert [(e.ifname, e.up, e.carrier) for e in events if isinstance(e, LinkEvent)] == [
        ("fcbr0", True, True), ("vmtap1", True, True)]
    assert [(type(e).__name__, e.ifname) for e in latest_link_events([CAPTURED])] == [
        ("LinkEvent", "d0"), ("PortVlans", "d0"), ("LinkEvent", "br0")]


def _watch(messages):
    """Feeds messages through a socketpair, one batch each; returns what the
    callback got and how often the event loop turned."""
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
        got = []
        watcher = loop.create_task(LinkMonitor(ours).open().run(got.append))
        try:
            await asyncio.sleep(0.01)
            before = selects
            for msg in messages:
                kernel.send(msg)
                await asyncio.sleep(4 * LinkMonitor.EVENT_BATCH_SECONDS)
            turns = selects - before
        finally:
            watcher.cancel()
            kernel.close()
        return got, turns
    return asyncio.run(scenario())


def test_link_watcher_sleeps_while_a_batch_waits():
    """Regression: during the batch delay the event socket stayed in the
    selector, readable, so the event loop woke on every turn (a busy spin
    that took a CPU from the bus and the caller after every TAP change)."""
    events, turns = _watch([_link_msg(16, 0, 1, f"vmtap00000{i}", 6, index=20 + i) for i in range(5)])
    assert [tuple(e[:4]) for e in events] == [("RTM_NEWLINK", f"vmtap00000{i}", True, True) for i in range(5)]
    assert turns < 60, f"the event loop turned {turns} times for 5 event batches"


def test_link_monitor_delivers_rich_events():
    events, _ = _watch([_link_msg(16, 0, 1, "fcbr0", 6, index=4, extra=_bridge_info(0, 1))])
    assert [bridge_state_of(e) for e in events] == [BridgeState("fcbr0", 4, True, False, 1)]


def test_link_monitor_queues_what_happens_between_open_and_run():
    """Subscribing before the start-up dump: events sent after open() and
    before run() are delivered, not lost."""
    async def scenario():
        ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        monitor = LinkMonitor(ours).open()
        kernel.send(_link_msg(16, 0, 1, "fcbr0", 6, index=4, extra=_bridge_info(0, 1)))  # "during the dump"
        got = []
        task = asyncio.get_running_loop().create_task(monitor.run(got.append))
        deadline = asyncio.get_running_loop().time() + 5
        while not got and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        kernel.close()
        return got
    got = asyncio.run(scenario())
    assert [e.ifname for e in got] == ["fcbr0"]
