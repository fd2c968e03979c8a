"""fcnetd.service as systemd runs it: Type=notify readiness, STATUS=,
reload, and a broken config on reload."""

import json

import pytest

from .conftest import CONFIG, bridges

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module", autouse=True)
def without_webui(configured):
    """The web UI is a bus client of fcnetd: stopped here, so that a stopped
    fcnetd is not started again at once by the UI's next call (D-Bus
    activation, proved in test_7) while these tests stop and start it."""
    configured.ok("systemctl stop fcnetd-webui")
    yield
    configured.ok("systemctl start fcnetd-webui")


def _show(g, *props) -> dict:
    out = g.ok(f"systemctl show -p {','.join(props)} fcnetd")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_start_returns_only_once_ready_with_the_bus_name_owned(configured):
    g = configured
    # One shell in the guest, so nothing runs between start returning and the checks.
    out = g.ok("systemctl stop fcnetd && systemctl start fcnetd && "
               "busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus "
               "NameHasOwner s org.fcnetd.Network1 && systemctl show -p ActiveState,SubState fcnetd")
    assert out.splitlines()[0] == "b true", f"the bus name was not owned when systemctl start returned:\n{out}"
    assert "ActiveState=active" in out and "SubState=running" in out, out


def test_status_shows_the_daemons_status_line(configured):
    g = configured
    status = _show(g, "StatusText")["StatusText"]
    assert "networks," in status and "TAPs" in status, status
    out = g.ok("systemctl status --no-pager --lines=0 fcnetd")
    assert f'Status: "{status}"' in out, out


def test_reload_goes_through_reloading_and_back_to_active(configured):
    g = configured
    pid = _show(g, "MainPID")["MainPID"]
    # Watch the unit's ActiveState as systemd publishes it on the bus.
    g.ok("timeout 60 busctl --system monitor --json=short --match \"type='signal',sender='org.freedesktop.systemd1',"
         "path='/org/freedesktop/systemd1/unit/fcnetd_2eservice',member='PropertiesChanged'\" "
         ">/run/reload-monitor.json 2>/run/reload-monitor.err </dev/null & echo $! >/run/reload-monitor.pid")
    g.wait_for("grep -q 'Monitoring' /run/reload-monitor.err", 20, "busctl monitor to be attached")
    g.ok("systemctl reload fcnetd")
    # ExecReload is the Reload call: the job ends once the reload has.
    assert g.ok("systemctl is-active fcnetd").strip() == "active"
    g.wait_for("grep -q '\"active\"' /run/reload-monitor.json", 30, "the monitor to see fcnetd active again")
    g.ok("kill $(cat /run/reload-monitor.pid)")
    states = []
    for line in g.ok("cat /run/reload-monitor.json").splitlines():
        changed = json.loads(line)["payload"]["data"][1]
        if "ActiveState" in changed:
            states.append(changed["ActiveState"]["data"])
    assert "reloading" in states and states[-1] == "active", f"ActiveState went {states}"
    assert states.index("reloading") < len(states) - 1
    assert _show(g, "MainPID")["MainPID"] == pid, "a reload must not restart the daemon"
    assert "config reloaded" in g.ok(f"journalctl -b -o cat _PID={pid} | tail -n 20")


def test_a_broken_config_on_reload_keeps_the_old_one_and_the_unit_active(configured):
    g = configured
    pid = _show(g, "MainPID")["MainPID"]
    g.ok(["sh", "-c", "cat > /etc/fcnetd/fcnetd.toml"], input=CONFIG + "\n[bridges.fcbr3]\ncreate = true\n")
    g.ok("systemctl reload fcnetd")
    # No wait: `systemctl reload` returns once the new config is in force.
    assert "fcbr3" in g.ok("busctl --system call org.fcnetd.Network1 /org/fcnetd/Network1 "
                           "org.fcnetd.Network1.Manager ListBridges")
    try:
        g.ok(["sh", "-c", "cat > /etc/fcnetd/fcnetd.toml"], input="[bridges.fcbr3\ncreate = true\n")
        r = g.run("systemctl reload fcnetd")
        assert not r.ok, f"a reload with a broken config must fail, for the admin to see:\n{r}"
        assert "the config in force stays" in g.ok("journalctl -b -o cat -u fcnetd | tail -n 20")  # busctl said it
        props = _show(g, "ActiveState", "MainPID", "StatusText")
        assert "config not reloaded" in props["StatusText"], props
        assert props["ActiveState"] == "active" and props["MainPID"] == pid, props
        assert "fcbr3" in bridges(g), "the old config (fcbr3 allowed) must still count"
        assert "created" in g.ok("fcnetctl create fcbr3 --name after-bad-reload")
        assert "config not reloaded, keeping the old one" in g.ok(f"journalctl -b -o cat _PID={pid}")
    finally:
        g.ok(["sh", "-c", "cat > /etc/fcnetd/fcnetd.toml"], input=CONFIG + "\n[bridges.fcbr3]\ncreate = true\n")
        g.ok("systemctl reload fcnetd")
