"""Named points where the fault tier kills the daemon (tests/faults/).

Inert in production: unless FCNETD_FAULT_POINT is set in the daemon's
environment when this module is imported, reached() returns at once.
FCNETD_FAULT_POINT=NAME kills the process with SIGKILL the first time NAME
is reached; NAME:N the N-th time. Every point is listed in POINTS, and a
unit test holds the code and the list to each other.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "journal.before-append",    # a group of registry changes about to be written
    "journal.after-append",     # written and fsync'd, callers not yet answered
    "compact.after-snapshot",   # new registry.json in place, journal not yet cut
    "tap.created",              # TUNSETIFF done, the fd still open, nothing plugged
    "tap.plugged",              # enslaved, tagged and in its VLAN, not yet persistent
    "tap.persistent",           # persistent, not yet up / answered
    "detach.tap-deleted",       # DetachVm: the TAP is gone, the attachment not yet
    "reconcile.dumped",         # reconcile read the kernel, changed nothing yet
)

_name, _, _count = os.environ.get("FCNETD_FAULT_POINT", "").partition(":")
_remaining = int(_count or 1) if _name else 0


def reached(name: str) -> None:
    global _remaining
    if not _remaining or name != _name:
        return
    _remaining -= 1
    if not _remaining:
        os.kill(os.getpid(), signal.SIGKILL)
