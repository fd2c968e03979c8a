"""The text of fcnetd's nft table (firewall.render): what each nat network
gets, and the command that replaces the table in one transaction."""

import ast
import pathlib
from ipaddress import IPv4Address, IPv4Network

from fcnetd.firewall import NatNet, counter_names, render

A = NatNet("aaaa1111-0000-4000-8000-000000000001", IPv4Network("10.213.0.0/24"), IPv4Address("10.213.0.1"), "fcbr0")
B = NatNet("bbbb2222-0000-4000-8000-000000000002", IPv4Network("10.213.1.0/24"), IPv4Address("10.213.1.1"),
           "fcbr0.10")
BRIDGE_SUBNET = IPv4Network("192.168.50.0/24")  # a bridge network's, informational


def chain(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1:end]]


def test_without_a_nat_network_the_table_is_deleted():
    assert render([], [BRIDGE_SUBNET]) == "add table inet fcnetd\ndelete table inet fcnetd\n"


def test_the_table_is_replaced_in_one_command():
    text = render([A], [A.subnet])
    assert text.startswith("add table inet fcnetd\ndelete table inet fcnetd\ntable inet fcnetd {\n")
    assert text.endswith("}\n")


def test_each_nat_network_is_masqueraded_when_routed_out_of_its_port():
    assert chain(render([B, A], [A.subnet, B.subnet]), "postrouting") == [
        "type nat hook postrouting priority srcnat; policy accept;",
        'iifname "fcbr0" oifname != "fcbr0" ip saddr 10.213.0.0/24 masquerade',
        'iifname "fcbr0.10" oifname != "fcbr0.10" ip saddr 10.213.1.0/24 masquerade',
    ]


def test_forwarding_is_keyed_on_the_port_and_the_source_checked_first():
    out_a, in_a = counter_names(A.id)
    rules = chain(render([A, B], [A.subnet, B.subnet, BRIDGE_SUBNET]), "forward")
    assert rules[:12] == [
        "type filter hook forward priority filter; policy accept;",
        'iifname "fcbr0" oifname "fcbr0" accept',  # bridged, where br_netfilter is loaded
        'iifname "fcbr0" ip saddr != 10.213.0.0/24 drop',  # spoofed
        'iifname "fcbr0" meta nfproto ipv6 drop',
        'oifname "fcbr0" meta nfproto ipv6 drop',
        'iifname "fcbr0" oifname { "fcbr0", "fcbr0.10" } drop',  # to another fcnetd network's port
        'iifname "fcbr0" ip daddr { 10.213.1.0/24, 192.168.50.0/24 } drop',  # or its subnet
        'iifname "fcbr0" ip daddr 169.254.0.0/16 drop',  # cloud metadata
        f'iifname "fcbr0" counter name "{out_a}" accept',
        f'oifname "fcbr0" ct state established,related counter name "{in_a}" accept',
        'oifname "fcbr0" ct status dnat accept',
        'oifname "fcbr0" drop',
    ]
    assert 'iifname "fcbr0.10" ip daddr { 10.213.0.0/24, 192.168.50.0/24 } drop' in rules


def test_adjacent_subnets_are_not_merged_into_ones_own():
    """collapse_addresses would fold 10.213.0.0/24 and 10.213.1.0/24 into
    a /23 that overlaps A, and A's fence would lose B."""
    rules = chain(render([A], [A.subnet, B.subnet]), "forward")
    assert 'iifname "fcbr0" ip daddr { 10.213.1.0/24 } drop' in rules


def test_a_lone_network_has_no_subnet_fence_rule():
    rules = chain(render([A], [A.subnet]), "forward")
    assert not [r for r in rules if "ip daddr {" in r]


def test_from_a_nat_network_the_host_answers_only_dhcp_dns_and_icmp_to_its_gateway():
    rules = chain(render([B], [B.subnet]), "input")
    assert rules == [
        "type filter hook input priority filter; policy accept;",
        'ip daddr 10.213.1.1 iifname != { "fcbr0.10", "lo" } drop',  # the gateway is its network's only
        'iifname "fcbr0.10" meta nfproto ipv6 drop',
        'iifname "fcbr0.10" ct state established,related accept',
        'iifname "fcbr0.10" ip daddr { 10.213.1.1, 255.255.255.255 } udp dport 67 accept',
        'iifname "fcbr0.10" ip daddr 10.213.1.1 udp dport 53 accept',
        'iifname "fcbr0.10" ip daddr 10.213.1.1 tcp dport 53 accept',
        'iifname "fcbr0.10" ip daddr 10.213.1.1 ip protocol icmp accept',
        'iifname "fcbr0.10" drop',
    ]


def test_counters_are_named_by_the_whole_network_id_and_start_from_the_values_given():
    out_a, in_a = counter_names(A.id)
    assert (out_a, in_a) == ("nat_aaaa1111000040008000000000000001_out", "nat_aaaa1111000040008000000000000001_in")
    text = render([A], [A.subnet], {out_a: (12, 3400)})
    assert f"\tcounter {out_a} {{ packets 12 bytes 3400 }}" in text.splitlines()
    assert f"\tcounter {in_a} {{ packets 0 bytes 0 }}" in text.splitlines()


def test_the_text_does_not_depend_on_the_order_networks_come_in():
    assert render([A, B], [A.subnet, B.subnet]) == render([B, A], [B.subnet, A.subnet])


def test_nftables_is_imported_only_by_firewall_py():
    package = pathlib.Path(__file__).resolve().parents[2] / "fcnetd"
    importers = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(name and name.split(".")[0] == "nftables" for name in names):
                importers.add(path.name)
    assert importers == {"firewall.py"}
