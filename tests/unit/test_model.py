import pytest

from fcnetd.errors import InvalidArgs
from fcnetd.model import (auto_name, check_ifname, check_mac, check_vlan, parse_tap_tag, tap_tag)
from fcnetd.names import escape_label, network_path, unescape_label


@pytest.mark.parametrize("vlan", [0, 1, 10, 4094])
def test_valid_vlans(vlan):
    assert check_vlan(vlan) == vlan


@pytest.mark.parametrize("vlan", [-1, 4095, 4096, 65535, True, "10", 1.5])
def test_invalid_vlans_name_the_field(vlan):
    with pytest.raises(InvalidArgs, match="^vlan: "):
        check_vlan(vlan)


@pytest.mark.parametrize("name", ["fcbr0", "br0", "virbr0", "a", "x" * 15, "br-lan_1.2"])
def test_valid_ifnames(name):
    assert check_ifname(name) == name


@pytest.mark.parametrize("name", ["", "x" * 16, "a/b", "a:b", "a b", "a%d", ".", "..", "brü", "a\nb", None, 5])
def test_invalid_ifnames(name):
    with pytest.raises(InvalidArgs, match="^bridge: "):
        check_ifname(name)


def test_auto_names_follow_the_guide():
    assert auto_name("fcbr0", 0) == "fcbr0"
    assert auto_name("fcbr0", 10) == "fcbr0-vlan-10"
    assert auto_name("br0", 100) == "br0-vlan-100"


def test_mac_is_normalised():
    assert check_mac("02:FC:00:00:00:01") == "02:fc:00:00:00:01"
    with pytest.raises(InvalidArgs, match="^mac: "):
        check_mac("02:fc:00:00:00")


def test_tap_tag_round_trip_even_with_colons_in_vm_id():
    assert parse_tap_tag(tap_tag("vm:1", "eth0")) == ("vm:1", "eth0")
    assert parse_tap_tag("something else") is None
    assert parse_tap_tag(None) is None
    assert parse_tap_tag("fcnetd:novm") is None


@pytest.mark.parametrize("label", ["8cb5529a-e8fd-4454-9510-213fde016647", "a", "", "ü/x"])
def test_path_labels_escape_like_sd_bus(label):
    escaped = escape_label(label)
    assert all(c.isalnum() or c == "_" for c in escaped)
    assert not escaped[0].isdigit()
    assert unescape_label(escaped) == label


def test_network_path():
    assert network_path("1a") == "/org/fcnetd/Network1/network/_31a"
