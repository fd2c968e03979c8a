"""Named crash points for the fault-injection tests.

The daemon calls reached(name) at each step boundary where a crash must
leave a state it can recover from. With FCNETD_FAULT_POINT set to that name
in the environment (read once, at import), the process kills itself with
SIGKILL there, as an OOM kill or a power cut would stop it: no cleanup, no
finally blocks, no flushed buffers. Without the variable, reached() only
compares two strings; production never sets it.

POINTS lists every name, so a test can enumerate them and a call with an
unknown name is caught when the variable is set.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    # netlink.Netlink.create_tap, in order; a TAP is persistent only from
    # tap.persistent on, so a kill before it must leave no device at all.
    "tap.opened",      # TUNSETIFF done: a TAP that lives as long as our fd
    "tap.plugged",     # enslaved to the bridge, tagged (and up, when untagged)
    "tap.vlans",       # in its VLAN only (tagged networks)
    "tap.up",          # set up
    "tap.persistent",  # TUNSETPERSIST done, fd still open
    "tap.released",    # fd closed: the TAP is the VMM's to open
)

_TARGET = os.environ.get("FCNETD_FAULT_POINT", "")


def reached(name: str) -> None:
    if _TARGET:
        if name not in POINTS:
            raise AssertionError(f"fault point {name!r} is not listed in faultpoint.POINTS")
        if name == _TARGET:
            os.kill(os.getpid(), signal.SIGKILL)
