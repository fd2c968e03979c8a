"""Network modes through the real daemon and bus: the new options and their
errors, bridge networks with a subnet, the mode filter, the new properties
with a bridge network's values, and fcnetctl. (This daemon runs without a
NAT plane until the NAT merge; the nat engine is unit-tested against a fake
plane in tests/unit/test_engine_nat.py, the nat data path in test_nat_*.py.)"""

import json

import pytest

from fcnetd.registry import read_registry

from .harness import busctl, fcnetctl, v

INVALID = "org.freedesktop.DBus.Error.InvalidArgs"
ERR = "org.fcnetd.Network1.Error."
NETWORK = "org.fcnetd.Network1.Network"


@pytest.mark.parametrize("member,key,variant,expected", [
    ("CreateNetwork", "mode", v("i", 1), "mode: must be of D-Bus type 's' (string), got 'i'"),
    ("CreateNetwork", "subnet", v("as", ["10.0.0.0/24"]), "subnet: must be of D-Bus type 's' (string), got 'as'"),
    ("CreateNetwork", "dhcp", v("s", "true"), "dhcp: must be of D-Bus type 'b' (boolean), got 's'"),
    ("AttachVm", "ip", v("u", 167772162), "ip: must be of D-Bus type 's' (string), got 'u'"),
    ("AttachVm", "dhcp", v("i", 1), "dhcp: must be of D-Bus type 'b' (boolean), got 'i'"),
])
def test_an_option_of_the_wrong_type_names_it_and_the_type(stored, client, member, key, variant, expected):
    args = ("", "fcbr1", 0) if member == "CreateNetwork" else ("vm-2", "fcbr1", 0)
    err = client.error(member, "ssqa{sv}", *args, {key: variant})
    assert (err.type, err.text) == (INVALID, expected)


@pytest.mark.parametrize("options,expected", [
    ({"mode": v("s", "routed")}, "mode: 'routed' must be 'bridge' (layer 2 only) or 'nat'"),
    ({"subnet": v("s", "10.0.0.5/24")}, "subnet: 10.0.0.5/24 has host bits set; did you mean 10.0.0.0/24?"),
    ({"subnet": v("s", "10.0.0.0/30")}, "subnet: 10.0.0.0/30 has prefix /30; it must be an IPv4 network"),
    ({"subnet": v("s", "x" * 5000)}, "subnet: 'xxxxxxxx"),
    ({"dhcp": v("b", True)}, "dhcp: only a nat network has fcnetd's DHCP server"),
    ({"mode": v("s", "bridge"), "dhcp": v("b", True)}, "dhcp: only a nat network has fcnetd's DHCP server"),
])
def test_a_bad_option_value_is_refused_naming_the_field_and_the_rule(stored, client, daemon, options, expected):
    err = client.error("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, options)
    assert err.type == INVALID and err.text.startswith(expected), err.text
    assert len(err.text) < 300
    assert daemon.ns.link("fcbr1") is None, "a refused creation made the bridge"


@pytest.mark.parametrize("options,expected", [
    ({"ip": v("s", "10.0.0.300")}, "ip: '10.0.0.300' must be an IPv4 address like 10.213.0.2"),
    ({"ip": v("s", "192.0.2.9")}, "ip: network fcbr0 is a bridge network; fcnetd gives addresses only on a nat network"),
    ({"mode": v("s", "nat")}, "mode: network fcbr0 exists with mode 'bridge'; delete and create it to change that"),
    ({"subnet": v("s", "192.0.2.0/24")}, "subnet: network fcbr0 exists with subnet ''; delete and create it"),
    ({"dhcp": v("b", True)}, "dhcp: network fcbr0 exists with dhcp false; delete and create it to change that"),
])
def test_attach_refuses_what_its_network_cannot_take(stored, client, options, expected):
    err = client.error("AttachVm", "ssqa{sv}", "vm-2", "fcbr0", 0, options)
    assert err.type == INVALID and err.text.startswith(expected), err.text


def test_a_bridge_network_shows_the_new_properties_with_bridge_values(stored, client):
    net = client.call("GetNetwork", "s", "fcbr0")[0]
    assert (net["Mode"], net["Subnet"], net["Gateway"], net["Dhcp"]) == ("bridge", "", "", False)
    assert net["Vms"][0]["Ip"] == "" and net["Vms"][0]["VmId"] == "vm-1"
    props = client.props(net["Path"], NETWORK)
    assert (props["Mode"], props["Subnet"], props["Gateway"], props["Dhcp"]) == ("bridge", "", "", False)
    listed = client.call("ListNetworks", "a{sv}", {})[0][0]
    assert (listed["Mode"], listed["Subnet"], listed["Gateway"], listed["Dhcp"]) == ("bridge", "", "", False)
    described = json.loads(client.call("Describe")[0])["networks"][0]
    assert (described["mode"], described["subnet"], described["gateway"], described["dhcp"]) == \
        ("bridge", "", "", False)
    assert described["vms"][0]["ip"] == ""


def test_bridge_networks_with_subnets_are_shown_and_may_not_overlap(daemon, client):
    client.call("CreateNetwork", "ssqa{sv}", "lan", "fcbr0", 0, {"subnet": v("s", "192.0.2.0/24")})
    net = client.call("GetNetwork", "s", "lan")[0]
    assert (net["Mode"], net["Subnet"], net["Gateway"], net["Dhcp"]) == ("bridge", "192.0.2.0/24", "", False)
    err = client.error("CreateNetwork", "ssqa{sv}", "lan2", "fcbr1", 0, {"subnet": v("s", "192.0.2.128/25")})
    assert err.type == ERR + "SubnetConflict"
    assert err.text == "subnet: 192.0.2.128/25 overlaps network lan (192.0.2.0/24)"
    assert [n["Name"] for n in client.call("ListNetworks", "a{sv}", {})[0]] == ["lan"]
    # the record carries the subnet, and only it of the new fields
    record = read_registry(daemon.state_dir)[0].networks[net["Id"]].to_dict()
    assert record["subnet"] == "192.0.2.0/24" and "mode" not in record and "dhcp" not in record
    # an AttachVm naming the same subnet is fine; the VM gets no address on a bridge network
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {"subnet": v("s", "192.0.2.0/24"), "mode": v("s", "bridge")})
    assert client.call("GetNetwork", "s", "lan")[0]["Vms"][0]["Ip"] == ""


def test_attach_auto_creates_a_bridge_network_with_a_subnet(daemon, client):
    path = client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr1", 0, {"subnet": v("s", "198.51.100.0/24")})[0]
    props = client.props(path, NETWORK)
    assert (props["Name"], props["Origin"], props["Mode"], props["Subnet"]) == \
        ("fcbr1", "auto", "bridge", "198.51.100.0/24")


def test_list_and_count_filter_by_mode(daemon, client):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {"mode": v("s", "bridge")})
    names = lambda flt: sorted(n["Name"] for n in client.call("ListNetworks", "a{sv}", flt)[0])  # noqa: E731
    assert names({"mode": v("s", "bridge")}) == ["fcbr0", "fcbr1"]
    assert names({"mode": v("s", "nat")}) == []
    assert client.call("CountNetworks", "a{sv}", {"mode": v("s", "nat")})[0] == 0
    assert client.call("CountNetworks", "a{sv}", {"mode": v("s", "bridge")})[0] == 2
    err = client.error("ListNetworks", "a{sv}", {"mode": v("s", "vlan")})
    assert (err.type, err.text) == (INVALID, "mode: 'vlan' must be 'bridge' or 'nat'")
    err = client.error("CountNetworks", "a{sv}", {"mode": v("b", True)})
    assert (err.type, err.text) == (INVALID, "mode: must be of D-Bus type 's' (string), got 'b'")


def test_busctl_reads_the_new_fields(daemon, bus, client):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {"subnet": v("s", "203.0.113.0/24")})
    out = busctl(bus.address, "--json=short", "call", "org.fcnetd.Network1", "/org/fcnetd/Network1",
                 "org.fcnetd.Network1.Manager", "ListNetworks", "a{sv}", "1", "mode", "s", "bridge")
    entry = json.loads(out.stdout)["data"][0][0]
    assert entry["Subnet"]["data"] == "203.0.113.0/24" and entry["Dhcp"]["data"] is False


def test_fcnetctl_create_attach_show_list_with_modes(daemon, bus):
    res = fcnetctl(bus.address, "create", "fcbr0", "--mode", "nat", "--subnet", "10.0.0.5/24", check=False)
    assert res.returncode == 1
    assert "subnet: 10.0.0.5/24 has host bits set; did you mean 10.0.0.0/24? (InvalidArgs)" in res.stderr
    created = fcnetctl(bus.address, "create", "fcbr1", "--mode", "nat", "--no-dhcp").stdout
    assert fcnetctl(bus.address, "create", "fcbr0", "--subnet", "192.0.2.0/24").stdout.strip() == "created fcbr0"
    res = fcnetctl(bus.address, "attach", "vm-7", "fcbr0", "--ip", "192.0.2.7", check=False)
    assert res.returncode == 1 and "ip: network fcbr0 is a bridge network" in res.stderr
    assert fcnetctl(bus.address, "attach", "vm-7", "fcbr0", "--mac", "02:fc:00:00:00:07").stdout.strip() == \
        "attached vm-7 eth0"
    show = fcnetctl(bus.address, "show", "fcbr0").stdout.splitlines()
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in show if ": " in line}
    assert (fields["Mode"], fields["Subnet"], fields["Gateway"], fields["Dhcp"]) == ("bridge", "192.0.2.0/24", "", "no")
    header = next(line for line in show if line.startswith("VM "))
    assert header.split() == ["VM", "ID", "NIC", "IP", "MAC", "STATE", "TAP"]
    assert show[-1].split() == ["-", "vm-7", "eth0", "-", "02:fc:00:00:00:07", "stopped", "-"]
    listed = fcnetctl(bus.address, "list", "--mode", "bridge").stdout.splitlines()
    assert listed[0].split() == ["NETWORK", "BRIDGE", "VLAN", "MODE", "SUBNET", "VMS", "CREATED"]
    assert listed[1].split()[:5] == ["fcbr0", "fcbr0", "bridge", "192.0.2.0/24", "1"]
    assert created.strip() == "created fcbr1 (nat 10.213.0.0/24, gateway 10.213.0.1)", created
    nat = fcnetctl(bus.address, "list", "--mode", "nat").stdout.splitlines()
    assert nat[1].split()[:4] == ["fcbr1", "fcbr1", "nat", "10.213.0.0/24"] and nat[-1] == "1 network listed.", nat
    data = json.loads(fcnetctl(bus.address, "--json", "show", "fcbr0").stdout)
    assert (data["Mode"], data["Subnet"], data["Gateway"], data["Dhcp"]) == ("bridge", "192.0.2.0/24", "", False)
    assert data["Vms"][0]["Ip"] == "" and data["Vms"][0]["Mac"] == "02:fc:00:00:00:07"
    assert json.loads(fcnetctl(bus.address, "--json", "list").stdout)[0]["Mode"] == "bridge"
