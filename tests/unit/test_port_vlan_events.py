"""A bridge port's VLAN notices (AF_BRIDGE RTM_NEWLINK on RTNLGRP_LINK),
built as the kernel's br_fill_ifinfo builds them for br_ifinfo_notify:
ifinfomsg, name, master, MTU, operstate, address, IFLA_PROTINFO, then
IFLA_AF_SPEC with the VLANs compressed (a run of VIDs with the same flags
as a RANGE_BEGIN and a RANGE_END entry)."""

import os
import struct

from fcnetd.rawnetlink import LinkEvent, PortVlans, latest_link_events, parse_link_events

PVID, UNTAGGED, BEGIN, END = 0x2, 0x4, 0x8, 0x10
PU = frozenset({"pvid", "untagged"})
CAPTURED = open(os.path.join(os.path.dirname(__file__), "data", "bridge_link_events.bin"), "rb").read()


def _attr(t, payload):
    raw = struct.pack("=HH", 4 + len(payload), t) + payload
    return raw + b"\0" * (-len(raw) % 4)


def port_notice(name: str, index: int, master: int, vlans: list[tuple[int, int]] | None,
                mtype: int = 16) -> bytes:
    """vlans: (flags, vid) entries in the order the kernel puts them; None:
    no IFLA_AF_SPEC at all (older kernels leave it out for a port without
    VLANs; newer ones send it empty)."""
    body = struct.pack("=BxHiII", 7, 1, index, 0x11043, 0)
    body += _attr(3, name.encode() + b"\0") + _attr(10, struct.pack("=I", master))
    body += _attr(4, struct.pack("=I", 1500)) + _attr(16, bytes([6])) + _attr(1, bytes(6))
    body += _attr(12 | 0x8000, _attr(1, bytes([3])) + _attr(2, struct.pack("=H", 32)))  # IFLA_PROTINFO
    if vlans is not None:
        body += _attr(26, b"".join(_attr(2, struct.pack("=HH", f, vid)) for f, vid in vlans))
    return struct.pack("=LHHLL", 16 + len(body), mtype, 0, 0, 0) + body


def own_event(name: str, index: int, master: int) -> bytes:
    body = struct.pack("=BxHiII", 0, 1, index, 0x1043, 0) + _attr(3, name.encode() + b"\0")
    body += _attr(10, struct.pack("=I", master)) + _attr(16, bytes([6]))
    return struct.pack("=LHHLL", 16 + len(body), 16, 0, 0, 0) + body


def test_a_port_notice_gives_every_vlan_of_the_port_with_its_flags():
    data = port_notice("vmtap000001", 12, 4, [(PVID | UNTAGGED, 10), (0, 20)])
    assert latest_link_events([data]) == [PortVlans("vmtap000001", 12, 4, {10: PU, 20: frozenset()})]


def test_a_compressed_run_of_vids_is_every_vid_in_it():
    """The uplink in 1 (pvid untagged), tagged in 10..12 and 20: the kernel
    sends 10..12 as two entries."""
    data = port_notice("upl0", 5, 4, [(PVID | UNTAGGED, 1), (BEGIN, 10), (END, 12), (0, 20)])
    [event] = latest_link_events([data])
    assert event.vlans == {1: PU, 10: frozenset(), 11: frozenset(), 12: frozenset(), 20: frozenset()}


def test_a_port_without_vlans_has_none_whether_af_spec_is_empty_or_absent():
    assert latest_link_events([port_notice("vmtap000001", 12, 4, [])])[0].vlans == {}
    assert latest_link_events([port_notice("vmtap000001", 12, 4, None)])[0].vlans == {}


def test_a_real_kernels_notice_for_a_port_enslaved_without_vlan_filtering():
    """In the capture (a 6.18 kernel without VLAN filtering), enslaving d0
    (index 3) to br0 (index 2) sent one AF_BRIDGE notice."""
    notices = [e for e in latest_link_events([CAPTURED]) if isinstance(e, PortVlans)]
    assert notices == [PortVlans("d0", 3, 2, {})]


def test_the_newest_notice_of_each_port_is_kept_beside_the_links_own_event():
    first = port_notice("vmtap000001", 12, 4, [(PVID | UNTAGGED, 1)])
    own = own_event("vmtap000001", 12, 4)
    other = port_notice("vmtap000002", 13, 4, [(PVID | UNTAGGED, 20)])
    newest = port_notice("vmtap000001", 12, 4, [(PVID | UNTAGGED, 10)])
    events = latest_link_events([first + own, other + newest])
    assert [(type(e).__name__, e.ifname) for e in events] == [
        ("LinkEvent", "vmtap000001"), ("PortVlans", "vmtap000002"), ("PortVlans", "vmtap000001")]
    assert events[2].vlans == {10: PU}


def test_a_port_leaving_its_bridge_and_dumps_of_links_give_no_notice():
    """AF_BRIDGE RTM_DELLINK is a port leaving its bridge (not the link
    deleted): the link's own event says so. parse_link_events (dumps of
    links by kind) gives LinkEvents only."""
    left = port_notice("vmtap000001", 12, 4, [(PVID | UNTAGGED, 10)], mtype=17)
    assert latest_link_events([left]) == []
    both = own_event("vmtap000001", 12, 0) + port_notice("vmtap000001", 12, 4, [(PVID | UNTAGGED, 10)])
    assert [type(e) for e in parse_link_events(both)] == [LinkEvent]


def test_a_vlan_entry_longer_than_its_list_ends_the_walk_inside_the_list():
    data = port_notice("vmtap000001", 12, 4, None)
    spec = _attr(26, struct.pack("=HHHH", 200, 2, PVID | UNTAGGED, 10))  # the entry claims 200 bytes
    data = struct.pack("=L", len(data) + len(spec)) + data[4:] + spec
    [event] = latest_link_events([data])
    assert event.ifname == "vmtap000001" and event.vlans == {}
