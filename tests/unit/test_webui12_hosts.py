"""The web UI's mirror of a host and issue 12: DriftDetected related to the
networks it is about, kept for the table and the detail page and pushed to
pages; traffic rates from list entries and signals."""

import time
from types import SimpleNamespace

from fcnetd.bus import MessageType, Variant
from fcnetd.names import MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE
from webui import hosts
from webui.hosts import Host, _entry, drift_targets

NETS = {"id-10": {"name": "fcbr0-vlan-10", "bridge": "fcbr0"}, "id-20": {"name": "fcbr0-vlan-20", "bridge": "fcbr0"},
        "id-1": {"name": "lab", "bridge": "fcbr1"}, "id-0": {"name": "fcbr0", "bridge": "fcbr0"}}


def signal(member, body, path=MANAGER_PATH, interface=MANAGER_IFACE):
    return SimpleNamespace(message_type=MessageType.SIGNAL, member=member, body=body, path=path,
                           interface=interface)


def test_a_drift_naming_a_network_is_about_that_network_alone():
    assert drift_targets(NETS, "tap-vlan", "TAP fctap3 of vm-1/eth0 (network fcbr0-vlan-10) put back in VLAN 10") \
        == ["id-10"]
    assert drift_targets(NETS, "tap-bridge", "TAP fctap3 of network id-1 was on other0; put back") == ["id-1"]


def test_a_drift_naming_only_a_bridge_is_about_every_network_on_it():
    """fcbr0 inside fcbr0-vlan-10 is not a mention of the network fcbr0, and vice versa."""
    assert sorted(drift_targets({k: v for k, v in NETS.items() if k != "id-0"}, "bridge-down",
                                "bridge fcbr0 was set down; set up again")) == ["id-10", "id-20"]
    assert drift_targets(NETS, "bridge-down", "bridge fcbr9 was set down") == []


def test_drift_detected_marks_its_networks_and_tells_the_pages():
    events = []
    h = Host("node1", "unused", events.append)
    h.available = True
    h.networks = {i: {**n, "id": i} for i, n in NETS.items()}
    h._apply(signal("DriftDetected", ["vlan-filtering", "VLAN filtering on fcbr1 was off; turned on again"]))
    assert events == [{"host": "node1", "kind": "drift", "ids": ["id-1"], "what": "vlan-filtering",
                       "detail": "VLAN filtering on fcbr1 was off; turned on again", "time": events[0]["time"]}]
    assert h.drift_of("id-1")["what"] == "vlan-filtering" and h.drift_of("id-10") is None
    h.drifts["id-1"] = (time.monotonic() - hosts.DRIFT_SHOWN_SECONDS - 1, h.drifts["id-1"][1])
    assert h.drift_of("id-1") is None, "an old drift is no longer shown"


def test_rates_come_from_list_entries_and_signals():
    props = {"Id": "n1", "Name": "lab", "Bridge": "fcbr1", "Vlan": 0, "VmCount": 1, "Status": "active",
             "ReceiveRate": 1500.0, "TransmitRate": 20.5}
    entry = _entry(props, "node1")
    assert (entry["receive_rate"], entry["transmit_rate"]) == (1500.0, 20.5)
    assert "receive_rate" not in _entry({"Id": "n1"}, "node1"), "an older fcnetd has no rates: none are made up"
    events = []
    h = Host("node1", "unused", events.append)
    h.available = True
    h.networks, h.by_path = {"n1": entry}, {"/n/n1": "n1"}
    h._apply(signal("PropertiesChanged", [NETWORK_IFACE, {"ReceiveRate": Variant("d", 9.0)}, []], path="/n/n1",
                    interface="org.freedesktop.DBus.Properties"))
    assert entry["receive_rate"] == 9.0 and events[-1]["kind"] == "changed"
