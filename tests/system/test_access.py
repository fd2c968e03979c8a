"""Who may call: root and group fcnet; everyone else is refused by the bus
policy and, without the policy file, by the daemon itself."""

import asyncio
import grp
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fcnetd.bus import Message, MessageType, connect
from fcnetd.names import BUS_NAME, MANAGER_PATH
from fcnetd.testbus import PrivateBus

from .busclient import UserConnection
from .harness import Daemon, busctl, v, wait_for

NOBODY = 65534
LIST = ["call", "org.fcnetd.Network1", "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager",
        "ListNetworks", "a{sv}", "0"]
CREATE = ["call", "org.fcnetd.Network1", "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager",
          "CreateNetwork", "ssqa{sv}", "", "fcbr0", "0", "0"]


def fcnet_gid():
    return grp.getgrnam("fcnet").gr_gid


def test_an_outsider_reaches_fcnetd_only_with_reads_and_fcnetd_refuses_them(daemon, bus):
    """No polkit on this bus: the bus policy lets anyone send the reads and
    leaves the verdict to fcnetd's built-in rule; a method that changes
    state is refused by the policy itself."""
    outsider = UserConnection(bus.address, NOBODY)
    try:
        err = outsider.error("ListNetworks", "a{sv}", {})
        assert err.type == "org.fcnetd.Network1.Error.AccessDenied", err.type
        assert err.text == "access denied: only root and members of group fcnet may call fcnetd"
        err = outsider.error("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
        assert err.type == "org.freedesktop.DBus.Error.AccessDenied", err.type
    finally:
        outsider.close()
    assert busctl(bus.address, *LIST).stdout.strip() == "aa{sv} 0"
    assert "authorization at start: built-in rule: root and group fcnet may call" in daemon.output()


SIGNALS_FROM_FCNETD = "type='signal',sender='org.fcnetd.Network1'"


def test_only_root_and_fcnet_receive_fcnetds_signals(daemon, bus, client):
    """Regression: any local user could add a match and read every network's
    description (InterfacesAdded) and TAP names (PropertiesChanged).
    (Eavesdropping and BecomeMonitor are root's alone on a system bus.)"""
    outsider = UserConnection(bus.address, NOBODY)
    member = UserConnection(bus.address, NOBODY, groups=[fcnet_gid()])
    try:
        outsider.add_match(SIGNALS_FROM_FCNETD)
        member.add_match(SIGNALS_FROM_FCNETD)
        client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {"description": v("s", "payroll segment")})
        client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
        client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})
        seen = []

        def member_saw_the_tap():
            seen.extend(member.signals())
            return any(s["member"] == "PropertiesChanged" and "Taps" in json.dumps(s["body"]) for s in seen)
        wait_for(member_saw_the_tap, what="the fcnet member to receive the TAP's PropertiesChanged")
        assert any(s["member"] == "InterfacesAdded" and "payroll segment" in json.dumps(s["body"]) for s in seen)
        # everything fcnetd sent up to now has reached whoever may receive it
        assert outsider.signals() == []
    finally:
        outsider.close()
        member.close()


def test_member_of_fcnet_may_call(daemon, bus):
    res = busctl(bus.address, *CREATE, user=NOBODY, groups=[fcnet_gid()])
    assert res.stdout.startswith("o ")
    assert "aa{sv} 1" in busctl(bus.address, *LIST, user=NOBODY, groups=[fcnet_gid()]).stdout


def test_daemon_checks_credentials_itself_without_the_policy_file(ns, tmp_path, config):
    open_bus = PrivateBus(policy=False).start()
    daemon = Daemon(ns, open_bus, str(tmp_path / "state"), config).start()
    try:
        res = busctl(open_bus.address, *CREATE, user=NOBODY, check=False)
        assert res.returncode != 0 and "only root and members of group fcnet" in res.stderr, res.stderr
        res = busctl(open_bus.address, *LIST, user=NOBODY, check=False)
        assert res.returncode != 0 and "access denied" in res.stderr
        ok = busctl(open_bus.address, *CREATE, user=NOBODY, groups=[fcnet_gid()])
        assert ok.stdout.startswith("o ")
    finally:
        daemon.stop()
        open_bus.stop()


@pytest.fixture
def open_daemon(ns, tmp_path, config):
    """fcnetd on a bus without the project's policy file: anyone may send to
    it, so only the daemon's own gate stands between a caller and the data."""
    open_bus = PrivateBus(policy=False).start()
    daemon = Daemon(ns, open_bus, str(tmp_path / "state"), config).start()
    yield open_bus
    daemon.stop()
    open_bus.stop()


def _call(address, path, interface, member, *args, user=None, groups=None):
    return busctl(address, "call", BUS_NAME, path, interface, member, *args, check=False, user=user,
                  groups=groups)


def _standard_reads(net_path):
    om, props = "org.freedesktop.DBus.ObjectManager", "org.freedesktop.DBus.Properties"
    return {"GetManagedObjects /": ("/", om, "GetManagedObjects"),
            "GetManagedObjects manager": (MANAGER_PATH, om, "GetManagedObjects"),
            "GetAll network": (net_path, props, "GetAll", "s", "org.fcnetd.Network1.Network"),
            "Get network Vms": (net_path, props, "Get", "ss", "org.fcnetd.Network1.Network", "Vms"),
            "GetAll manager": (MANAGER_PATH, props, "GetAll", "s", "org.fcnetd.Network1.Manager"),
            "GetAll /": ("/", props, "GetAll", "s", "org.fcnetd.Network1.Manager")}


def test_without_the_policy_file_standard_interfaces_refuse_an_unprivileged_caller(open_daemon):
    """Regression: the gate covered only paths under /org/fcnetd/Network1, so
    uid 65534 read every network, VM id, VM name and MAC through the
    ObjectManager on /."""
    address = open_daemon.address
    net_path = busctl(address, *CREATE).stdout.split()[1].strip('"')
    busctl(address, "call", BUS_NAME, MANAGER_PATH, "org.fcnetd.Network1.Manager", "AttachVm", "ssqa{sv}",
           "vm-secret", "fcbr0", "0", "1", "vm_name", "s", "payroll-db")
    for label, (path, interface, member, *args) in _standard_reads(net_path).items():
        res = _call(address, path, interface, member, *args, user=NOBODY)
        assert res.returncode != 0 and "only root and members of group fcnet" in res.stderr, (label, res)
        assert "payroll-db" not in res.stdout
    for who in ({}, {"user": NOBODY, "groups": [fcnet_gid()]}):
        res = _call(address, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", **who)
        assert res.returncode == 0, (who, res.stderr)
        assert net_path in res.stdout and "payroll-db" in res.stdout
        res = _call(address, net_path, "org.freedesktop.DBus.Properties", "GetAll", "s",
                    "org.fcnetd.Network1.Network", **who)
        assert res.returncode == 0 and "vm-secret" in res.stdout, (who, res.stderr)


def test_without_the_policy_file_peer_and_public_introspection_stay_open(open_daemon):
    address = open_daemon.address
    net_path = busctl(address, *CREATE).stdout.split()[1].strip('"')
    for path in ("/", MANAGER_PATH):
        res = _call(address, path, "org.freedesktop.DBus.Introspectable", "Introspect", user=NOBODY)
        assert res.returncode == 0 and "<node" in res.stdout, (path, res.stderr)
    for path in ("/", MANAGER_PATH, net_path):
        res = _call(address, path, "org.freedesktop.DBus.Peer", "Ping", user=NOBODY)
        assert res.returncode == 0, (path, res.stderr)
    # below here, introspection lists which network ids exist
    for path in (net_path, net_path.rsplit("/", 1)[0]):
        res = _call(address, path, "org.freedesktop.DBus.Introspectable", "Introspect", user=NOBODY)
        assert res.returncode != 0 and "only root and members of group fcnet" in res.stderr, (path, res)


def _call_without_interface(address, path, member, signature, body):
    async def go():
        conn = await connect(address)
        try:
            return await conn.call(Message(destination=BUS_NAME, path=path, member=member,
                                           signature=signature, body=body))
        finally:
            conn.disconnect()
    return asyncio.run(go())


def test_a_call_without_interface_and_a_wrong_signature_names_the_signature(daemon, bus, client):
    """Regression: it answered UnknownMethod."""
    net_path = client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})[0]
    for path, member, signature, body, expected in (
            (MANAGER_PATH, "AttachVm", "s", ["vm-1"], "ssqa{sv}"),
            (MANAGER_PATH, "DeleteNetwork", "u", [7], "s"),
            (net_path, "Delete", "s", ["now"], "")):
        reply = _call_without_interface(bus.address, path, member, signature, body)
        assert reply.message_type == MessageType.ERROR, (member, reply.body)
        assert reply.error_name == "org.freedesktop.DBus.Error.InvalidArgs"
        assert reply.body == [f"{member} takes arguments of signature '{expected}', got '{signature}'"]
    reply = _call_without_interface(bus.address, MANAGER_PATH, "CountNetworks", "a{sv}", [{}])
    assert (reply.message_type, reply.body) == (MessageType.METHOD_RETURN, [1])


def _normalise(xml_text: str) -> set:
    root = ET.fromstring(xml_text)
    out = set()
    for iface in root.iter("interface"):
        name = iface.get("name")
        if not name.startswith("org.fcnetd."):
            continue
        for m in iface:
            args = tuple((a.get("type"), a.get("direction", "in" if m.tag == "method" else "out"))
                         for a in m.findall("arg"))
            out.add((name, m.tag, m.get("name"), args, m.get("type"), m.get("access")))
    return out


@pytest.mark.parametrize("kind", ["Manager", "Network"])
def test_live_introspection_matches_the_xml_in_dbus(daemon, bus, client, kind):
    path = "/org/fcnetd/Network1"
    if kind == "Network":
        path = client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})[0]
    live = client.call("Introspect", path=path, interface="org.freedesktop.DBus.Introspectable")[0]
    shipped = (Path(__file__).parents[2] / "dbus" / f"org.fcnetd.Network1.{kind}.xml").read_text()
    assert _normalise(live) == _normalise(shipped)
    assert _normalise(shipped), "the shipped XML declares nothing"
