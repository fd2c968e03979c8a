"""The user's path through fcnetd, read back from the kernel (issue 2, 1-8)."""

import json

from .harness import busctl, fcnetctl, v, wait_for

MGR = ["org.fcnetd.Network1", "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager"]


def test_create_network_with_busctl_then_duplicate_is_refused(daemon, bus, client):
    out = busctl(bus.address, "--json=short", "call", *MGR, "CreateNetwork", "ssqa{sv}", "", "fcbr0", "0", "0")
    path = json.loads(out.stdout)["data"][0]
    props = client.props(path, "org.fcnetd.Network1.Network")
    assert (props["Name"], props["Bridge"], props["Vlan"], props["Origin"]) == ("fcbr0", "fcbr0", 0, "manual")
    assert props["Host"] == "node1" and props["Type"] == "bridge" and props["Status"] == "active"
    again = busctl(bus.address, "call", *MGR, "CreateNetwork", "ssqa{sv}", "", "fcbr0", "0", "0", check=False)
    assert again.returncode != 0 and "already uses bridge fcbr0" in again.stderr
    err = client.error("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    assert err.type == "org.fcnetd.Network1.Error.NetworkExists"
    assert daemon.ns.link("fcbr0")["linkinfo"]["info_kind"] == "bridge"


def test_ensure_network_creates_once(daemon, client):
    path, created = client.call("EnsureNetwork", "sq", "fcbr1", 0)
    assert created is True
    again, created = client.call("EnsureNetwork", "sq", "fcbr1", 0)
    assert (again, created) == (path, False)
    assert client.props(path, "org.fcnetd.Network1.Network")["Origin"] == "auto"


def test_vm_lifecycle_attach_tap_delete_refused_then_allowed(daemon, bus, client):
    ns = daemon.ns
    path = client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr1", 0, {"vm_name": v("s", "web-dev")})[0]
    net = client.props(path, "org.fcnetd.Network1.Network")
    assert (net["Name"], net["Origin"], net["VmCount"]) == ("fcbr1", "auto", 1)

    out = busctl(bus.address, "--json=short", "call", *MGR, "CreateTap", "ssa{sv}", "vm-1", "eth0",
                 "2", "owner_uid", "u", "1000", "owner_gid", "u", "1001")
    tap = json.loads(out.stdout)["data"][0]
    assert tap.startswith("vmtap") and tap[5:].isdigit() and len(tap) <= 15
    link = ns.link(tap)
    assert link is not None, f"{tap} is not in the kernel"
    assert "UP" in link["flags"]
    assert link["master"] == "fcbr1"
    assert link["ifalias"] == "fcnetd:vm-1:eth0"
    assert link["linkinfo"]["info_data"]["type"] == "tap"
    assert link["linkinfo"]["info_data"]["vnet_hdr"] is True and link["linkinfo"]["info_data"]["pi"] is False
    assert ns.sysfs(tap, "owner") == "1000" and ns.sysfs(tap, "group") == "1001"
    # No carrier until the VMM opens it, as Firecracker does; then it has.
    assert ns.sysfs(tap, "carrier") == "0"
    assert ns.python("import sys, os; from fcnetd import tundev; "
                     "fd = tundev.open_tap(sys.argv[1], tundev.VM_FLAGS); "
                     "print(open(f'/sys/class/net/{sys.argv[1]}/carrier').read().strip()); os.close(fd)",
                     tap).strip() == "1"
    detail = client.call("GetNetwork", "s", "fcbr1")[0]
    assert detail["Taps"] == [tap]
    assert detail["Vms"][0]["VmName"] == "web-dev" and detail["Vms"][0]["State"] == "running"

    err = client.error("DeleteNetwork", "s", "fcbr1")
    assert err.type == "org.fcnetd.Network1.Error.NetworkInUse"
    assert err.text == "Network has 1 attached VM. Remove VMs first."
    client.call("AttachVm", "ssqa{sv}", "vm-2", "fcbr1", 0, {})
    assert client.error("DeleteNetwork", "s", "fcbr1").text == "Network has 2 attached VMs. Remove VMs first."
    client.call("DetachVm", "ss", "vm-2", "eth0")

    client.call("DeleteTap", "ss", "vm-1", "eth0")
    assert ns.link(tap) is None
    client.call("DeleteTap", "ss", "vm-1", "eth0")  # idempotent
    assert client.call("GetNetwork", "s", "fcbr1")[0]["Vms"][0]["State"] == "stopped"
    client.call("DetachVm", "ss", "vm-1", "eth0")
    client.call("DeleteNetwork", "s", "fcbr1")
    assert client.error("GetNetwork", "s", "fcbr1").type == "org.fcnetd.Network1.Error.NoSuchNetwork"
    assert ns.link("fcbr1") is not None, "deleting a network must leave its bridge"


def test_detach_destroys_the_tap(daemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-9", "fcbr0", 0, {"nic": v("s", "eth1")})
    tap = client.call("CreateTap", "ssa{sv}", "vm-9", "eth1", {})[0]
    assert client.call("CreateTap", "ssa{sv}", "vm-9", "eth1", {})[0] == tap  # a retried VM start
    client.call("DetachVm", "ss", "vm-9", "eth1")
    assert daemon.ns.link(tap) is None


def test_list_filters_and_newest_first(daemon, client):
    for bridge, name in (("fcbr0", ""), ("fcbr1", "lab-1")):
        client.call("CreateNetwork", "ssqa{sv}", name, bridge, 0, {"description": v("s", "tier " + bridge)})
    names = [n["Name"] for n in client.call("ListNetworks", "a{sv}", {})[0]]
    assert names == ["lab-1", "fcbr0"]
    assert [n["Name"] for n in client.call("ListNetworks", "a{sv}", {"search": v("s", "LAB")})[0]] == ["lab-1"]
    assert client.call("ListNetworks", "a{sv}", {"type": v("s", "vlan")})[0] == []
    assert len(client.call("ListNetworks", "a{sv}", {"type": v("s", "bridge")})[0]) == 2
    assert [n["Name"] for n in client.call("ListNetworks", "a{sv}", {"bridge": v("s", "fcbr0")})[0]] == ["fcbr0"]
    err = client.error("ListNetworks", "a{sv}", {"type": v("s", "nat")})
    assert err.type == "org.freedesktop.DBus.Error.InvalidArgs" and "type" in err.text


def test_list_follows_every_change_it_shows(daemon, bus, client, config):
    """ListNetworks answers from marshalled entries kept per filter; each
    change a list shows (networks, VM counts, bridge state) must reach it."""
    def listed(**flt):
        return [(n["Name"], n["VmCount"], n["Status"])
                for n in client.call("ListNetworks", "a{sv}", {k: v(*x) for k, x in flt.items()})[0]]
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    assert listed() == [("fcbr0", 1, "active")]
    client.call("CreateNetwork", "ssqa{sv}", "lab", "fcbr1", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-2", "fcbr0", 0, {"nic": v("s", "eth1")})
    assert listed() == [("lab", 0, "active"), ("fcbr0", 2, "active")]
    assert listed(offset=("u", 1), limit=("u", 1)) == [("fcbr0", 2, "active")]
    # A bridge set down is drift fcnetd repairs (test_drift); a bridge taken
    # off the allow-list is a state that stays.
    with open(config, "w") as f:
        f.write('[daemon]\nhost = "node1"\n\n[bridges.fcbr1]\ncreate = true\n')
    wait_for(lambda: listed()[1] == ("fcbr0", 2, "bridge-not-allowed"), what="bridge-not-allowed in the list")
    client.call("DetachVm", "ss", "vm-1", "eth0")
    assert listed(bridge=("s", "fcbr0")) == [("fcbr0", 1, "bridge-not-allowed")]
    client.call("DeleteNetwork", "s", "lab")
    assert listed() == [("fcbr0", 1, "bridge-not-allowed")]
    # sd-bus reads the reply assembled from cached bytes just as dbus-fast does
    out = json.loads(busctl(bus.address, "--json=short", "call", *MGR, "ListNetworks", "a{sv}", "0").stdout)
    assert [e["Name"]["data"] for e in out["data"][0]] == ["fcbr0"]


def test_fcnetctl_table_and_json(daemon, bus, client):
    assert fcnetctl(bus.address, "list").stdout.strip() == "0 networks listed."
    fcnetctl(bus.address, "create", "fcbr0")
    fcnetctl(bus.address, "attach", "vm-7", "fcbr1", "--vm-name", "db")
    out = fcnetctl(bus.address, "list").stdout.splitlines()
    assert out[0].split() == ["NETWORK", "BRIDGE", "VLAN", "MODE", "SUBNET", "VMS", "CREATED"]
    assert out[1].split()[:4] == ["fcbr1", "fcbr1", "bridge", "1"]
    assert out[2].split()[:4] == ["fcbr0", "fcbr0", "bridge", "0"]
    assert out[-1] == "2 networks listed."
    data = json.loads(fcnetctl(bus.address, "--json", "list").stdout)
    assert [n["Name"] for n in data] == ["fcbr1", "fcbr0"]
    res = fcnetctl(bus.address, "delete", "fcbr1", check=False)
    assert res.returncode == 1 and "Network has 1 attached VM. Remove VMs first." in res.stderr
    show = fcnetctl(bus.address, "show", "fcbr1").stdout
    assert "vm-7" in show and "db" in show


def test_fcnetctl_output_cut_short_is_not_a_bus_error(daemon, bus):
    """`fcnetctl show X | head` once reported the closed pipe as
    'cannot reach fcnetd'."""
    import os
    import subprocess
    import sys

    from .harness import REPO
    fcnetctl(bus.address, "create", "fcbr0", "--description", "shared")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        res = subprocess.run([sys.executable, "-m", "fcnetd.cli", "--bus", bus.address, "show", "fcbr0"],
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": REPO})
    finally:
        os.close(write_end)
    assert res.returncode == 1 and res.stderr == ""
