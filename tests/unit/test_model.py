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


# -- issue 9, item 14: one full match per rule, short excerpts, reserved TAP names --

from fcnetd.model import (Attachment, Network, check_description, check_id, check_name,  # noqa: E402
                          check_nic, check_tap_name, excerpt)

CHECKS = {
    "name": lambda v: check_name(v),
    "vm_name": lambda v: check_name(v, "vm_name"),
    "vm_id": lambda v: check_id(v, "vm_id"),
    "nic": check_nic,
    "mac": check_mac,
    "bridge": check_ifname,
    "tap_name": lambda v: check_tap_name(v, set()),
}
GOOD = {"name": "fcbr0", "vm_name": "web-1", "vm_id": "vm-1", "nic": "eth0", "mac": "02:fc:00:00:00:01",
        "bridge": "fcbr0", "tap_name": "vmtap000001"}


@pytest.mark.parametrize("field", sorted(CHECKS))
@pytest.mark.parametrize("tail", ["\n", "\r\n", "\n\n", "\x00"])
def test_a_trailing_newline_is_refused(field, tail):
    """`fcbr0\\n` would be a second network that looks like `fcbr0`, and a
    newline in a tag or log line forges a line."""
    assert CHECKS[field](GOOD[field]) == GOOD[field]
    with pytest.raises(InvalidArgs, match=f"^{field}: ") as e:
        CHECKS[field](GOOD[field] + tail)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field", sorted(CHECKS) + ["description", "vlan"])
def test_a_huge_value_comes_back_as_a_short_excerpt(field):
    huge = "x" * 1_000_000
    check = CHECKS.get(field) or {"description": check_description, "vlan": check_vlan}[field]
    with pytest.raises(InvalidArgs, match=f"^{field}: ") as e:
        check(huge)
    message = str(e.value)
    assert len(message) < 300, f"{len(message)} characters"
    assert "1,000,000 characters" in message


def test_a_huge_integer_comes_back_short():
    with pytest.raises(InvalidArgs, match="^vlan: ") as e:
        check_vlan(10 ** 4000)
    assert len(str(e.value)) < 200


@pytest.mark.parametrize("value,shown", [
    ("fcbr0", "'fcbr0'"),
    ("a\nb", r"'a\nb'"),
    ("x" * 40, repr("x" * 40)),
    ("y" * 41, repr("y" * 40) + "… (41 characters)"),
    ("z" * 1_000_000, repr("z" * 40) + "… (1,000,000 characters)"),
    (0, "0"), (True, "True"), (None, "None"), (1.5, "1.5"),
    (["a"] * 10**6, "a list"), ({"a": 1}, "a dict"), (b"\x00" * 10**6, "a bytes value"),
])
def test_excerpt_is_short_and_escaped(value, shown):
    assert excerpt(value) == shown


# -- issue 9, item 13: one rule for bridges and the networks named after them --

PRINTABLE = [chr(c) for c in range(0x20, 0x7f)]


@pytest.mark.parametrize("vlan", [0, 1, 4094])
def test_every_valid_bridge_gives_a_valid_auto_name(vlan):
    """The rule is a character class, so trying every printable ASCII
    character at the start and inside, and the longest name, covers it: a
    bridge the interface rule accepts can never auto-create a network the
    name rule refuses (the daemon would not start)."""
    candidates = [c + "br" for c in PRINTABLE] + ["br" + c + "0" for c in PRINTABLE] + ["a" * 15]
    accepted = []
    for bridge in candidates:
        try:
            check_ifname(bridge)
        except InvalidArgs:
            continue
        accepted.append(bridge)
        assert check_name(auto_name(bridge, vlan)) == auto_name(bridge, vlan)
    assert {"brX0", "br-0", "br_0", "br.0", "a" * 15} <= set(accepted)


@pytest.mark.parametrize("bridge,why", [
    ("br+lan", "must not contain '+'"), ("br@0", "must not contain '@'"), ("br<b>", "must not contain '<'"),
    ("-br", "must start with a letter or digit"), ("_br", "must start with a letter or digit"),
    ("br'0", "must not contain"), ('br"0', "must not contain"), ("br&0", "must not contain '&'"),
])
def test_bridge_names_outside_the_name_charset_are_refused_naming_the_rule(bridge, why):
    with pytest.raises(InvalidArgs, match="^bridge: ") as e:
        check_ifname(bridge)
    assert why in str(e.value) and "A-Z a-z 0-9 . _ -" in str(e.value)


def test_a_tap_may_not_take_a_configured_bridge_or_uplink_name():
    reserved = {"fcbr0", "fcbr2", "br-lan", "eth0"}
    for name in sorted(reserved):
        with pytest.raises(InvalidArgs, match="^tap_name: ") as e:
            check_tap_name(name, reserved)
        assert "bridge or uplink" in str(e.value)


@pytest.mark.parametrize("name", ["fcbr9", "fcbr12", "fcbr0"])
def test_a_tap_may_not_look_like_an_fcnetd_bridge(name):
    with pytest.raises(InvalidArgs, match="^tap_name: .*fcbr"):
        check_tap_name(name, set())


@pytest.mark.parametrize("name", ["vmtap123456", "tap-web1", "fc-vm1-eth0", "fcbrx", "myfcbr1"])
def test_other_tap_names_stay_allowed(name):
    assert check_tap_name(name, {"fcbr0", "eth0"}) == name


@pytest.mark.parametrize("name,why", [("vm tap", "must not contain"), ("t" * 16, "longer than 15"), ("", "non-empty")])
def test_a_tap_name_follows_the_interface_rule(name, why):
    with pytest.raises(InvalidArgs, match=f"^tap_name: .*{why}"):
        check_tap_name(name, set())


# -- issue 9, item 13: records are checked field by field --

NET_ID = "8cb5529a-e8fd-4454-9510-213fde016647"


def good_network() -> dict:
    return {"id": NET_ID, "name": "fcbr0-vlan-10", "bridge": "fcbr0", "vlan": 10, "host": "node1",
            "created": "2026-01-02T03:04:05.123456Z", "origin": "auto", "description": "lab"}


def good_attachment() -> dict:
    return {"vm_id": "vm-1", "nic": "eth0", "network_id": NET_ID, "vm_name": "web",
            "mac": "02:fc:00:00:00:01", "attached": "2026-01-02T03:04:05.123456Z"}


def test_good_records_round_trip():
    assert Network.from_dict(good_network()).to_dict() == good_network()
    assert Attachment.from_dict(good_attachment()).to_dict() == good_attachment()
    made = Network.new("", "fcbr0", 0, "node1", "auto")
    assert Network.from_dict(made.to_dict()) == made
    att = Attachment("vm-1", "eth0", made.id)
    assert Attachment.from_dict(att.to_dict()) == att


def test_optional_fields_may_be_missing():
    net = good_network()
    del net["description"]
    assert Network.from_dict(net).description == ""
    att = good_attachment()
    del att["vm_name"], att["mac"]
    assert Attachment.from_dict(att).vm_name == "" and Attachment.from_dict(att).mac == ""
    assert Network.from_dict({**good_network(), "created": "2026-01-01T00:00:00Z"}).created == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("key,value,rule", [
    ("id", 1, "UUID"), ("id", "x", "UUID"), ("id", NET_ID.upper(), "UUID"), ("id", "{" + NET_ID + "}", "UUID"),
    ("id", NET_ID + "\n", "UUID"),
    ("name", "a b", "A-Z a-z 0-9"), ("name", "fcbr0\n", "A-Z a-z 0-9"), ("name", 5, "A-Z a-z 0-9"),
    ("bridge", "br+lan", "must not contain '+'"), ("bridge", None, "interface name"),
    ("vlan", "10", "integer"), ("vlan", True, "integer"), ("vlan", 4095, "1-4094"), ("vlan", 1.0, "integer"),
    ("host", 5, "host name"), ("host", "", "host name"), ("host", "a b", "host name"), ("host", "n1\n", "host name"),
    ("created", 0, "RFC 3339"), ("created", "yesterday", "RFC 3339"), ("created", "2026-13-01T00:00:00Z", "RFC 3339"),
    ("created", "2026-02-30T00:00:00Z", "RFC 3339"), ("created", "2026-01-01T00:00:00+01:00", "RFC 3339"),
    ("created", "2026-01-01 00:00:00Z", "RFC 3339"), ("created", "2026-01-01T00:00:00Z\n", "RFC 3339"),
    ("created", "２026-01-01T00:00:00Z", "RFC 3339"),
    ("origin", "x", "'auto' or 'manual'"), ("origin", None, "'auto' or 'manual'"), ("origin", ["auto"], "'auto'"),
    ("description", 5, "printable text"), ("description", "a\nb", "printable text"),
    ("description", "d" * 257, "at most 256"),
])
def test_every_network_field_is_checked(key, value, rule):
    with pytest.raises(InvalidArgs, match=f"^networks\\[3\\]\\.{key}: ") as e:
        Network.from_dict({**good_network(), key: value}, "networks[3]")
    assert rule in str(e.value), str(e.value)


@pytest.mark.parametrize("key,value,rule", [
    ("vm_id", 5, "A-Z a-z 0-9"), ("vm_id", "vm 1", "A-Z a-z 0-9"), ("vm_id", "vm-1\n", "A-Z a-z 0-9"),
    ("nic", "eth/0", "A-Z a-z 0-9"), ("nic", None, "A-Z a-z 0-9"),
    ("network_id", "0000", "UUID"), ("network_id", 7, "UUID"),
    ("vm_name", "a b", "A-Z a-z 0-9"), ("vm_name", 5, "A-Z a-z 0-9"), ("vm_name", "web\n", "A-Z a-z 0-9"),
    ("mac", "zz", "02:fc:00:00:00:01"), ("mac", 5, "02:fc:00:00:00:01"), ("mac", "02:fc:00:00:00:01\n", "02:fc"),
    ("attached", 0, "RFC 3339"), ("attached", "", "RFC 3339"), ("attached", None, "RFC 3339"),
])
def test_every_attachment_field_is_checked(key, value, rule):
    with pytest.raises(InvalidArgs, match=f"^attachments\\[0\\]\\.{key}: ") as e:
        Attachment.from_dict({**good_attachment(), key: value}, "attachments[0]")
    assert rule in str(e.value), str(e.value)


def test_the_mac_is_normalised_on_load_as_through_the_api():
    assert Attachment.from_dict({**good_attachment(), "mac": "02:FC:00:00:00:0A"}).mac == "02:fc:00:00:00:0a"


@pytest.mark.parametrize("cls,good", [(Network, good_network), (Attachment, good_attachment)])
def test_unknown_and_missing_fields_are_refused(cls, good):
    with pytest.raises(InvalidArgs, match="unknown field 'colour'"):
        cls.from_dict({**good(), "colour": "red"})
    with pytest.raises(InvalidArgs, match=r"unknown field 'k+'… \(1,000,000 characters\) … and 1 more") as e:
        cls.from_dict({**good(), "k" * 10**6: 1, "z": 2})
    assert len(str(e.value)) < 300
    first = next(iter(good()))
    record = good()
    del record[first]
    with pytest.raises(InvalidArgs, match=f"missing field '{first}'"):
        cls.from_dict(record)


@pytest.mark.parametrize("cls,where", [(Network, "network"), (Attachment, "attachment")])
@pytest.mark.parametrize("record", [[], "x", None, 5])
def test_a_record_that_is_not_an_object_is_refused(cls, where, record):
    with pytest.raises(InvalidArgs, match=f"^{where}: must be a JSON object"):
        cls.from_dict(record)
