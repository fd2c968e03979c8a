"""Review of issue 11 (polkit + bus policy): fcnetd's broadcasts must reach
no one outside root and group fcnet, at any moment of the daemon's life."""

import json

from .busclient import UserConnection
from .harness import Daemon, v, wait_for
from .test_access import NOBODY, fcnet_gid

# What an outsider would subscribe to: no sender (fcnetd's unique name is
# not known in advance, and org.fcnetd.Network1 is not owned yet at start).
EVERY_OBJECT_MANAGER_SIGNAL = "type='signal',interface='org.freedesktop.DBus.ObjectManager'"


def test_no_one_receives_the_networks_properties_when_fcnetd_starts(ns, bus, tmp_path, config, client):
    """The policy's <deny receive_sender="org.fcnetd.Network1"> matches a
    sender only once it owns that name, and dbus-fast broadcasts
    InterfacesAdded (every network's Description, Vms and Taps) for each
    object exported. Daemon.start exported the stored networks before it
    owned the name, so any local user with a match rule got them at every
    start, watchdog restart and D-Bus activation; now they are exported
    after, and the start's broadcasts reach a member of fcnet, not the
    outsider."""
    state = str(tmp_path / "state")
    d = Daemon(ns, bus, state, config).start()
    try:
        client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {"description": v("s", "payroll segment")})
        client.call("AttachVm", "ssqa{sv}", "vm-secret", "fcbr0", 0, {})
    finally:
        d.stop()
    outsider = UserConnection(bus.address, NOBODY)
    member = UserConnection(bus.address, NOBODY, groups=[fcnet_gid()])
    d = Daemon(ns, bus, state, config)
    try:
        for conn in (outsider, member):
            conn.add_match(EVERY_OBJECT_MANAGER_SIGNAL)
        d.start()
        client.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {"description": v("s", "payroll two")})
        seen = []
        wait_for(lambda: seen.extend(member.signals()) or any("payroll two" in json.dumps(s) for s in seen),
                 what="the fcnet member to receive InterfacesAdded of a network made after the start")
        assert any("payroll segment" in json.dumps(s) for s in seen), \
            "a member of fcnet gets the start-up InterfacesAdded, sent once fcnetd owns its name"
        # signals() pings fcnetd: all it sent before its answer has arrived
        leaked = [s for s in outsider.signals() if "payroll" in json.dumps(s) or "vm-secret" in json.dumps(s)]
        assert leaked == [], f"an outsider received fcnetd's broadcasts: {leaked[:1]}"
    finally:
        outsider.close()
        member.close()
        d.stop()
