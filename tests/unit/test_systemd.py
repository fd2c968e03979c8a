"""The units are hardened at least like systemd-networkd's (exposure <= 3)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "systemd"


@pytest.mark.parametrize("unit", ["fcnetd.service", "fcnetd-webui.service"])
def test_exposure_level(unit):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNITS / unit)],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 3.0, res.stdout


def test_daemon_unit_is_notify_with_watchdog():
    text = (UNITS / "fcnetd.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "BusName=org.fcnetd.Network1", "StateDirectory=fcnetd",
                 "RestrictAddressFamilies=AF_UNIX AF_NETLINK", "CapabilityBoundingSet=CAP_NET_ADMIN"):
        assert line in text
