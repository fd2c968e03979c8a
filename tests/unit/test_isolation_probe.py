"""The isolation probe's frames, what it watches and its verdict (no kernel;
the kernel tier runs it on a real VLAN-filtering bridge, scenario 17)."""

import struct
from types import SimpleNamespace

from fcnetd import isolationprobe as iso
from fcnetd.diagnose import FAIL, OK, WARN, isolation_check, other_segments

NONCE = bytes.fromhex("0011223344556677")
SENDER, LISTENER = "02:00:00:00:00:01", "02:00:00:00:00:02"
NET = SimpleNamespace(id="n1", name="fcbr0-vlan-10", bridge="fcbr0", vlan=10)


def net(vlan, bridge="fcbr0"):
    return SimpleNamespace(bridge=bridge, vlan=vlan)


def untag(frame: bytes) -> bytes:
    """The frame as a socket reads it once the kernel took its tag off."""
    return frame[:12] + frame[16:]


def auxdata(vid: int | None):
    status = iso.TP_STATUS_VLAN_VALID if vid is not None else 0
    return [(iso.SOL_PACKET, iso.PACKET_AUXDATA, iso.AUXDATA.pack(status, 60, 60, 0, 14, vid or 0, 0x8100))]


def test_a_probe_frame_is_tagged_with_its_vlan_and_carries_the_mark_and_nonce():
    frame = iso.probe_frame(iso.BROADCAST, SENDER, 10, NONCE, b"B")
    assert len(frame) == 60
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == bytes.fromhex("020000000001")
    assert struct.unpack("!HHH", frame[12:18]) == (0x8100, 10, 0x88B5)
    assert frame[18:].startswith(b"fcnetd-isolation" + NONCE + b"B")
    assert iso.probe_frame(LISTENER, SENDER, 10, NONCE, b"U")[:6] == bytes.fromhex("020000000002")


def test_match_reads_the_vlan_from_the_frame_or_from_the_kernels_auxdata():
    frame = iso.probe_frame(iso.BROADCAST, SENDER, 20, NONCE, b"B")
    assert iso.match(frame, NONCE) == (20, "broadcast")
    assert iso.match(untag(frame), NONCE, iso.aux_vid(auxdata(20))) == (20, "broadcast")
    assert iso.match(untag(iso.probe_frame(LISTENER, SENDER, 20, NONCE, b"U")), NONCE) == (None, "unicast")
    assert iso.aux_vid(auxdata(None)) is None


def test_match_ignores_every_other_frame():
    frame = iso.probe_frame(iso.BROADCAST, SENDER, 10, NONCE, b"B")
    assert iso.match(frame, bytes(8)) is None  # another probe's (or an old one's) nonce
    assert iso.match(frame[:16] + b"\x08\x00" + frame[18:], NONCE) is None  # another EtherType
    assert frame[42:43] == b"B" and iso.match(frame[:42] + b"X" + frame[43:], NONCE) is None  # an unknown kind
    assert iso.match(frame[:13], NONCE) is None
    assert iso.match(b"", NONCE) is None


def test_the_listener_is_tagged_in_the_other_vlans_and_untagged_in_the_default_one():
    assert iso.listener_vlans([20, 30], 1) == {20: set(), 30: set(), 1: {"pvid", "untagged"}}
    assert iso.listener_vlans([20], 0) == {20: set()}


def test_the_segments_watched_are_the_bridges_other_networks_vlans_and_its_default_vlan():
    nets = [net(10), net(20), net(30), net(0), net(20), net(40, "fcbr1")]
    assert other_segments(NET, nets, 1) == ([20, 30], 1)
    # A tagged network in VLAN 1 is the untagged segment (the bridge's
    # default VLAN): not watched, as a network's own VLAN is not.
    assert other_segments(SimpleNamespace(bridge="fcbr0", vlan=1), nets, 1) == ([10, 20, 30], 0)
    assert other_segments(NET, nets + [net(1)], 1) == ([20, 30], 1)
    assert other_segments(NET, nets, 0) == ([20, 30], 0)  # a bridge with no default VLAN


def seen(control=("broadcast", "unicast"), leaks=()):
    return iso.Seen("fcprobe0001b", SENDER, LISTENER, NONCE.hex(), frozenset(control), frozenset(leaks))


def test_nothing_elsewhere_and_both_frames_in_the_vlan_is_ok_and_says_what_was_sent():
    check = isolation_check(NET, seen(), [20, 30], 1, 1.0)
    assert check.check == "vlan.isolation" and check.result == OK
    assert "a port in VLAN 10 saw the broadcast and the unicast; nothing reached" in check.detail
    for part in ("fcprobe0001b", SENDER, LISTENER, "0x88b5", NONCE.hex(), "VLAN 20, VLAN 30, the untagged segment "
                 "(VLAN 1)", "within 1 s"):
        assert part in check.detail


def test_a_frame_seen_in_another_vlan_fails_naming_the_vlan_and_the_frame():
    check = isolation_check(NET, seen(leaks=[(20, "broadcast"), (20, "unicast"), (None, "broadcast")]), [20, 30], 1, 1)
    assert check.result == FAIL
    assert "VLAN 20 saw the broadcast and the unicast" in check.detail
    assert "the untagged segment (VLAN 1) saw the broadcast" in check.detail
    assert "VLAN 30" not in check.detail
    assert "(a port in VLAN 10 saw the broadcast and the unicast)" in check.detail
    assert "bridge vlan show" in check.hint and "VLAN Tagged Traffic Not Working" in check.hint
    # A leak fails even when the control saw nothing.
    assert isolation_check(NET, seen(control=(), leaks=[(30, "unicast")]), [20, 30], 1, 1).result == FAIL


def test_a_control_port_that_missed_the_broadcast_is_a_warning_the_probe_proved_nothing():
    for control in ((), ("unicast",)):
        check = isolation_check(NET, seen(control=control), [20], 1, 0.5)
        assert check.result == WARN and "proves nothing" in check.detail, check
        assert "longer timeout" in check.hint
    # The unicast is flooded in the VLAN only while the bridge has not
    # learned the listener's MAC there: the broadcast alone is the control.
    assert isolation_check(NET, seen(control=("broadcast",)), [20], 1, 0.5).result == OK

