"""Bulk reads answered from caches, seen by real clients over the real bus:
they show what the objects show and follow every change, TAPs included
(which do not move the engine's version), and a connection that pipelines
too many of them is told so."""

from __future__ import annotations

import asyncio
import json

from fcnetd.bus import Message, connect
from fcnetd.names import (BUS_NAME, LIMITS_EXCEEDED, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE,
                          OBJECT_MANAGER_IFACE)

from .harness import busctl


def managed_objects(client, path="/"):
    return client.call("GetManagedObjects", path=path, interface=OBJECT_MANAGER_IFACE)[0]


def vm_states(client) -> dict:
    doc = json.loads(client.call("Describe")[0])
    return {v["vm_id"]: (v["state"], v["tap"]) for n in doc["networks"] for v in n["vms"]}


def test_get_managed_objects_equals_each_objects_properties(daemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    client.call("CreateNetwork", "ssqa{sv}", "spare", "fcbr1", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})[0]
    root = managed_objects(client)
    networks = {p: v for p, v in root.items() if p != MANAGER_PATH}
    assert len(networks) == 2
    for path, interfaces in networks.items():
        assert interfaces == {NETWORK_IFACE: client.props(path, NETWORK_IFACE)}
    assert root[MANAGER_PATH] == {MANAGER_IFACE: client.props(MANAGER_PATH, MANAGER_IFACE)}
    assert managed_objects(client, MANAGER_PATH) == networks
    fcbr0 = [v[NETWORK_IFACE] for v in networks.values() if v[NETWORK_IFACE]["Name"] == "fcbr0"][0]
    assert fcbr0["Taps"] == [tap] and fcbr0["Vms"][0]["State"] == "running"
    # busctl decodes it as well (its own marshalling checks)
    out = busctl(daemon.bus.address, "--json=short", "call", BUS_NAME, "/", OBJECT_MANAGER_IFACE,
                 "GetManagedObjects").stdout
    assert len(json.loads(out)["data"][0]) == 3


def test_describe_and_objects_follow_taps_coming_and_going(daemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    assert vm_states(client) == {"vm-1": ("stopped", "")}
    before = managed_objects(client)
    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})[0]
    assert vm_states(client) == {"vm-1": ("running", tap)}
    assert managed_objects(client) != before
    client.call("DeleteTap", "ss", "vm-1", "eth0")
    assert vm_states(client) == {"vm-1": ("stopped", "")}
    assert managed_objects(client) == before


def test_list_bridges_shows_config_and_state(daemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})
    rows = {r["Name"]: r for r in client.call("ListBridges")[0]}
    assert rows["fcbr0"] == {"Name": "fcbr0", "Present": True, "Create": True, "Uplink": "",
                             "VlanFiltering": False}
    assert rows["fcbr1"]["Present"] is False


def test_a_connection_pipelining_too_many_bulk_reads_is_told_so(daemon, bus):
    async def go():
        conn = await connect(bus.address)
        try:
            msgs = [Message(destination=BUS_NAME, path=MANAGER_PATH, interface=MANAGER_IFACE, member="Describe")
                    for _ in range(40)]
            replies = await asyncio.gather(*(conn.call(m) for m in msgs))
            # once its replies are read, the same connection is served again
            again = await conn.call(Message(destination=BUS_NAME, path=MANAGER_PATH, interface=MANAGER_IFACE,
                                            member="Describe"))
            return replies, again
        finally:
            conn.disconnect()
    replies, again = asyncio.run(go())
    refused = [r for r in replies if r.error_name]
    assert {r.error_name for r in refused} == {LIMITS_EXCEEDED}
    assert 0 < len(refused) <= 40 - 16 and "wait for their replies" in refused[0].body[0]
    assert all(json.loads(r.body[0])["host"] == "node1" for r in replies if not r.error_name)
    assert again.error_name is None


def test_list_networks_replies_follow_changes(daemon, client):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})
    listed = lambda: {e["Name"]: e["VmCount"] for e in client.call("ListNetworks", "a{sv}", {})[0]}
    assert listed() == {"fcbr1": 0}
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr1", 0, {})
    assert listed() == {"fcbr1": 1}
    client.call("DetachVm", "ss", "vm-1", "eth0")
    assert listed() == {"fcbr1": 0}
    assert client.call("GetNetwork", "s", "fcbr1")[0]["Vms"] == []
