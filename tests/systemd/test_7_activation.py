"""D-Bus activation: with fcnetd stopped, a call on the system bus starts it
through SystemdService= and is answered."""

import pytest

pytestmark = pytest.mark.systemd


def test_a_call_starts_the_stopped_daemon_and_is_answered(configured):
    g = configured
    # The web UI is a client that would itself start fcnetd again the moment
    # it is gone; stopped here so "stopped" holds until the call.
    g.ok("systemctl stop fcnetd-webui fcnetd")
    try:
        assert g.run("systemctl is-active fcnetd").stdout.strip() == "inactive"
        assert g.ok("busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus "
                    "NameHasOwner s org.fcnetd.Network1").strip() == "b false"
        out = g.ok("busctl --system call org.fcnetd.Network1 /org/fcnetd/Network1 "
                   "org.fcnetd.Network1.Manager Describe", timeout=120)
        assert out.startswith("s ") and "fcnetd" in out, out
        # the name is owned (and the call answered) just before READY=1 reaches systemd
        g.wait_for("systemctl is-active fcnetd", 30, "fcnetd active after its activation")
        bus_log = g.ok("journalctl -b -o cat -u dbus -n 50")
        assert "Activating via systemd: service name='org.fcnetd.Network1' unit='fcnetd.service'" in bus_log, bus_log
    finally:
        g.ok("systemctl start fcnetd-webui")
