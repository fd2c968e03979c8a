"""fcnetd/ipam.py: subnets, gateways, addresses and MACs of nat networks."""

from ipaddress import IPv4Address as A, IPv4Network as N

import pytest

from fcnetd import errors as E
from fcnetd import ipam


# -- check_subnet / check_ip ---------------------------------------------------

@pytest.mark.parametrize("value", ["10.213.0.0/24", "192.168.0.0/16", "10.0.0.8/29", "172.16.4.0/22"])
def test_a_canonical_subnet_is_taken(value):
    assert str(ipam.check_subnet(value)) == value


@pytest.mark.parametrize("value,message", [
    ("10.0.0.5/24", "subnet: 10.0.0.5/24 has host bits set; did you mean 10.0.0.0/24?"),
    ("10.0.0.0/30", "subnet: 10.0.0.0/30 has prefix /30; it must be an IPv4 network like 10.213.0.0/24, "
                    "prefix /16 to /29"),
    ("10.0.0.0/15", "has prefix /15"),
    ("10.0.0.0/08", "has prefix /8"),
    ("10.0.0.0/8", "has prefix /8"),
    ("10.0.0.0", "'10.0.0.0' must be an IPv4 network like 10.213.0.0/24"),
    ("010.0.0.0/24", "'010.0.0.0/24' must be an IPv4 network"),
    ("10.0.0.0/024", "must be an IPv4 network"),
    ("300.0.0.0/24", "must be an IPv4 network"),
    ("10.0.0.0/24\n", "must be an IPv4 network"),
    ("fd00::/64", "must be an IPv4 network"),
    ("", "'' must be an IPv4 network"),
    (24, "24 must be an IPv4 network"),
    ("1" * 10_000, "(10,000 characters)"),
])
def test_a_bad_subnet_is_refused_naming_the_rule(value, message):
    with pytest.raises(E.InvalidArgs) as e:
        ipam.check_subnet(value)
    assert message in str(e.value) and e.value.field == "subnet"
    assert len(str(e.value)) < 200


def test_a_subnet_of_non_canonical_spelling_says_how_to_write_it():
    with pytest.raises(E.InvalidArgs, match=r"'10\.0\.0\.0/09' must be written as 10\.0\.0\.0/9"):
        ipam.check_subnet("10.0.0.0/09", "nat.pool", ipam.POOL_PREFIXES)


def test_the_field_and_the_prefix_range_are_the_callers():
    assert str(ipam.check_subnet("10.0.0.0/8", "nat.pool", (8, 24))) == "10.0.0.0/8"
    with pytest.raises(E.InvalidArgs, match=r"^nat\.pool: 10\.0\.0\.0/25 has prefix /25; .* /8 to /24$"):
        ipam.check_subnet("10.0.0.0/25", "nat.pool", (8, 24))


@pytest.mark.parametrize("value", ["10.213.0.2", "0.0.0.0", "255.255.255.255"])
def test_a_dotted_quad_is_an_ip(value):
    assert str(ipam.check_ip(value)) == value


@pytest.mark.parametrize("value", ["10.213.0.02", "10.213.0", "10.213.0.256", "10.213.0.2/32", " 10.0.0.1",
                                   "10.0.0.1\n", "::1", "", None, 167772161])
def test_anything_else_is_not_an_ip(value):
    with pytest.raises(E.InvalidArgs, match=r"^ip: .* must be an IPv4 address like 10\.213\.0\.2$"):
        ipam.check_ip(value)


def test_the_gateway_is_the_first_host_address():
    assert ipam.gateway(N("10.213.7.0/24")) == A("10.213.7.1")
    assert ipam.gateway(N("10.0.0.8/29")) == A("10.0.0.9")


# -- pick_subnet / conflict ------------------------------------------------------

POOL = N("10.213.0.0/16")


def test_the_first_24_of_the_pool_when_nothing_is_taken():
    assert ipam.pick_subnet(POOL, []) == N("10.213.0.0/24")


def test_taken_subnets_of_any_size_are_skipped():
    taken = [N("10.213.0.0/24"), N("10.213.1.128/25"), N("10.213.2.0/23"), N("10.213.4.8/29")]
    assert ipam.pick_subnet(POOL, taken) == N("10.213.5.0/24")


def test_taken_order_does_not_matter_and_outside_the_pool_is_ignored():
    taken = [N("10.213.1.0/24"), N("192.168.0.0/16"), N("10.213.0.0/24"), N("10.212.0.0/16")]
    assert ipam.pick_subnet(POOL, taken) == N("10.213.2.0/24")


def test_a_prefix_covering_the_pool_start_is_passed_over():
    # a host route 10.213.0.0/20 covers the first sixteen /24s
    assert ipam.pick_subnet(POOL, [N("10.213.0.0/20"), N("10.213.16.0/24")]) == N("10.213.17.0/24")


def test_a_supernet_of_the_pool_leaves_nothing():
    with pytest.raises(E.AddressUnavailable, match=r"^subnet: the pool 10\.213\.0\.0/16 has no free /24"):
        ipam.pick_subnet(POOL, [N("10.0.0.0/8")])


def test_a_full_16_pool_is_exhausted_only_after_256_networks():
    taken = []
    for i in range(256):
        picked = ipam.pick_subnet(POOL, taken)
        assert picked == N(f"10.213.{i}.0/24")
        taken.append(picked)
    with pytest.raises(E.AddressUnavailable, match="no free /24"):
        ipam.pick_subnet(POOL, taken)
    # a hole is found again
    taken.remove(N("10.213.200.0/24"))
    assert ipam.pick_subnet(POOL, taken) == N("10.213.200.0/24")


def test_the_last_block_of_the_pool_is_used():
    taken = [N("10.213.0.0/17"), N("10.213.128.0/18"), N("10.213.192.0/19"), N("10.213.224.0/20"),
             N("10.213.240.0/21"), N("10.213.248.0/22"), N("10.213.252.0/23"), N("10.213.254.0/24")]
    assert ipam.pick_subnet(POOL, taken) == N("10.213.255.0/24")


def test_conflict_names_what_overlaps():
    taken = [(N("10.1.0.0/24"), "network a (10.1.0.0/24)"), (N("10.2.0.0/16"), "route 10.2.0.0/16 via eth1")]
    assert ipam.conflict(N("10.2.5.0/24"), taken) == "route 10.2.0.0/16 via eth1"
    assert ipam.conflict(N("10.0.0.0/8"), taken) == "network a (10.1.0.0/24)"
    assert ipam.conflict(N("10.3.0.0/24"), taken) is None


# -- allocate --------------------------------------------------------------------

S29 = N("10.0.0.8/29")  # .8 network, .9 gateway, .10-.14 VMs, .15 broadcast


def test_a_29_has_five_vm_addresses_lowest_first_then_is_full():
    used = set()
    for last in range(10, 15):
        got = ipam.allocate(S29, used)
        assert got == A(f"10.0.0.{last}")
        used.add(got)
    with pytest.raises(E.AddressUnavailable) as e:
        ipam.allocate(S29, used)
    assert str(e.value) == ("ip: the subnet 10.0.0.8/29 has no free address (5 VM addresses, all in use); "
                            "detach a VM or use a network with a larger subnet")


def test_a_freed_address_is_the_next_one_given():
    used = {A("10.0.0.10"), A("10.0.0.12")}
    assert ipam.allocate(S29, used) == A("10.0.0.11")


@pytest.mark.parametrize("wanted,why", [
    ("10.0.0.8", "ip: 10.0.0.8 is the network address of 10.0.0.8/29"),
    ("10.0.0.15", "ip: 10.0.0.15 is the broadcast address of 10.0.0.8/29"),
    ("10.0.0.9", "ip: 10.0.0.9 is the gateway's address (fcnetd's own on 10.0.0.8/29)"),
    ("10.0.0.16", "ip: 10.0.0.16 is outside the network's subnet 10.0.0.8/29"),
    ("10.0.0.7", "ip: 10.0.0.7 is outside the network's subnet 10.0.0.8/29"),
    ("10.0.0.11", "ip: 10.0.0.11 is taken by another VM NIC on this network"),
])
def test_a_static_address_must_be_a_free_vm_address(wanted, why):
    with pytest.raises(E.AddressUnavailable) as e:
        ipam.allocate(S29, {A("10.0.0.11")}, A(wanted))
    assert str(e.value) == why


def test_a_static_address_at_either_end_of_the_vm_range_is_given():
    assert ipam.allocate(S29, set(), A("10.0.0.10")) == A("10.0.0.10")
    assert ipam.allocate(S29, set(), A("10.0.0.14")) == A("10.0.0.14")


def test_a_16_gives_the_lowest_free_across_octets():
    s16 = N("10.50.0.0/16")
    used = {A("10.50.0.0") + i for i in range(2, 256)}
    assert ipam.allocate(s16, used) == A("10.50.1.0")  # .1.0 is a host address in a /16
    assert ipam.allocate(s16, set(), A("10.50.255.254")) == A("10.50.255.254")
    with pytest.raises(E.AddressUnavailable, match="broadcast"):
        ipam.allocate(s16, set(), A("10.50.255.255"))


def test_a_full_16_is_reported_with_its_size():
    s16 = N("10.50.0.0/16")
    used = {A("10.50.0.0") + i for i in range(2, 65535)}
    with pytest.raises(E.AddressUnavailable, match=r"65,533 VM addresses, all in use"):
        ipam.allocate(s16, used)


# -- MACs ------------------------------------------------------------------------

def test_a_new_mac_is_locally_administered_unicast():
    for _ in range(200):
        mac = ipam.new_mac(set())
        octets = mac.split(":")
        assert len(octets) == 6 and all(len(o) == 2 and o == o.lower() for o in octets)
        assert octets[0] == "02"  # locally administered (bit 1), unicast (bit 0 clear)


def test_a_new_mac_is_unique_among_the_taken(monkeypatch):
    draws = iter([bytes([1, 2, 3, 4, 5]), bytes([1, 2, 3, 4, 5]), bytes([1, 2, 3, 4, 6])])
    monkeypatch.setattr(ipam.secrets, "token_bytes", lambda n: next(draws))
    assert ipam.new_mac({"02:01:02:03:04:05"}) == "02:01:02:03:04:06"


def test_claim_mac_keeps_a_free_unicast_mac_and_refuses_the_rest():
    assert ipam.claim_mac({"02:00:00:00:00:01"}, "02:00:00:00:00:02") == "02:00:00:00:00:02"
    assert ipam.claim_mac(set()).startswith("02:")
    with pytest.raises(E.AddressUnavailable, match=r"^mac: 02:00:00:00:00:01 is taken by another VM NIC"):
        ipam.claim_mac({"02:00:00:00:00:01"}, "02:00:00:00:00:01")
    with pytest.raises(E.InvalidArgs, match=r"^mac: 03:00:00:00:00:01 is a multicast address"):
        ipam.claim_mac(set(), "03:00:00:00:00:01")
