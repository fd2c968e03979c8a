"""The watchdog: a hung fcnetd (SIGSTOP) is killed and restarted by systemd
after WatchdogSec=; the VM's TAP survives and is adopted; nothing is lost
from the registry."""

import json
import time

import pytest

from .conftest import FIGURES

pytestmark = pytest.mark.systemd


def test_a_hung_daemon_is_restarted_and_adopts_the_taps(configured, capsys):
    g = configured
    g.ok("fcnetctl attach vm-wd fcbr1 --vm-name watched")
    tap = g.ok("fcnetctl tap-create vm-wd --uid 1000").strip()
    ifindex = g.ok(f"cat /sys/class/net/{tap}/ifindex").strip()
    before = json.loads(g.ok("fcnetctl --json list"))
    network = next(n["Name"] for n in before if n["Bridge"] == "fcbr1" and n["Vlan"] == 0)
    props = dict(line.split("=", 1) for line in g.ok("systemctl show -p MainPID,NRestarts,WatchdogUSec fcnetd").split())
    pid, restarts = props["MainPID"], int(props["NRestarts"])
    watchdog_s = int(props["WatchdogUSec"].rstrip("s")) if props["WatchdogUSec"].endswith("s") else 30
    t0 = time.monotonic()
    g.ok(f"kill -STOP {pid}")
    g.wait_for(f"test \"$(systemctl show -p MainPID --value fcnetd)\" != {pid} -a "
               f"\"$(systemctl show -p MainPID --value fcnetd)\" != 0 && "
               "systemctl is-active fcnetd", watchdog_s + 120, "fcnetd restarted by systemd")
    took = time.monotonic() - t0
    FIGURES["watchdog: SIGSTOP to a new fcnetd active"] = f"{took:.0f} s (WatchdogSec={props['WatchdogUSec']})"
    with capsys.disabled():
        print(f"\nwatchdog: SIGSTOP to a new fcnetd active in {took:.0f} s (WatchdogSec={props['WatchdogUSec']})")
    # the daemon pings every WatchdogSec/2, so the timeout falls between half of it and all of it
    assert took >= watchdog_s / 2, f"restarted after {took:.0f} s: before the watchdog could have fired"
    assert int(g.ok("systemctl show -p NRestarts --value fcnetd")) == restarts + 1
    assert "Watchdog timeout" in g.ok("journalctl -b -o cat -u fcnetd -n 100")
    assert g.ok(f"cat /sys/class/net/{tap}/ifindex").strip() == ifindex, "the TAP must be the same device"
    vms = json.loads(g.ok(f"fcnetctl --json show {network}"))["Vms"]
    assert [(v["VmId"], v["Tap"]) for v in vms if v["VmId"] == "vm-wd"] == [("vm-wd", tap)], f"{tap} not adopted: {vms}"
    assert json.loads(g.ok("fcnetctl --json list")) == before, "the registry changed across the restart"
