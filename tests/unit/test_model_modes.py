"""Network mode, subnet and DHCP, and Attachment ip, in the model and the
registry files: bridge-only registries read and write exactly as before nat
mode; a bad value in a record is refused naming the record and the field."""

import json

import pytest

from fcnetd.errors import InvalidArgs
from fcnetd.model import Attachment, Network
from fcnetd.registry import Registry, RegistryError, parse

NET_ID = "8cb5529a-e8fd-4454-9510-213fde016647"
NAT_ID = "1d3c0a56-3f4e-4f6b-9f55-0d8f7a3e2b10"
# registry.json as fcnetd wrote it before nat mode (schema 2): one bridge
# network with a description, one VLAN network, two attachments.
BRIDGE_ONLY = (
    '{"schema": 2, "seq": 7,\n "networks": [\n'
    '  {"id":"8cb5529a-e8fd-4454-9510-213fde016647","name":"fcbr0","bridge":"fcbr0","vlan":0,"host":"node1",'
    '"created":"2026-01-02T03:04:05.123456Z","origin":"auto","description":""},\n'
    '  {"id":"0b7d2a52-52b4-4a57-8d3b-7e1c9a4f3d21","name":"lab","bridge":"fcbr0","vlan":10,"host":"node1",'
    '"created":"2026-01-02T03:04:06.000001Z","origin":"manual","description":"the lab"}\n ],\n'
    ' "attachments": [\n'
    '  {"vm_id":"vm-1","nic":"eth0","network_id":"8cb5529a-e8fd-4454-9510-213fde016647","vm_name":"web",'
    '"mac":"02:fc:00:00:00:01","attached":"2026-01-02T03:04:07.000000Z"},\n'
    '  {"vm_id":"vm-2","nic":"eth1","network_id":"0b7d2a52-52b4-4a57-8d3b-7e1c9a4f3d21","vm_name":"",'
    '"mac":"","attached":"2026-01-02T03:04:08.000000Z"}\n ]}\n')


def nat_record(**over) -> dict:
    d = {"id": NAT_ID, "name": "outbound", "bridge": "fcbr1", "vlan": 0, "host": "node1",
         "created": "2026-01-03T00:00:00.000000Z", "origin": "manual", "description": "",
         "mode": "nat", "subnet": "10.213.0.0/24", "dhcp": True}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def att_record(vm="vm-9", ip="10.213.0.2", mac="02:aa:00:00:00:01", net_id=NAT_ID, **over) -> dict:
    d = {"vm_id": vm, "nic": "eth0", "network_id": net_id, "vm_name": "", "mac": mac,
         "attached": "2026-01-03T00:00:01.000000Z", "ip": ip}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def registry_text(networks, attachments) -> str:
    return json.dumps({"schema": 2, "seq": 0, "networks": networks, "attachments": attachments})


def test_a_bridge_only_registry_is_written_back_byte_for_byte(tmp_path):
    (tmp_path / "registry.json").write_text(BRIDGE_ONLY)
    reg = Registry(str(tmp_path))
    reg.load()
    net = reg.networks[NET_ID]
    assert (net.mode, net.subnet, net.dhcp, net.gateway) == ("bridge", "", False, "")
    assert all(a.ip == "" for a in reg.attachments.values())
    reg.save_now()
    assert (tmp_path / "registry.json").read_text() == BRIDGE_ONLY


def test_a_schema_1_file_loads_with_bridge_defaults():
    old = json.loads(BRIDGE_ONLY)
    old["schema"] = 1
    del old["seq"]
    snap = parse(json.dumps(old), "registry.json")
    assert {n.mode for n in snap.networks.values()} == {"bridge"}


def test_a_nat_network_and_its_attachment_round_trip():
    snap = parse(registry_text([nat_record()], [att_record()]), "r")
    net = snap.networks[NAT_ID]
    assert (net.mode, net.subnet, net.dhcp, net.gateway) == ("nat", "10.213.0.0/24", True, "10.213.0.1")
    assert net.to_dict() == nat_record()
    att = snap.attachments[("vm-9", "eth0")]
    assert att.ip == "10.213.0.2" and att.to_dict() == att_record()


def test_only_values_other_than_a_bridge_networks_are_written():
    bridge_with_subnet = Network.new("", "fcbr0", 0, "node1", "manual", subnet="192.0.2.0/24")
    assert "mode" not in bridge_with_subnet.to_dict() and "dhcp" not in bridge_with_subnet.to_dict()
    assert bridge_with_subnet.to_dict()["subnet"] == "192.0.2.0/24" and bridge_with_subnet.gateway == ""
    no_dhcp = Network.new("", "fcbr1", 0, "node1", "manual", mode="nat", subnet="10.9.0.0/24", dhcp=False)
    assert "dhcp" not in no_dhcp.to_dict()
    assert Network.from_dict(no_dhcp.to_dict()) == no_dhcp
    assert "ip" not in Attachment("vm-1", "eth0", NET_ID).to_dict()


@pytest.mark.parametrize("over,message", [
    ({"mode": "routed"}, "networks[0].mode: 'routed' must be 'bridge' (layer 2 only) or 'nat'"),
    ({"mode": 1}, "networks[0].mode: 1 must be"),
    ({"subnet": None}, "networks[0].subnet: missing: a nat network has a subnet"),
    ({"subnet": ""}, "networks[0].subnet: missing: a nat network has a subnet"),
    ({"subnet": "10.213.0.1/24"}, "networks[0].subnet: 10.213.0.1/24 has host bits set; did you mean 10.213.0.0/24?"),
    ({"subnet": "10.213.0.0/30"}, "networks[0].subnet: 10.213.0.0/30 has prefix /30"),
    ({"dhcp": "yes"}, "networks[0].dhcp: must be true or false; got 'yes'"),
    ({"mode": None}, "networks[0].dhcp: only a nat network has fcnetd's DHCP server"),
    ({"mode": "bridge"}, "networks[0].dhcp: only a nat network has fcnetd's DHCP server"),
])
def test_a_bad_network_value_is_refused_naming_record_and_field(over, message):
    with pytest.raises(RegistryError) as e:
        parse(registry_text([nat_record(**over)], []), "registry.json")
    assert message in str(e.value)


@pytest.mark.parametrize("att,message", [
    (att_record(ip="10.213.0.300"), "attachments[0].ip: '10.213.0.300' must be an IPv4 address"),
    (att_record(ip="10.213.1.2"), "attachments[0].ip: 10.213.1.2 is outside the network's subnet 10.213.0.0/24"),
    (att_record(ip="10.213.0.1"), "attachments[0].ip: 10.213.0.1 is the gateway's address"),
    (att_record(ip="10.213.0.255"), "attachments[0].ip: 10.213.0.255 is the broadcast address"),
    (att_record(ip=None), "attachments[0].ip: missing: VM NICs on nat network outbound have an address"),
    (att_record(mac=None), "attachments[0].mac: missing: VM NICs on nat network outbound have a MAC"),
    (att_record(net_id=NET_ID), "attachments[0].ip: 10.213.0.2 is set, but network fcbr0 is a bridge network"),
])
def test_a_bad_attachment_address_is_refused_naming_record_and_field(att, message):
    bridge = json.loads(BRIDGE_ONLY)["networks"][0]
    with pytest.raises(RegistryError) as e:
        parse(registry_text([bridge, nat_record()], [att]), "registry.json")
    assert message in str(e.value)


def test_two_nics_may_not_share_an_address_or_a_mac():
    first = att_record()
    with pytest.raises(RegistryError, match=r"attachments\[1\]\.ip: 10\.213\.0\.2 is also the address of VM vm-9"):
        parse(registry_text([nat_record()], [first, att_record(vm="vm-10", mac="02:aa:00:00:00:02")]), "r")
    with pytest.raises(RegistryError, match=r"attachments\[1\]\.mac: 02:aa:00:00:00:01 is also the MAC of VM vm-9"):
        parse(registry_text([nat_record()], [first, att_record(vm="vm-10", ip="10.213.0.3")]), "r")


def test_a_record_error_shows_a_huge_value_briefly():
    with pytest.raises(InvalidArgs) as e:
        Network.from_dict(nat_record(subnet="9" * 100_000), "networks[0]")
    assert e.value.field == "networks[0].subnet" and len(str(e.value)) < 200


@pytest.mark.parametrize("other", ["10.213.0.128/25", "10.213.0.0/16", "10.213.0.0/24"])
def test_networks_whose_subnets_overlap_are_refused_at_load_naming_both(other):
    """Review S5: two hand-edited nat networks with overlapping subnets
    loaded, got the same gateway on two bridges, and their fence let them
    reach each other."""
    nets = [nat_record(name="a", bridge="fcbr1"),
            nat_record(id="4d3c0a56-3f4e-4f6b-9f55-0d8f7a3e2b11", name="b", bridge="fcbr2", subnet=other)]
    with pytest.raises(RegistryError, match=rf"the subnets of networks a and b \({other}\) overlap"):
        parse(registry_text(nets, []), "registry.json")


def test_networks_with_neighbouring_subnets_load():
    nets = [nat_record(name=f"n{i}", bridge=f"fcbr{i}", id=f"4d3c0a56-3f4e-4f6b-9f55-0d8f7a3e2b{i:02d}",
                       subnet=f"10.213.{i}.0/24") for i in (3, 1, 2)]
    nets.append(nat_record(name="wide", bridge="fcbr9", id="4d3c0a56-3f4e-4f6b-9f55-0d8f7a3e2b99",
                           subnet="10.214.0.0/16"))
    assert len(parse(registry_text(nets, []), "registry.json").networks) == 4
