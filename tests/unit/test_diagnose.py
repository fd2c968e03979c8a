"""Diagnose's check logic from facts given by hand, and the DHCP probe's
packets (no kernel)."""

import struct
from types import SimpleNamespace

from fcnetd import dhcpprobe
from fcnetd.config import BridgeConfig
from fcnetd.diagnose import (FAIL, OK, WARN, Facts, Link, bridge_checks, foreign_drop_check, lease_check,
                             nat_checks, path_checks, probe_check, tap_checks, uplink_checks)
from fcnetd.model import Attachment, tap_tag

NET = SimpleNamespace(id="n1", name="fcbr0-vlan-10", bridge="fcbr0", vlan=10, mode="bridge", subnet="", dhcp=False,
                      gateway="")
NAT = SimpleNamespace(id="n2", name="fcbr2", bridge="fcbr2", vlan=0, mode="nat", subnet="10.213.0.0/24", dhcp=True,
                      gateway="10.213.0.1")
ATT = Attachment("vm-1", "eth0", "n1")


def bridge(name="fcbr0", index=2, up=True, filtering=True) -> Link:
    return Link(name, index, "bridge", up, True, 0, vlan_filtering=filtering)


def facts(*links, **kw) -> Facts:
    f = Facts(**kw)
    for link in links:
        f.links[link.name] = link
        f.names[link.index] = link.name
    return f


def results(checks) -> dict:
    return {c.check: c.result for c in checks}


def test_a_sound_tagged_bridge_passes_and_each_fault_fails_with_a_hint():
    cfg = BridgeConfig("fcbr0", True, "", 0)
    assert results(bridge_checks(NET, cfg, facts(bridge()))) == {
        "bridge.allowed": OK, "bridge.present": OK, "bridge.up": OK, "bridge.vlan-filtering": OK}
    down = {c.check: c for c in bridge_checks(NET, cfg, facts(bridge(up=False, filtering=False)))}
    assert down["bridge.up"].result == down["bridge.vlan-filtering"].result == FAIL
    assert "VLAN filtering not enabled on host" in down["bridge.vlan-filtering"].hint
    gone = bridge_checks(NET, None, facts())
    assert results(gone) == {"bridge.allowed": FAIL, "bridge.present": FAIL}
    assert all(c.hint for c in gone)


def test_the_uplink_must_be_a_tagged_member_of_a_bridge_networks_vlan_and_not_of_a_nat_ones():
    cfg = BridgeConfig("fcbr0", True, "eth1", 0)
    uplink = Link("eth1", 5, "", True, True, 2)
    tagged = facts(bridge(), uplink, port_vlans={5: {10: frozenset()}})
    assert results(uplink_checks(NET, cfg, tagged)) == {"uplink.present": OK, "uplink.carrier": OK, "uplink.vlan": OK}
    untagged = facts(bridge(), uplink, port_vlans={5: {10: frozenset({"pvid", "untagged"})}})
    row = uplink_checks(NET, cfg, untagged)[-1]
    assert row.result == FAIL and "802.1Q" in row.hint
    nat_tagged = SimpleNamespace(**{**vars(NET), "mode": "nat"})
    assert uplink_checks(nat_tagged, cfg, tagged)[-1].result == FAIL
    assert uplink_checks(NET, cfg, facts(bridge()))[0].detail == "uplink eth1 does not exist"


def test_tap_checks_follow_what_the_kernel_says():
    tap = Link("vmtap1", 7, "tun", True, True, 2, alias=tap_tag("vm-1", "eth0"), owner=1000, group=None)
    f = facts(bridge(), tap, port_vlans={7: {10: frozenset({"pvid", "untagged"})}})
    assert set(results(tap_checks(ATT, NET, "vmtap1", f)).values()) == {OK}
    f.port_vlans = {7: {10: frozenset({"pvid", "untagged"}), 1: frozenset({"untagged"})}}
    row = {c.check: c for c in tap_checks(ATT, NET, "vmtap1", f)}["tap.vlan"]
    assert row.result == FAIL and "1 (untagged)" in row.detail
    f.links["vmtap1"] = Link("vmtap1", 7, "tun", False, False, 0, alias=tap_tag("vm-1", "eth0"))
    got = results(tap_checks(ATT, NET, "vmtap1", f))
    assert (got["tap.up"], got["tap.carrier"], got["tap.bridge"]) == (FAIL, WARN, FAIL)
    # a TAP of that name that is not this VM NIC's is no TAP of it
    f.links["vmtap1"] = Link("vmtap1", 7, "tun", True, True, 2, alias=tap_tag("vm-9", "eth0"))
    assert results(tap_checks(ATT, NET, "vmtap1", f)) == {"tap.present": WARN}


def test_nat_checks_and_the_lease():
    rules = "\n".join(['iifname "fcbr2" oifname != "fcbr2" ip saddr 10.213.0.0/24 masquerade',
                       'iifname "fcbr2" ip saddr != 10.213.0.0/24 drop',
                       'iifname "fcbr2" counter name "nat_x_out" accept',
                       'oifname "fcbr2" ct state established,related counter name "nat_x_in" accept',
                       'iifname "fcbr2" ip daddr { 10.213.0.1, 255.255.255.255 } udp dport 67 accept',
                       'iifname "fcbr2" ip daddr 10.213.0.1 udp dport 53 accept'])
    from ipaddress import IPv4Interface
    f = facts(Link("fcbr2", 4, "bridge", True, True, 0), addresses={("fcbr2", IPv4Interface("10.213.0.1/24"))},
              forwarding=True, dnsmasq={"n2": 42}, table=rules)
    assert set(results(nat_checks(NAT, f)).values()) == {OK}
    f.table = rules.replace("masquerade", "")
    row = {c.check: c for c in nat_checks(NAT, f)}["nat.firewall"]
    assert row.result == FAIL and row.detail.endswith(": masquerade")
    att = Attachment("vm-1", "eth0", "n2", mac="02:00:00:00:00:01", ip="10.213.0.2")
    f.leases = {"n2": []}
    assert lease_check(att, NAT, f).result == WARN
    f.leases = {"n2": [("02:00:00:00:00:01", "10.213.0.2")]}
    assert lease_check(att, NAT, f).result == OK
    f.leases = {"n2": [("02:00:00:00:00:01", "10.213.0.9")]}
    assert lease_check(att, NAT, f).result == FAIL


def test_another_tables_drop_policy_warns_and_fcnetds_own_table_does_not():
    chains = [{"family": "ip", "table": "filter", "name": "FORWARD", "hook": "forward", "policy": "drop"},
              {"family": "inet", "table": "fcnetd", "name": "forward", "hook": "forward", "policy": "drop"}]
    row = foreign_drop_check(NAT, facts(chains=chains))
    assert row.result == WARN and "ip filter FORWARD" in row.detail and "fcnetd forward" not in row.detail
    # a bridge network's frames meet ip tables only through br_netfilter
    assert foreign_drop_check(NET, facts(chains=chains)).result == OK
    assert foreign_drop_check(NET, facts(chains=chains, br_netfilter=True)).result == WARN


def test_path_in_different_vlans_is_isolated_by_design():
    other = SimpleNamespace(**{**vars(NET), "id": "n3", "name": "fcbr0-vlan-20", "vlan": 20})
    config = SimpleNamespace(bridges={"fcbr0": BridgeConfig("fcbr0", True, "", 0)})
    rows = path_checks("vm-1", [ATT], "vm-2", [Attachment("vm-2", "eth0", "n3")], {"n1": NET, "n3": other},
                       config, {}, facts(bridge()))
    row = rows[-1]
    assert (row.check, row.result) == ("path.network", FAIL) and "VLAN 10" in row.detail and "VLAN 20" in row.detail
    assert "by design for isolation" in row.hint


def test_probe_results():
    ours = dhcpprobe.Offer("02:00:00:00:00:aa", "10.213.0.1", "10.213.0.2", "10.213.0.0/24")
    rogue = dhcpprobe.Offer("02:00:00:00:00:bb", "192.0.2.1", "192.0.2.50", "192.0.2.0/24")
    assert probe_check(NAT, [ours], 2, "02:00:00:00:00:01").result == OK
    assert probe_check(NAT, [ours, rogue], 2, "02:00:00:00:00:01").result == WARN
    assert probe_check(NAT, [], 2, "02:00:00:00:00:01").result == FAIL
    assert probe_check(NET, [], 2).result == WARN
    assert probe_check(NET, [rogue], 2).row()["Servers"][0]["Server"] == "192.0.2.1"


def offer_frame(xid: int, vlan: int = 0) -> bytes:
    """An OFFER as a server sends it, made by rewriting a DISCOVER."""
    frame = bytearray(dhcpprobe.discover_frame("02:00:00:00:00:bb", "02:00:00:00:00:01", xid, vlan))
    ip = 18 if vlan else 14
    frame[ip + 12:ip + 16] = bytes([192, 0, 2, 1])
    struct.pack_into("!HH", frame, ip + 20, 67, 68)
    bootp = ip + 28
    frame[bootp] = 2
    frame[bootp + 16:bootp + 20] = bytes([192, 0, 2, 50])
    opts = bytes([53, 1, 2, 54, 4, 192, 0, 2, 1, 1, 4, 255, 255, 255, 0, 3, 4, 192, 0, 2, 1, 255])
    frame[bootp + 240:bootp + 240 + len(opts)] = opts
    return bytes(frame)


def test_discover_and_offer_round_trip_tagged_or_not():
    for vlan in (0, 10):
        frame = dhcpprobe.discover_frame("02:00:00:00:00:01", "02:00:00:00:00:01", 77, vlan)
        assert frame[:6] == b"\xff" * 6 and (frame[12:14] == b"\x81\x00") == bool(vlan)
        assert dhcpprobe.parse_offer(frame, 77) is None  # a DISCOVER is no answer
        offer = dhcpprobe.parse_offer(offer_frame(77, vlan), 77)
        assert offer == dhcpprobe.Offer("02:00:00:00:00:bb", "192.0.2.1", "192.0.2.50", "192.0.2.0/24", "192.0.2.1")
        assert dhcpprobe.parse_offer(offer_frame(78, vlan), 77) is None
    assert dhcpprobe.parse_offer(b"\x00" * 20, 1) is None
    ip = dhcpprobe.discover_frame("02:00:00:00:00:01", "02:00:00:00:00:01", 1)[14:34]
    assert dhcpprobe._checksum(ip) == 0
