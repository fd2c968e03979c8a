"""The engine's side of nat mode, against a fake NAT plane that records each
call with what the registry held at that moment, yields where the real one
waits, and can be told to fail: subnet choice and conflicts, address and MAC
allocation, mismatched options, and the order of plane calls and commits."""

import asyncio
import re
from ipaddress import IPv4Network as N

import pytest

from fcnetd import errors as E
from fcnetd.config import parse
from fcnetd.engine import Engine
from fcnetd.registry import Registry

from .fakenetlink import YieldingNetlink


class FakeNat:
    """NatPlane's interface. `calls` holds (operation, network name or None,
    whether that network was in the registry when called, extra)."""

    def __init__(self, engine_ref, prefixes=()):
        self.engine = engine_ref
        self.prefixes = list(prefixes)
        self.calls: list[tuple] = []
        self.fail_added: Exception | None = None
        self.hold_prefixes: asyncio.Event | None = None

    def _stored(self, net) -> bool:
        return net.id in self.engine().registry.networks

    async def host_prefixes(self):
        self.calls.append(("host_prefixes", None, None, None))
        if self.hold_prefixes is not None:
            await self.hold_prefixes.wait()
        await asyncio.sleep(0)
        return list(self.prefixes)

    async def network_added(self, net, port, networks):
        self.calls.append(("network_added", net.name, self._stored(net), sorted(n.name for n in networks)))
        await asyncio.sleep(0)
        if self.fail_added is not None:
            raise self.fail_added

    async def network_removed(self, net, networks):
        self.calls.append(("network_removed", net.name, self._stored(net), sorted(n.name for n in networks)))
        await asyncio.sleep(0)

    async def fence_changed(self, networks):
        self.calls.append(("fence_changed", None, None, sorted(n.name for n in networks)))
        await asyncio.sleep(0)

    async def leases_changed(self, net, attachments, released=()):
        registry = self.engine().registry
        self.calls.append(("leases_changed", net.name,
                           sorted((a.vm_id, a.ip, a.mac, a.key in registry.attachments) for a in attachments),
                           [(a.vm_id, a.key in registry.attachments) for a in released]))
        await asyncio.sleep(0)

    async def converge(self, networks, attachments_by_network, bridges):
        self.calls.append(("converge", None, None, (sorted(n.name for n in networks),
                                                    {k: len(v) for k, v in attachments_by_network.items()})))
        await asyncio.sleep(0)
        return {"adopted": 2}

    def ops(self):
        return [c[0] for c in self.calls]


def make(tmp_path, prefixes=(), pool=None, nat=True, uplink=""):
    data = {"daemon": {"host": "node1"}, "bridges": {"fcbr0": {"create": True}, "fcbr1": {"create": True},
                                                    "fcbr2": {"create": True}}}
    if uplink:
        data["bridges"]["fcbr0"]["uplink"] = uplink
    if pool:
        data["nat"] = {"pool": pool}
    engine = None
    plane = FakeNat(lambda: engine, prefixes) if nat else None
    engine = Engine(parse(data), Registry(str(tmp_path)), YieldingNetlink(), nat=plane)
    return engine, plane


def run(coro):
    return asyncio.run(coro)


# -- networks --------------------------------------------------------------------

def test_a_nat_network_gets_the_first_free_24_of_the_pool_and_the_plane_before_the_commit(tmp_path):
    e, nat = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 0)
        return await e.create_network("out", "fcbr1", 0, mode="nat")
    net = run(go())
    assert (net.mode, net.subnet, net.gateway, net.dhcp) == ("nat", "10.213.0.0/24", "10.213.0.1", True)
    assert nat.calls == [("host_prefixes", None, None, None),
                         ("network_added", "out", False, ["fcbr0", "out"])]
    assert e.registry.networks[net.id] == net


def test_the_pick_skips_other_networks_and_every_host_prefix(tmp_path):
    e, nat = make(tmp_path, prefixes=[(N("10.213.1.0/24"), "address 10.213.1.5/24 on eth0"),
                                      (N("10.213.2.0/23"), "route 10.213.2.0/23 via eth1")])

    async def go():
        a = await e.create_network("a", "fcbr0", 0, mode="nat")
        b = await e.create_network("b", "fcbr1", 0, mode="nat")
        return a, b
    a, b = run(go())
    assert (a.subnet, b.subnet) == ("10.213.0.0/24", "10.213.4.0/24")


def test_the_pool_comes_from_the_config(tmp_path):
    e, _ = make(tmp_path, pool="192.168.100.0/23")
    assert run(e.create_network("a", "fcbr0", 0, mode="nat")).subnet == "192.168.100.0/24"


def test_an_exhausted_pool_is_address_unavailable_and_stores_nothing(tmp_path):
    e, nat = make(tmp_path, prefixes=[(N("10.213.0.0/16"), "route 10.213.0.0/16 via eth9")])
    with pytest.raises(E.AddressUnavailable, match=r"^subnet: the pool 10\.213\.0\.0/16 has no free /24"):
        run(e.create_network("a", "fcbr0", 0, mode="nat"))
    assert e.registry.networks == {} and "network_added" not in nat.ops()


def test_a_subnet_overlapping_another_network_is_a_subnet_conflict_naming_it(tmp_path):
    e, _ = make(tmp_path)
    run(e.create_network("lan", "fcbr0", 0, subnet="192.168.2.0/24"))
    with pytest.raises(E.SubnetConflict,
                       match=r"^subnet: 192\.168\.2\.128/25 overlaps network lan \(192\.168\.2\.0/24\)$"):
        run(e.create_network("out", "fcbr1", 0, mode="nat", subnet="192.168.2.128/25"))
    with pytest.raises(E.SubnetConflict, match="overlaps network lan"):
        run(e.create_network("lan2", "fcbr1", 0, subnet="192.168.0.0/16"))
    assert [n.name for n in e.registry.networks.values()] == ["lan"]


def test_a_nat_subnet_overlapping_a_host_address_is_a_subnet_conflict_naming_it(tmp_path):
    e, nat = make(tmp_path, prefixes=[(N("172.16.9.0/24"), "address 172.16.9.7/24 on eth0")])
    with pytest.raises(E.SubnetConflict) as err:
        run(e.create_network("out", "fcbr0", 0, mode="nat", subnet="172.16.9.0/25"))
    assert str(err.value) == "subnet: 172.16.9.0/25 overlaps address 172.16.9.7/24 on eth0"
    assert e.registry.networks == {} and "network_added" not in nat.ops()


def test_a_nat_subnet_of_public_or_special_address_space_is_refused(tmp_path):
    """Review M4: a nat subnet becomes a route of the host's own; any /16-/29
    the host had no specific route for was taken, so a caller could send
    the host's traffic for 8.8.8.0/24 (or a cloud's metadata service) to a VM."""
    e, nat = make(tmp_path)
    with pytest.raises(E.InvalidArgs, match=r"^subnet: 8\.8\.8\.0/24 is neither private address space .* nor "
                                            r"inside \[nat\] pool \(10\.213\.0\.0/16\)"):
        run(e.create_network("out", "fcbr0", 0, mode="nat", subnet="8.8.8.0/24"))
    for special in ("169.254.169.248/29", "224.0.0.0/24", "127.0.0.0/24", "0.0.0.0/24", "240.0.0.0/24"):
        with pytest.raises(E.InvalidArgs, match=rf"^subnet: {re.escape(special)} is .*; a network's subnet must be "
                                                "unicast address space$"):
            run(e.create_network("out", "fcbr0", 0, mode="nat", subnet=special))
    assert e.registry.networks == {} and "network_added" not in nat.ops()


def test_an_untagged_nat_network_is_refused_on_a_bridge_with_an_uplink(tmp_path):
    """Review M3: its gateway and DHCP server would serve the LAN beyond the uplink."""
    e, nat = make(tmp_path, uplink="eth9")
    with pytest.raises(E.InvalidArgs, match=r"^mode: an untagged nat network on bridge fcbr0 would share the LAN "
                                            r"beyond its uplink eth9"):
        run(e.create_network("out", "fcbr0", 0, mode="nat"))
    assert e.registry.networks == {} and "network_added" not in nat.ops()


def test_a_static_address_the_network_would_refuse_creates_no_network(tmp_path):
    """Review S11: AttachVm auto-created the network (dnsmasq, gateway,
    rules), then refused the address, and the network stayed."""
    e, nat = make(tmp_path)
    with pytest.raises(E.InvalidArgs, match="^ip: the network this call would create on bridge fcbr0 is a bridge"):
        run(e.attach_vm("vm-1", "fcbr0", 0, ip="10.213.0.5"))
    with pytest.raises(E.AddressUnavailable, match=r"^ip: 10\.9\.0\.5 is outside the network's subnet 10\.213\.5\.0/24$"):
        run(e.attach_vm("vm-1", "fcbr0", 0, mode="nat", subnet="10.213.5.0/24", ip="10.9.0.5"))
    with pytest.raises(E.InvalidArgs, match="^mac: 01:00:5e:00:00:01 is a multicast address"):
        run(e.attach_vm("vm-1", "fcbr0", 0, mode="nat", mac="01:00:5e:00:00:01"))
    assert e.registry.networks == {} and "network_added" not in nat.ops()


def test_a_bridge_networks_subnet_is_not_checked_against_the_host(tmp_path):
    """It describes the LAN beyond the uplink, on which the host may have an address."""
    e, nat = make(tmp_path, prefixes=[(N("198.51.100.0/24"), "address 198.51.100.7/24 on eth0")])
    net = run(e.create_network("lan", "fcbr0", 0, subnet="198.51.100.0/24"))
    assert (net.mode, net.subnet, net.gateway, net.dhcp) == ("bridge", "198.51.100.0/24", "", False)
    assert "host_prefixes" not in nat.ops()


def test_two_creations_racing_get_two_subnets(tmp_path):
    e, nat = make(tmp_path)

    async def go():
        nat.hold_prefixes = asyncio.Event()
        tasks = [asyncio.ensure_future(e.create_network(f"n{i}", f"fcbr{i}", 0, mode="nat")) for i in range(3)]
        for _ in range(20):
            await asyncio.sleep(0)
        nat.hold_prefixes.set()
        return await asyncio.gather(*tasks)
    nets = run(go())
    assert sorted(n.subnet for n in nets) == ["10.213.0.0/24", "10.213.1.0/24", "10.213.2.0/24"]


def test_a_failing_network_added_leaves_nothing_in_the_registry(tmp_path):
    e, nat = make(tmp_path)
    added = []
    e.on_network_added = added.append
    nat.fail_added = E.Internal("dnsmasq would not start")
    with pytest.raises(E.Internal, match="dnsmasq would not start"):
        run(e.create_network("out", "fcbr0", 0, mode="nat"))
    assert e.registry.networks == {} and e.registry.seq == 0 and added == []
    assert nat.ops() == ["host_prefixes", "network_added"]
    nat.fail_added = None
    assert run(e.create_network("out", "fcbr0", 0, mode="nat")).subnet == "10.213.0.0/24"


def test_a_failed_commit_after_network_added_undoes_the_plane(tmp_path, monkeypatch):
    e, nat = make(tmp_path)

    def full(payload):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(e.registry.journal, "append", full)
    with pytest.raises(E.Internal, match="not saved"):
        run(e.create_network("out", "fcbr0", 0, mode="nat"))
    assert e.registry.networks == {}
    assert nat.calls[-1] == ("network_removed", "out", False, [])


def test_delete_commits_then_removes_from_the_plane(tmp_path):
    e, nat = make(tmp_path)

    async def go():
        await e.create_network("keep", "fcbr1", 0, mode="nat")
        await e.create_network("out", "fcbr0", 0, mode="nat")
        await e.delete_network("out")
    run(go())
    assert nat.calls[-1] == ("network_removed", "out", False, ["keep"])


def test_bridge_networks_never_call_the_plane(tmp_path):
    e, nat = make(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        await e.create_tap("vm-1", "eth0")
        await e.detach_vm("vm-1", "eth0")
        await e.delete_network("fcbr0")
    run(go())
    assert nat.calls == []


def test_without_a_plane_a_nat_network_is_refused_naming_mode(tmp_path):
    e, _ = make(tmp_path, nat=False)
    with pytest.raises(E.InvalidArgs, match=r"^mode: 'nat' is not available"):
        run(e.create_network("out", "fcbr0", 0, mode="nat"))
    with pytest.raises(E.InvalidArgs, match=r"^mode: 'nat' is not available"):
        run(e.attach_vm("vm-1", "fcbr0", 0, mode="nat"))
    assert e.registry.networks == {}
    assert run(e.create_network("lan", "fcbr0", 0, subnet="192.0.2.0/24")).subnet == "192.0.2.0/24"


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "routed"}, "mode: 'routed' must be 'bridge' (layer 2 only) or 'nat'"),
    ({"subnet": "10.0.0.1/24"}, "subnet: 10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"),
    ({"dhcp": True}, "dhcp: only a nat network has fcnetd's DHCP server"),
    ({"mode": "bridge", "dhcp": True}, "dhcp: only a nat network has fcnetd's DHCP server"),
])
def test_bad_network_options_are_refused_before_anything_happens(tmp_path, kwargs, message):
    e, nat = make(tmp_path)
    with pytest.raises(E.InvalidArgs) as err:
        run(e.create_network("x", "fcbr0", 0, **kwargs))
    assert str(err.value).startswith(message) and nat.calls == [] and e.netlink.calls == {}


def test_list_networks_filters_by_mode(tmp_path):
    e, _ = make(tmp_path)

    async def go():
        await e.create_network("a", "fcbr0", 0)
        await e.create_network("b", "fcbr1", 0, mode="nat")
    run(go())
    assert [n.name for n in e.list_networks(mode="nat")] == ["b"]
    assert [n.name for n in e.list_networks(mode="bridge")] == ["a"]
    with pytest.raises(E.InvalidArgs, match=r"^mode: 'vlan' must be 'bridge' or 'nat'$"):
        e.list_networks(mode="vlan")


# -- attachments -------------------------------------------------------------------

def test_attach_on_nat_gets_the_lowest_free_address_and_a_generated_mac_then_tells_the_plane(tmp_path):
    e, nat = make(tmp_path)

    async def go():
        await e.create_network("out", "fcbr0", 0, mode="nat")
        await e.attach_vm("vm-1", "fcbr0", 0)
        await e.attach_vm("vm-2", "fcbr0", 0, mac="02:00:00:00:00:0A")
    run(go())
    a1, a2 = e.registry.attachments[("vm-1", "eth0")], e.registry.attachments[("vm-2", "eth0")]
    assert (a1.ip, a2.ip) == ("10.213.0.2", "10.213.0.3")
    assert a1.mac.startswith("02:") and a2.mac == "02:00:00:00:00:0a"
    # after each commit (the attachment is in the registry), with all of the network's leases
    assert nat.calls[-1] == ("leases_changed", "out",
                             sorted([("vm-1", "10.213.0.2", a1.mac, True), ("vm-2", "10.213.0.3", a2.mac, True)]),
                             [])


def test_a_static_address_is_given_and_then_taken(tmp_path):
    e, _ = make(tmp_path)

    async def go():
        await e.create_network("out", "fcbr0", 0, mode="nat", subnet="10.9.0.0/24")
        await e.attach_vm("vm-1", "fcbr0", 0, ip="10.9.0.77")
        await e.attach_vm("vm-2", "fcbr0", 0)
        await e.attach_vm("vm-3", "fcbr0", 0, ip="10.9.0.77")
    with pytest.raises(E.AddressUnavailable, match=r"^ip: 10\.9\.0\.77 is taken by another VM NIC on this network$"):
        run(go())
    assert [a.ip for a in e.registry.attachments.values()] == ["10.9.0.77", "10.9.0.2"]


@pytest.mark.parametrize("ip,error,message", [
    ("10.9.0.1", E.AddressUnavailable, "ip: 10.9.0.1 is the gateway's address"),
    ("10.9.1.5", E.AddressUnavailable, "ip: 10.9.1.5 is outside the network's subnet 10.9.0.0/24"),
    ("10.9.0.255", E.AddressUnavailable, "ip: 10.9.0.255 is the broadcast address"),
    ("10.9.0.0", E.AddressUnavailable, "ip: 10.9.0.0 is the network address"),
    ("10.9.0.05", E.InvalidArgs, "ip: '10.9.0.05' must be an IPv4 address"),
])
def test_a_static_address_that_may_not_be_had_is_refused_and_nothing_stored(tmp_path, ip, error, message):
    e, nat = make(tmp_path)
    run(e.create_network("out", "fcbr0", 0, mode="nat", subnet="10.9.0.0/24"))
    with pytest.raises(error) as err:
        run(e.attach_vm("vm-1", "fcbr0", 0, ip=ip))
    assert str(err.value).startswith(message)
    assert e.registry.attachments == {} and "leases_changed" not in nat.ops()


def test_a_mac_taken_on_the_network_is_refused(tmp_path):
    e, _ = make(tmp_path)

    async def go():
        await e.create_network("out", "fcbr0", 0, mode="nat")
        await e.attach_vm("vm-1", "fcbr0", 0, mac="02:00:00:00:00:01")
        await e.attach_vm("vm-2", "fcbr0", 0, mac="02:00:00:00:00:01")
    with pytest.raises(E.AddressUnavailable, match=r"^mac: 02:00:00:00:00:01 is taken by another VM NIC"):
        run(go())


def test_a_29_holds_five_vms_and_then_is_full(tmp_path):
    e, _ = make(tmp_path)

    async def go():
        await e.create_network("small", "fcbr0", 0, mode="nat", subnet="10.9.0.8/29")
        for i in range(5):
            await e.attach_vm(f"vm-{i}", "fcbr0", 0)
        await e.attach_vm("vm-5", "fcbr0", 0)
    with pytest.raises(E.AddressUnavailable, match=r"^ip: the subnet 10\.9\.0\.8/29 has no free address"):
        run(go())
    assert sorted(a.ip for a in e.registry.attachments.values()) == [f"10.9.0.{i}" for i in range(10, 15)]


def test_concurrent_attaches_never_share_an_address_or_mac(tmp_path):
    e, _ = make(tmp_path)

    async def go():
        await e.create_network("out", "fcbr0", 0, mode="nat")
        await asyncio.gather(*(e.attach_vm(f"vm-{i}", "fcbr0", 0) for i in range(40)))
    run(go())
    atts = list(e.registry.attachments.values())
    assert len({a.ip for a in atts}) == 40 and len({a.mac for a in atts}) == 40
    assert {a.ip for a in atts} == {f"10.213.0.{i}" for i in range(2, 42)}


def test_detach_commits_then_releases_the_lease_and_the_address_goes_to_the_next_vm(tmp_path):
    e, nat = make(tmp_path)

    async def go():
        await e.create_network("out", "fcbr0", 0, mode="nat")
        await e.attach_vm("vm-1", "fcbr0", 0)
        await e.attach_vm("vm-2", "fcbr0", 0)
        await e.create_tap("vm-1", "eth0")
        await e.detach_vm("vm-1", "eth0")
        released = nat.calls[-1]
        await e.attach_vm("vm-3", "fcbr0", 0)
        return released
    released = run(go())
    assert released[0] == "leases_changed" and released[3] == [("vm-1", False)]
    assert [vm for vm, *_ in released[2]] == ["vm-2"]
    assert e.registry.attachments[("vm-3", "eth0")].ip == "10.213.0.2"


def test_attach_auto_creates_a_nat_network_with_the_options_given(tmp_path):
    e, nat = make(tmp_path)
    net = run(e.attach_vm("vm-1", "fcbr2", 0, mode="nat", subnet="10.77.0.0/24", dhcp=False))
    assert (net.name, net.origin, net.mode, net.subnet, net.dhcp) == ("fcbr2", "auto", "nat", "10.77.0.0/24", False)
    assert e.registry.attachments[("vm-1", "eth0")].ip == "10.77.0.2"
    assert nat.ops() == ["host_prefixes", "network_added", "leases_changed"]


@pytest.mark.parametrize("kwargs,message", [
    ({"mode": "nat"}, "mode: network fcbr0 exists with mode 'bridge'; delete and create it to change that"),
    ({"subnet": "10.1.0.0/24"}, "subnet: network fcbr0 exists with subnet ''; delete and create it to change that"),
    ({"dhcp": True}, "dhcp: network fcbr0 exists with dhcp false; delete and create it to change that"),
])
def test_attach_with_other_values_than_the_existing_network_names_field_and_value(tmp_path, kwargs, message):
    e, _ = make(tmp_path)
    run(e.create_network("", "fcbr0", 0))
    with pytest.raises(E.InvalidArgs) as err:
        run(e.attach_vm("vm-1", "fcbr0", 0, **kwargs))
    assert str(err.value) == message and e.registry.attachments == {}


def test_attach_with_the_existing_networks_values_is_fine(tmp_path):
    e, _ = make(tmp_path)

    async def go():
        await e.create_network("out", "fcbr0", 0, mode="nat", subnet="10.5.0.0/24")
        await e.attach_vm("vm-1", "fcbr0", 0, mode="nat", subnet="10.5.0.0/24", dhcp=True)
        await e.attach_vm("vm-2", "fcbr0", 0, subnet="")  # "" asks for nothing in particular
    run(go())
    assert len(e.registry.attachments) == 2
    with pytest.raises(E.InvalidArgs, match=r"^subnet: network out exists with subnet '10\.5\.0\.0/24'"):
        run(e.attach_vm("vm-3", "fcbr0", 0, subnet="10.6.0.0/24"))


def test_concurrent_first_attaches_with_other_modes_get_one_network_and_one_refusal(tmp_path):
    e, _ = make(tmp_path)

    async def go():
        return await asyncio.gather(e.attach_vm("vm-1", "fcbr0", 0, mode="nat"),
                                    e.attach_vm("vm-2", "fcbr0", 0, mode="bridge"), return_exceptions=True)
    first, second = run(go())
    assert first.mode == "nat" and len(e.registry.networks) == 1
    assert isinstance(second, E.InvalidArgs) and str(second).startswith("mode: network fcbr0 exists with mode 'nat'")


def test_an_ip_on_a_bridge_network_is_refused(tmp_path):
    e, _ = make(tmp_path)
    run(e.create_network("", "fcbr0", 0))
    with pytest.raises(E.InvalidArgs, match=r"^ip: network fcbr0 is a bridge network; fcnetd gives addresses only"):
        run(e.attach_vm("vm-1", "fcbr0", 0, ip="10.213.0.5"))
    assert e.registry.attachments == {}


# -- reconcile -----------------------------------------------------------------------

def test_reconcile_converges_the_plane_after_the_taps_and_adds_its_counts(tmp_path):
    e, nat = make(tmp_path)

    async def go():
        await e.create_network("lan", "fcbr1", 0)
        net = await e.create_network("out", "fcbr0", 0, mode="nat")
        await e.attach_vm("vm-1", "fcbr0", 0)
        await e.create_tap("vm-1", "eth0")
        async with e.gate.exclusive():
            return net, await e.reconcile_exclusive()
    net, result = run(go())
    op, _, _, (names, counts) = nat.calls[-1]
    assert op == "converge" and names == ["lan", "out"] and counts[net.id] == 1
    assert result["adopted"] == 1 + 2  # the TAP, and the plane's two


def test_a_tagged_nat_networks_vlan_stays_off_the_uplink(tmp_path):
    """Review M3: the trunk carried every tagged network's VLAN, a nat
    network's too, so its gateway and DHCP server served the switch's LAN."""
    e, _ = make(tmp_path, uplink="eth9")
    trunk = []

    async def uplink_index(name):
        return 42

    async def set_port_vlans(index, wanted, what, current=None):
        trunk.append(sorted(wanted))
    e.netlink.link_index, e.netlink.set_port_vlans = uplink_index, set_port_vlans

    async def go():
        await e.create_network("", "fcbr0", 10, mode="nat")
        await e.create_network("", "fcbr0", 20)
        await e.reconcile()
    run(go())
    assert trunk and all(10 not in vlans for vlans in trunk), trunk
    assert 20 in trunk[-1], trunk


def test_the_fence_follows_bridge_networks_with_a_subnet(tmp_path):
    """Review S3: the nat networks' fence was rebuilt only when a nat
    network came or went, so a VM could reach a bridge network's subnet
    created after it (and a deleted one stayed fenced)."""
    e, nat = make(tmp_path)
    run(e.create_network("out", "fcbr0", 0, mode="nat"))
    run(e.create_network("plain", "fcbr2", 0))  # no subnet: nothing to fence
    run(e.create_network("lan", "fcbr1", 0, subnet="192.168.50.0/24"))
    run(e.delete_network("lan"))
    assert [c for c in nat.calls if c[0] == "fence_changed"] == [
        ("fence_changed", None, None, ["lan", "out", "plain"]),
        ("fence_changed", None, None, ["out", "plain"]),
    ]
