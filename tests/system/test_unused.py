"""Unused networks (no VM attached) with the real daemon: the ListNetworks
and CountNetworks filter, `fcnetctl list --unused` and `fcnetctl
delete-unused`, which deletes each with DeleteNetwork and reports each, a
network in use refused as DeleteNetwork refuses it while the rest go on."""

import json

from .harness import fcnetctl, v


def names(client, **flt) -> list[str]:
    return sorted(n["Name"] for n in client.call("ListNetworks", "a{sv}", {k: v("b", x) for k, x in flt.items()})[0])


def test_the_unused_filter_and_deleting_every_unused_network_in_one_command(daemon, bus, client):
    for bridge, vlan_name in (("fcbr0", "a"), ("fcbr1", "b")):
        client.call("CreateNetwork", "ssqa{sv}", vlan_name, bridge, 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})  # network a is in use
    assert names(client) == ["a", "b"] and names(client, unused=True) == ["b"]
    assert names(client, unused=False) == ["a", "b"]
    assert client.call("CountNetworks", "a{sv}", {"unused": v("b", True)})[0] == 1
    err = client.error("ListNetworks", "a{sv}", {"unused": v("s", "yes")})
    assert err.type.endswith("InvalidArgs") and "unused" in err.text and "'b'" in err.text, err

    listed = fcnetctl(bus.address, "list", "--unused").stdout
    assert "b " in listed and "\na " not in listed and "1 network listed." in listed

    refused = fcnetctl(bus.address, "delete-unused", check=False)  # no terminal, no --yes: nothing done
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert names(client) == ["a", "b"]

    done = fcnetctl(bus.address, "delete-unused", "--yes")
    assert done.stdout.splitlines() == ["deleted b", "1 network deleted."]
    assert names(client) == ["a"]
    assert fcnetctl(bus.address, "delete-unused", "--yes").stdout.strip() == "no unused networks."


def test_named_networks_each_deleted_or_reported_and_the_rest_go_on(daemon, bus, client):
    for name, bridge in (("a", "fcbr0"), ("b", "fcbr1")):
        client.call("CreateNetwork", "ssqa{sv}", name, bridge, 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    res = fcnetctl(bus.address, "delete-unused", "--yes", "a", "b", "nosuch", check=False)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0] == "not deleted a: Network has 1 attached VM. Remove VMs first. (NetworkInUse)"
    assert lines[1] == "deleted b"
    assert lines[2].startswith("not deleted nosuch:") and "NoSuchNetwork" in lines[2]
    assert names(client) == ["a"]
    client.call("CreateNetwork", "ssqa{sv}", "b", "fcbr1", 0, {})
    res = fcnetctl(bus.address, "delete-unused", "--yes", "--json", "a", "b", check=False)
    out = json.loads(res.stdout)
    assert out["deleted"] == ["b"] and [r["error"] for r in out["refused"]] == ["NetworkInUse"]
