"""Authorization through a real polkitd on the test's bus: the shipped
actions and rules, an admin's rule granting only `read`, what the bus policy
still refuses on its own, the fallback when polkit leaves, and how long a
verdict holds."""

import os
import shutil
import time

import pytest

from fcnetd.access import BUILTIN_REFUSAL, MANAGE, READ, VERDICT_SECONDS
from fcnetd.bus import DBusError
from tests.prereq import require

from .busclient import UserConnection
from .harness import Client, Daemon, wait_for
from .polkitd import POLKITD, AuthorityBus, Polkitd, UserDb

# What an admin writes to let a monitoring user read and nothing else (README, "Access").
MONITOR_RULE = """\
polkit.addRule(function(action, subject) {
    if (action.id == "org.fcnetd.network1.read" && subject.user == "fcnt-monitor") {
        return polkit.Result.YES;
    }
});
"""
BUS_REFUSED = "org.freedesktop.DBus.Error.AccessDenied"
FCNETD_REFUSED = "org.fcnetd.Network1.Error.AccessDenied"
PROPS = "org.freedesktop.DBus.Properties"


@pytest.fixture(scope="module", autouse=True)
def _polkitd_installed():
    missing = [] if os.access(POLKITD, os.X_OK) else [f"{POLKITD} (Debian package polkitd)"]
    missing += [c for c in ("unshare", "mount") if shutil.which(c) is None]
    require("system (polkit)", missing)


@pytest.fixture
def users():
    u = UserDb()
    yield u
    u.remove()


@pytest.fixture
def pbus(users):
    b = AuthorityBus(users).start()
    yield b
    b.stop()


@pytest.fixture
def authority(pbus, users):
    p = Polkitd(pbus, users, {"60-monitoring.rules": MONITOR_RULE}).start()
    yield p
    p.stop()
    p.remove()


@pytest.fixture
def pdaemon(ns, pbus, authority, tmp_path, config):
    d = Daemon(ns, pbus, str(tmp_path / "state"), config).start()
    yield d
    d.stop()


@pytest.fixture
def connect_as(pbus, users):
    opened = []

    def open_(who: str, fcnet_group: bool = False) -> UserConnection:
        """A connection of test user `who`; fcnet_group adds group fcnet to
        the process's groups (what the bus policy and the built-in rule see,
        as SupplementaryGroups= gives it), whatever the user database says
        (what polkit sees)."""
        conn = UserConnection(pbus.address, users.uid(who), groups=[users.fcnet_gid] if fcnet_group else [])
        opened.append(conn)
        return conn
    yield open_
    for conn in opened:
        conn.close()


@pytest.fixture
def network(pdaemon, pbus):
    """A network made by root; its object path."""
    return Client(pbus.address).call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})[0]


def reads(conn, net_path):
    """Every kind of read a monitoring tool makes; raises DBusError on a refusal."""
    names = [n["Name"] for n in conn.call("ListNetworks", "a{sv}", {})[0]]
    conn.call("GetNetwork", "s", "fcbr0")
    props = conn.call("GetAll", "s", "org.fcnetd.Network1.Network", path=net_path, interface=PROPS)[0]
    conn.call("GetManagedObjects", path="/", interface="org.freedesktop.DBus.ObjectManager")
    return names, props


def refusal(conn, member="ListNetworks", *args):
    sig = {"ListNetworks": "a{sv}", "CreateNetwork": "ssqa{sv}"}[member]
    args = args or {"ListNetworks": ({},), "CreateNetwork": ("", "fcbr1", 0, {})}[member]
    return conn.error(member, sig, *args)


def test_polkit_decides_and_the_start_up_log_says_so(pdaemon):
    assert "authorization at start: polkit decides" in pdaemon.output()


def test_root_and_a_fcnet_member_may_read_and_manage(network, pbus, connect_as):
    for conn in (Client(pbus.address), connect_as("member", fcnet_group=True)):
        name = f"n{time.monotonic_ns()}"
        conn.call("CreateNetwork", "ssqa{sv}", name, "fcbr1", 0, {})
        names, props = reads(conn, network)
        assert name in names and props["Bridge"] == "fcbr0"
        conn.call("DeleteNetwork", "s", name)


def test_the_web_ui_user_holds_manage_through_the_shipped_rule(network, connect_as):
    """The web UI's DynamicUser has fcnet only as a supplementary group,
    which polkit does not see: 50-fcnetd.rules names it."""
    webui = connect_as("webui", fcnet_group=True)
    webui.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})
    assert len(reads(webui, network)[0]) == 2


def test_a_monitoring_user_granted_read_by_one_rule_may_read_but_not_manage(network, connect_as):
    monitor = connect_as("monitor")
    names, props = reads(monitor, network)
    assert names == ["fcbr0"] and props["Vlan"] == 0
    # the bus policy refuses it on its own: the monitor is not in fcnet
    assert refusal(monitor, "CreateNetwork").type == BUS_REFUSED
    # and where the bus lets it through, polkit does
    err = refusal(connect_as("monitor", fcnet_group=True), "CreateNetwork")
    assert err.type == FCNETD_REFUSED and f"polkit does not grant {MANAGE}" in err.text


def test_an_outsider_is_refused_reading_and_managing(network, connect_as, pdaemon):
    outsider = connect_as("outsider")
    err = refusal(outsider)
    assert err.type == FCNETD_REFUSED and f"polkit does not grant {READ}" in err.text
    for read in (lambda: outsider.call("GetNetwork", "s", "fcbr0"),
                 lambda: outsider.call("GetAll", "s", "org.fcnetd.Network1.Network", path=network, interface=PROPS)):
        with pytest.raises(DBusError) as e:
            read()
        assert e.value.type == FCNETD_REFUSED
    assert refusal(outsider, "CreateNetwork").type == BUS_REFUSED
    # fcnet as a supplementary group only gets it past the bus: polkit judges by the user database
    sneaky = connect_as("outsider", fcnet_group=True)
    for member in ("ListNetworks", "CreateNetwork"):
        err = refusal(sneaky, member)
        assert err.type == FCNETD_REFUSED and "polkit does not grant" in err.text, (member, err.text)
    assert [n["Name"] for n in Client(pdaemon.bus.address).call("ListNetworks", "a{sv}", {})[0]] == ["fcbr0"]


def test_a_read_holder_gets_its_replies_but_not_fcnetds_signals(network, pbus, connect_as):
    monitor = connect_as("monitor")
    member = connect_as("member", fcnet_group=True)
    for conn in (monitor, member):
        conn.add_match("type='signal',sender='org.fcnetd.Network1'")
    Client(pbus.address).call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})
    seen = []
    wait_for(lambda: seen.extend(member.signals()) or any(s["member"] == "InterfacesAdded" for s in seen),
             what="the fcnet member to receive InterfacesAdded")
    assert monitor.signals() == []
    assert len(monitor.call("ListNetworks", "a{sv}", {})[0]) == 2


def test_without_polkitd_the_built_in_rule_applies_again_and_the_log_says_so(network, authority, pdaemon,
                                                                            connect_as):
    monitor = connect_as("monitor")
    member = connect_as("member", fcnet_group=True)
    reads(monitor, network)
    authority.stop()
    wait_for(lambda: "authorization after polkit left: built-in rule: root and group fcnet may call"
             in pdaemon.output(), what="fcnetd to log that polkit left")
    err = refusal(monitor)
    assert err.type == FCNETD_REFUSED and err.text == BUILTIN_REFUSAL
    member.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})
    assert len(reads(member, network)[0]) == 2
    authority.start()
    wait_for(lambda: "authorization after polkit appeared: polkit decides" in pdaemon.output(),
             what="fcnetd to log that polkit is back")
    assert len(reads(monitor, network)[0]) == 2


@pytest.fixture
def authority_without_actions(pbus, users):
    """polkitd that does not know fcnetd's actions yet: it answers
    CheckAuthorization with an error, not a verdict."""
    p = Polkitd(pbus, users, actions=False).start()
    yield p
    p.stop()
    p.remove()


def test_a_polkit_error_refuses_the_call_and_is_not_cached(ns, pbus, authority_without_actions, tmp_path, config,
                                                         connect_as):
    daemon = Daemon(ns, pbus, str(tmp_path / "state"), config).start()
    try:
        member = connect_as("member", fcnet_group=True)
        failed_at = time.monotonic()
        err = refusal(member)
        assert err.type == FCNETD_REFUSED and f"polkit gave no verdict on {READ}" in err.text, err.text
        authority_without_actions.install_actions()
        wait_for(lambda: authority_without_actions.knows(READ), what="polkitd to load fcnetd's actions")
        # the same connection, well within the time a cached denial would hold
        assert member.call("ListNetworks", "a{sv}", {})[0] == []
        assert time.monotonic() - failed_at < VERDICT_SECONDS
        assert "polkit gave no verdict" in daemon.output()
    finally:
        daemon.stop()


def test_a_rule_change_reaches_an_open_connection_once_its_verdict_expires(network, authority, connect_as):
    monitor = connect_as("monitor")
    asked_at = time.monotonic()
    reads(monitor, network)
    authority.set_rule("60-monitoring.rules", "// the monitoring user's grant was revoked\n")
    wait_for(lambda: not authority.check(monitor.unique_name, READ), what="polkitd to load the new rules")
    assert time.monotonic() < asked_at + VERDICT_SECONDS - 1, "polkitd took too long to reload to test the cache"
    monitor.call("ListNetworks", "a{sv}", {})  # still the verdict given before the change

    def refused():
        try:
            monitor.call("ListNetworks", "a{sv}", {})
        except DBusError as e:
            return e
        return None
    err = wait_for(refused, timeout=VERDICT_SECONDS + 5, interval=0.2, what="the revoked grant to take effect")
    assert time.monotonic() >= asked_at + VERDICT_SECONDS, "the verdict expired early"
    assert err.type == FCNETD_REFUSED and f"polkit does not grant {READ}" in err.text
