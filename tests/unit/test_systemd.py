"""The units' exposure, offline (the systemd tier scores them installed):
issue 11's targets for fcnetd (2.0) and the web UI (1.0); a nat network's
dnsmasq unit at most what it is now."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "systemd"


CEILING = {"fcnetd.service": 2.0, "fcnetd-webui.service": 1.0, "fcnetd-dnsmasq@.service": 2.7}


@pytest.mark.parametrize("unit", sorted(CEILING))
def test_exposure_level(unit):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", str(UNITS / unit)],
                         capture_output=True, text=True)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= CEILING[unit], res.stdout


def test_daemon_unit_is_notify_with_watchdog():
    text = (UNITS / "fcnetd.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "BusName=org.fcnetd.Network1", "StateDirectory=fcnetd",
                 "RestrictAddressFamilies=AF_UNIX AF_NETLINK", "CapabilityBoundingSet=CAP_NET_ADMIN",
                 # the audit trail is not rate-limited; reload is the synchronous Reload call
                 "LogRateLimitIntervalSec=0", "org.fcnetd.Network1.Manager Reload"):
        assert line in text
