"""Review of issue 11 (polkit + bus policy): fcnetd's broadcasts must reach
no one outside root and group fcnet, at any moment of the daemon's life."""

import json

from .busclient import UserConnection
from .harness import Daemon, v, wait_for
from .test_access import NOBODY, fcnet_gid

# What an outsider would subscribe to: no sender (fcnetd's unique name is
# not known in advance, and org.fcnetd.Network1 is not owned yet at start).
EVERY_OBJECT_MANAGER_SIGNAL = "type='signal',interface='org.freedesktop.DBus.ObjectManager'"


def test_review_outsider_receives_every_networks_properties_when_fcnetd_starts(ns, bus, tmp_path, config,
                                                                               client):
    """Daemon.start exports every stored network (Manager.export_all) before
    it requests org.fcnetd.Network1; dbus-fast's export() broadcasts
    InterfacesAdded with all properties (Description, Vms, Taps) for each.
    The policy's <deny receive_sender="org.fcnetd.Network1"> only matches a
    sender that owns the name at routing time, so those broadcasts reach
    any local user with a match rule, at every start, restart, watchdog
    restart and D-Bus activation."""
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
        seen = []
        # the signal is emitted: a member of fcnet, who may receive it, does
        wait_for(lambda: seen.extend(member.signals()) or any("payroll segment" in json.dumps(s) for s in seen),
                 what="the fcnet member to receive the start-up InterfacesAdded")
        leaked = [s for s in outsider.signals() if "payroll segment" in json.dumps(s) or "vm-secret" in json.dumps(s)]
        assert leaked == [], f"an outsider received fcnetd's broadcasts at start: {leaked[:1]}"
    finally:
        outsider.close()
        member.close()
        d.stop()
