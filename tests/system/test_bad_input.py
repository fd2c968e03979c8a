"""Every bad input gets a clear error naming the field and the rule, and
nothing already stored changes (issue 2, "Bad input")."""

import asyncio

import pytest

from fcnetd.bus import DBusError
from fcnetd.registry import read_registry

from .harness import Pool, busctl, v

INVALID = "org.freedesktop.DBus.Error.InvalidArgs"
ERR = "org.fcnetd.Network1.Error."


@pytest.mark.parametrize("vlan", [4095, 4096, 65535])
def test_vlan_out_of_range(stored, client, vlan):
    for member, args in (("CreateNetwork", ("ssqa{sv}", "", "fcbr0", vlan, {})),
                         ("EnsureNetwork", ("sq", "fcbr0", vlan)),
                         ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", vlan, {}))):
        err = client.error(member, *args)
        assert err.type == INVALID and err.text.startswith("vlan:") and "1-4094" in err.text


@pytest.mark.parametrize("bridge,rule", [
    ("", "non-empty"), ("a" * 16, "longer than 15 bytes"), ("br/0", "must not contain"),
    ("br:0", "must not contain"), ("br 0", "must not contain"), ("br\t0", "printable"),
    ("br%d", "must not contain"), (".", "not a valid interface name"), ("..", "not a valid interface name"),
    ("brü", "ASCII"),
])
def test_bad_bridge_names(stored, client, bridge, rule):
    err = client.error("CreateNetwork", "ssqa{sv}", "", bridge, 10, {})
    assert err.type == INVALID and err.text.startswith("bridge:") and rule in err.text, err.text


@pytest.mark.parametrize("bridge", ["eth0", "docker0"])
def test_bridges_outside_the_allow_list(stored, client, daemon, bridge):
    err = client.error("CreateNetwork", "ssqa{sv}", "", bridge, 0, {})
    assert err.type == ERR + "BridgeNotAllowed" and bridge in err.text and "allow-list" in err.text
    assert daemon.ns.link(bridge) is None


def test_unknown_network_and_vm(stored, client):
    assert client.error("DeleteNetwork", "s", "nope").type == ERR + "NoSuchNetwork"
    assert client.error("GetNetwork", "s", "nope").type == ERR + "NoSuchNetwork"
    err = client.error("DetachVm", "ss", "vm-404", "eth0")
    assert err.type == ERR + "NoSuchVm" and "vm-404" in err.text


def test_duplicate_name(stored, client):
    err = client.error("CreateNetwork", "ssqa{sv}", "fcbr0", "fcbr1", 0, {})
    assert err.type == ERR + "NetworkExists" and "named 'fcbr0'" in err.text


def test_nic_attached_twice(stored, client):
    err = client.error("AttachVm", "ssqa{sv}", "vm-1", "fcbr1", 0, {})
    assert err.type == ERR + "NicAttached" and "vm-1" in err.text and "eth0" in err.text


def test_create_tap_for_a_vm_not_attached(stored, client):
    err = client.error("CreateTap", "ssa{sv}", "vm-2", "eth0", {})
    assert err.type == ERR + "NoSuchVm" and "AttachVm" in err.text


def test_tap_name_that_exists_but_is_not_ours(stored, client, daemon):
    daemon.ns.ip("tuntap", "add", "dev", "vmtapforeign", "mode", "tap")
    err = client.error("CreateTap", "ssa{sv}", "vm-1", "eth0", {"tap_name": v("s", "vmtapforeign")})
    assert err.type == ERR + "TapExists" and "not created by fcnetd" in err.text
    link = daemon.ns.link("vmtapforeign")
    assert link is not None and "master" not in link and "ifalias" not in link


@pytest.mark.parametrize("member,args,field", [
    ("AttachVm", ("ssqa{sv}", "vm 1", "fcbr0", 0, {}), "vm_id"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"nic": v("s", "eth/0")}), "nic"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"mac": v("s", "zz")}), "mac"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"colour": v("s", "red")}), "colour"),
    ("CreateTap", ("ssa{sv}", "vm-1", "eth0", {"owner_uid": v("s", "1000")}), "owner_uid"),
    ("CreateNetwork", ("ssqa{sv}", "bad name", "fcbr0", 5, {}), "name"),
])
def test_bad_fields_are_named(stored, client, member, args, field):
    err = client.error(member, *args)
    assert err.type == INVALID and err.text.startswith(field + ":"), err.text


def test_wrong_dbus_signature(stored, bus, client):
    err = client.error("CreateNetwork", "ss", "", "fcbr0")
    assert err.type == INVALID and "'ssqa{sv}'" in err.text and "'ss'" in err.text
    res = busctl(bus.address, "call", "org.fcnetd.Network1", "/org/fcnetd/Network1",
                 "org.fcnetd.Network1.Manager", "EnsureNetwork", "ss", "fcbr0", "10", check=False)
    assert res.returncode != 0 and "takes arguments of signature 'sq'" in res.stderr


def test_vlan_unsupported_on_this_kernel(stored, client, daemon):
    """This machine's kernel has no bridge VLAN filtering: a tagged network is
    refused with a message that says what the kernel lacks."""
    err = client.error("CreateNetwork", "ssqa{sv}", "", "fcbr1", 10, {})
    assert err.type == ERR + "VlanUnsupported"
    assert "CONFIG_BRIDGE_VLAN_FILTERING" in err.text and "shared segment" in err.text
    assert client.error("AttachVm", "ssqa{sv}", "vm-3", "fcbr0", 30, {}).type == ERR + "VlanUnsupported"
    assert client.error("AttachVm", "ssqa{sv}", "vm-3", "fcbr1", 30, {}).type == ERR + "VlanUnsupported"
    # Issue 9, item 14: the refusal leaves no bridge made for it.
    assert daemon.ns.link("fcbr1") is None


def test_a_full_bridge_is_bridge_full_and_leaves_nothing_behind(daemon, bus):
    """A Linux bridge has 1,023 port numbers. AttachVm refuses the 1,024th VM
    NIC on a bridge (issue 9, item 15: every attached VM can start); and when
    a foreign port takes one of the numbers, the kernel's EXFULL on the last
    enslavement reaches the caller as BridgeFull, with the half-made TAP gone
    and the VM still attached."""
    daemon.ns.ip("link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1")

    async def fill():
        async with Pool(bus.address, 2) as pool:
            await asyncio.gather(*(pool.call("AttachVm", "ssqa{sv}", f"vm-{i}", "fcbr0", 0, {})
                                   for i in range(1023)))
            try:
                await pool.call("AttachVm", "ssqa{sv}", "vm-1023", "fcbr0", 0, {})
                raise AssertionError("a 1,024th VM NIC was attached to one bridge")
            except DBusError as e:
                refused = e
            daemon.ns.ip("link", "set", "foreign0", "master", "fcbr0")
            await asyncio.gather(*(pool.call("CreateTap", "ssa{sv}", f"vm-{i}", "eth0", {}) for i in range(1022)))
            try:
                await pool.call("CreateTap", "ssa{sv}", "vm-1022", "eth0", {})
            except DBusError as e:
                return refused, e
            raise AssertionError("a 1,024th port was enslaved to one bridge")
    refused, err = asyncio.run(fill())
    assert refused.type == ERR + "BridgeFull" and "1,023 attached VM NICs" in refused.text
    assert err.type == ERR + "BridgeFull" and "1,023 ports" in err.text
    taps = daemon.ns.taps()
    assert len(taps) == 1022 and all(t.get("master") == "fcbr0" for t in taps)
    attached = {vm for vm, _ in read_registry(daemon.state_dir)[0].attachments}
    assert len(attached) == 1023 and "vm-1022" in attached and "vm-1023" not in attached


# Issue 9, item 14: `fcbr0\n` is not a second network that looks like fcbr0,
# and a newline reaches no tag or log line.
@pytest.mark.parametrize("member,args,field", [
    ("CreateNetwork", ("ssqa{sv}", "fcbr0\n", "fcbr1", 0, {}), "name"),
    ("CreateNetwork", ("ssqa{sv}", "", "fcbr1\n", 0, {}), "bridge"),
    ("AttachVm", ("ssqa{sv}", "vm-2\n", "fcbr0", 0, {}), "vm_id"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"nic": v("s", "eth1\n")}), "nic"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"vm_name": v("s", "web\n")}), "vm_name"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"mac": v("s", "02:fc:00:00:00:02\n")}), "mac"),
])
def test_a_trailing_newline_is_refused(stored, client, member, args, field):
    err = client.error(member, *args)
    assert err.type == INVALID and err.text.startswith(field + ":") and "\n" not in err.text, err.text


def test_a_trailing_newline_is_refused_through_busctl(stored, bus):
    res = busctl(bus.address, "call", "org.fcnetd.Network1", "/org/fcnetd/Network1",
                 "org.fcnetd.Network1.Manager", "CreateNetwork", "ssqa{sv}", "fcbr0\n", "fcbr1", "0", "0",
                 check=False)
    assert res.returncode != 0 and "name: 'fcbr0\\n' must be 1-63 characters" in res.stderr, res.stderr


HUGE = "x" * 1_000_000


# Issue 9, item 14: a 1 MB argument is answered with a short error that
# names the field and the rule and shows an excerpt of the value.
@pytest.mark.parametrize("member,args,field", [
    ("CreateNetwork", ("ssqa{sv}", HUGE, "fcbr0", 5, {}), "name"),
    ("CreateNetwork", ("ssqa{sv}", "", HUGE, 5, {}), "bridge"),
    ("CreateNetwork", ("ssqa{sv}", "", "fcbr0", 5, {"description": v("s", HUGE)}), "description"),
    ("EnsureNetwork", ("sq", HUGE, 5), "bridge"),
    ("AttachVm", ("ssqa{sv}", HUGE, "fcbr0", 0, {}), "vm_id"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"nic": v("s", HUGE)}), "nic"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"vm_name": v("s", HUGE)}), "vm_name"),
    ("AttachVm", ("ssqa{sv}", "vm-2", "fcbr0", 0, {"mac": v("s", HUGE)}), "mac"),
    ("CreateTap", ("ssa{sv}", "vm-1", "eth0", {"tap_name": v("s", HUGE)}), "tap_name"),
    ("DeleteTap", ("ss", HUGE, "eth0"), "vm_id"),
    ("DetachVm", ("ss", "vm-1", HUGE), "nic"),
    pytest.param("ListNetworks", ("a{sv}", {"type": v("s", HUGE)}), "type"),
    pytest.param("ListNetworks", ("a{sv}", {HUGE: v("s", "x")}), "'xxx"),
])
def test_a_huge_value_is_answered_with_a_short_error(stored, client, member, args, field):
    err = client.error(member, *args)
    assert err.type == INVALID and err.text.startswith(field), err.text[:200]
    assert len(err.text) < 300 and "(1,000,000 characters)" in err.text, err.text[:300]


@pytest.mark.parametrize("member", ["GetNetwork", "DeleteNetwork"])
def test_a_huge_network_reference_is_answered_with_a_short_error(stored, client, member):
    err = client.error(member, "s", HUGE)
    assert err.type == ERR + "NoSuchNetwork" and len(err.text) < 300, err.text[:300]


@pytest.mark.parametrize("tap_name", ["fcbr1", "fcbr7"])
def test_a_tap_may_not_take_an_allowed_bridge_name(stored, client, daemon, tap_name):
    """fcbr1 is allowed but not yet made: a TAP named fcbr1 would keep it from
    ever being created; fcbr7 looks like an fcnetd bridge."""
    err = client.error("CreateTap", "ssa{sv}", "vm-1", "eth0", {"tap_name": v("s", tap_name)})
    assert err.type == INVALID and err.text.startswith("tap_name:") and tap_name in err.text, err.text
    assert daemon.ns.link(tap_name) is None
