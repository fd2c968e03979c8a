"""Every method fcnetd serves needs exactly one polkit action, and the
shipped files agree with the gate: the actions polkit knows, and the calls
the bus policy lets a user outside fcnet send."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fcnetd.access import MANAGE, MANAGE_CALLS, READ, READ_CALLS, action_for
from fcnetd.bus import Message

ROOT = Path(__file__).parents[2]
STANDARD = {("org.freedesktop.DBus.Properties", m) for m in ("Get", "GetAll", "Set")} | {
    ("org.freedesktop.DBus.ObjectManager", "GetManagedObjects"),
    ("org.freedesktop.DBus.Introspectable", "Introspect")}
BUS_NAME = "org.fcnetd.Network1"


def served_methods() -> set[tuple[str, str]]:
    out = set()
    for xml in sorted((ROOT / "dbus").glob("*.xml")):
        for iface in ET.parse(xml).getroot().iter("interface"):
            if iface.get("name").startswith("org.fcnetd."):
                out |= {(iface.get("name"), m.get("name")) for m in iface.iter("method")}
    return out


def test_the_xml_declares_methods():
    assert len(served_methods()) >= 13


@pytest.mark.parametrize("method", sorted(served_methods() | STANDARD), ids="{0[0]}.{0[1]}".format)
def test_every_method_maps_to_exactly_one_action(method):
    """Fails for a method added to dbus/*.xml without a line in READ_CALLS
    or MANAGE_CALLS (fcnetd/access.py)."""
    in_read, in_manage = method in READ_CALLS, method in MANAGE_CALLS
    assert in_read != in_manage, f"{method} is in {'both' if in_read else 'neither'} READ_CALLS and MANAGE_CALLS"
    interface, member = method
    msg = Message(path="/org/fcnetd/Network1", interface=interface, member=member)
    assert action_for(msg) == (READ if in_read else MANAGE)


def test_no_mapping_names_a_method_nobody_serves():
    assert (READ_CALLS | MANAGE_CALLS) - served_methods() - STANDARD == set()


def test_reads_change_nothing_by_name():
    for _, member in READ_CALLS:
        assert member.startswith(("Get", "List", "Count", "Describe", "Introspect")), member


def test_an_unknown_method_needs_manage():
    assert action_for(Message(path="/org/fcnetd/Network1", interface="org.fcnetd.Network1.Manager",
                              member="SomethingNew")) == MANAGE
    assert action_for(Message(path="/elsewhere", interface="org.example.X", member="GetAll")) == MANAGE


def _policies():
    root = ET.parse(ROOT / "dbus" / "org.fcnetd.Network1.conf").getroot()
    return {(p.get("context") or p.get("user") and f"user={p.get('user')}" or f"group={p.get('group')}"): p
            for p in root.iter("policy")}


def test_the_bus_policy_lets_outsiders_send_exactly_the_reads_peer_and_introspection():
    default = _policies()["default"]
    sends = {(r.get("send_interface"), r.get("send_member")) for r in default.findall("allow")
             if r.get("send_destination") == BUS_NAME}
    assert sends == READ_CALLS | {("org.freedesktop.DBus.Peer", None)}
    denies = [r.attrib for r in default.findall("deny")]
    assert {"send_destination": BUS_NAME} in denies, "outsiders may send anything not allowed above"
    assert {"receive_sender": BUS_NAME, "receive_type": "signal"} in denies


def test_the_bus_policy_lets_root_and_fcnet_receive_fcnetds_signals():
    policies = _policies()
    for name in ("user=root", "group=fcnet"):
        receives = [r.attrib for r in policies[name].findall("allow") if "receive_sender" in r.attrib]
        assert any(r["receive_sender"] == BUS_NAME and r.get("receive_type", "signal") == "signal"
                   for r in receives), name


def test_the_polkit_policy_declares_both_actions_granted_to_nobody_by_default():
    root = ET.parse(ROOT / "polkit" / "org.fcnetd.network1.policy").getroot()
    actions = {a.get("id"): a for a in root.iter("action")}
    assert set(actions) == {READ, MANAGE}
    for action in actions.values():
        assert {d.tag: d.text for d in action.find("defaults")} == {
            "allow_any": "no", "allow_inactive": "no", "allow_active": "no"}
