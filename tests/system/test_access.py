"""Who may call: root and group fcnet; everyone else is refused by the bus
policy and, without the policy file, by the daemon itself."""

import grp
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fcnetd.testbus import PrivateBus

from .harness import Daemon, busctl

NOBODY = 65534
LIST = ["call", "org.fcnetd.Network1", "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager",
        "ListNetworks", "a{sv}", "0"]
CREATE = ["call", "org.fcnetd.Network1", "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager",
          "CreateNetwork", "ssqa{sv}", "", "fcbr0", "0", "0"]


def fcnet_gid():
    return grp.getgrnam("fcnet").gr_gid


def test_unprivileged_caller_is_refused_by_the_bus_policy(daemon, bus):
    res = busctl(bus.address, *LIST, user=NOBODY, check=False)
    assert res.returncode != 0 and "Access denied" in res.stderr, res.stderr
    res = busctl(bus.address, *CREATE, user=NOBODY, check=False)
    assert res.returncode != 0
    assert busctl(bus.address, *LIST).stdout.strip() == "aa{sv} 0"


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
