"""The private bus the tests and the demo use sets the same limits as the
system bus of the machine (Debian 12: none, so dbus-daemon's built-in
defaults); a loosened limit lets tests pass that production refuses."""

import os
import xml.etree.ElementTree as ET

from fcnetd.testbus import PrivateBus
from tests.prereq import require

SYSTEM_CONF = "/usr/share/dbus-1/system.conf"


def limits(path: str) -> dict[str, str]:
    return {e.get("name"): e.text.strip() for e in ET.parse(path).getroot().iter("limit")}


def test_private_bus_has_the_system_bus_limits(tmp_path):
    require("unit", [] if os.path.exists(SYSTEM_CONF) else [f"{SYSTEM_CONF} (package dbus-daemon)"])
    assert limits(PrivateBus(str(tmp_path)).conf) == limits(SYSTEM_CONF)
