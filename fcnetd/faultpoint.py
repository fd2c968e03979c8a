"""Named crash points for the fault-injection tier (tests/faults/).

The daemon calls reached(name) at each step boundary where a crash must
leave a state it can recover from. With FCNETD_FAULT_POINT=NAME in the
environment (read once, at import), the process kills itself with SIGKILL
the first time NAME is reached, as an OOM kill or a power cut would stop
it: no cleanup, no finally blocks, no flushed buffers; NAME:N kills it the
N-th time. Without the variable, reached() only tests one integer;
production never sets it.

POINTS lists every name, so a test can enumerate them, and a call with an
unknown name is caught when the variable is set.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    # netlink.Netlink.create_tap, in order; a TAP is persistent only from
    # tap.persistent on, so a kill before it must leave no device at all.
    "tap.opened",      # TUNSETIFF done: a TAP that lives as long as our fd
    "tap.plugged",     # enslaved to the bridge, tagged and up, its carrier held off
    "tap.vlans",       # in its VLAN only (tagged networks)
    "tap.persistent",  # TUNSETPERSIST done, fd still open
    "tap.released",    # fd closed: the TAP is the VMM's to open
    # registry.Registry and journal.Journal
    "journal.before-append",   # a group of registry changes about to be written
    "journal.after-append",    # written and fsync'd, callers not yet answered
    "compact.after-snapshot",  # a new registry.json in place, the journal not yet cut
    # engine.Engine
    "detach.tap-deleted",      # DetachVm: the TAP is gone, the attachment not yet
    "reconcile.dumped",        # reconcile read the kernel and changed nothing yet
    "move.enslaved",           # MoveVm to another bridge: the TAP set down and on the new bridge, not
                               # yet in its VLAN nor up again (reconcile puts it back, and up)
    "move.replugged",          # MoveVm: the TAP is on its new bridge and VLAN, the registry still
                               # has the old network (reconcile puts the TAP back)
    # nat networks (engine.Engine and nat.NatPlane, in the order of their
    # calls). Each leaves a different leftover for reconcile to converge:
    "nat.firewall-applied",    # creation: the table has the new network, its gateway not yet added
                               # (a table the registry does not imply)
    "nat.gateway-added",       # creation: its gateway address (IFA_PROTO 0xfc) added, dnsmasq not
                               # yet started (an address of ours whose network does not exist)
    "create.nat-ready",        # creation: the plane set it up (dnsmasq running, no hosts), the
                               # registry commit not yet (a dnsmasq and files of no network); the
                               # state right after dnsmasq started, as nothing is done in between
    "attach.committed",        # AttachVm on a nat network: stored, dnsmasq not yet told (a
                               # reservation missing from the hosts file)
    "dnsmasq.hosts-written",   # dnsmasq.Dnsmasq: the hosts file replaced, dnsmasq not yet sent
                               # SIGHUP (the file right, the running dnsmasq's memory stale)
    "detach.committed",        # DetachVm on a nat network: removed, its lease not yet released
                               # (a lease of no reservation, maybe on an address given again)
    "delete.committed",        # DeleteNetwork of a nat network: removed, the plane not yet torn
                               # down (dnsmasq, files, gateway and rules of a network that is gone)
)

_TARGET, _, _COUNT = os.environ.get("FCNETD_FAULT_POINT", "").partition(":")
_remaining = int(_COUNT or 1) if _TARGET else 0


def reached(name: str) -> None:
    global _remaining
    if not _remaining:
        return
    if name not in POINTS:
        raise AssertionError(f"fault point {name!r} is not listed in faultpoint.POINTS")
    if name == _TARGET:
        _remaining -= 1
        if not _remaining:
            os.kill(os.getpid(), signal.SIGKILL)
