"""The audit trail: one entry per change fcnetd makes (network created or
deleted, VM attached or detached, TAP created or deleted, drift repaired,
config reloaded), with who asked for it.

An entry goes to the journal over its native protocol when the journal's
socket is there: one datagram of `KEY=value` lines, with structured fields
FCNETD_ACTION, FCNETD_NETWORK, FCNETD_VM, FCNETD_TAP, ..., the caller's
FCNETD_CALLER_UID/_PID/_UNIT (caller.py) and FCNETD_ACTOR, under one fixed
MESSAGE_ID, so `journalctl MESSAGE_ID=0a87089ec9a4430696ccc959c799f46a`
lists exactly the audit entries. Without the socket, or when a send fails,
the same facts are a log line (`key=value`). The protocol is a few lines, so
there is no python-systemd dependency. Recording never fails the change it
records and never waits: the socket is non-blocking and an entry is one
datagram of well under 2 KB.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import struct

from . import caller

log = logging.getLogger("fcnetd.audit")
# Made once for fcnetd's audit entries (python3 -c 'import uuid; print(uuid.uuid4().hex)');
# never change it: admins' journalctl filters and the systemd tier use it.
MESSAGE_ID = "0a87089ec9a4430696ccc959c799f46a"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "FCNETD_JOURNAL_SOCKET"  # for tests: a socket of their own instead of journald's
PRIORITY_NOTICE = 5  # syslog "normal but significant": a change to the host's networking
ACTIONS = {
    "network-created": "network created",
    "network-deleted": "network deleted",
    "vm-attached": "VM attached",
    "vm-detached": "VM detached",
    "vm-moved": "VM moved",
    "tap-created": "TAP created",
    "tap-deleted": "TAP deleted",
    "drift-repaired": "drift repaired",
    "config-reloaded": "config reloaded",
}


def encode(fields: list[tuple[str, str]]) -> bytes:
    """The journal's native form: KEY=value lines; a value with a newline is
    KEY, a newline, its length as 64-bit little endian, the bytes and a
    newline (systemd's "Native Journal Protocol")."""
    out = bytearray()
    for key, value in fields:
        raw = value.encode()
        if b"\n" in raw:
            out += key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key.encode() + b"=" + raw + b"\n"
    return bytes(out)


def _shown(value: str) -> str:
    # quoted (control characters escaped) where a bare value could be misread or forge a line
    if value and value.isprintable() and not any(c in value for c in ' "=\\'):
        return value
    return json.dumps(value)


def facts(action: str, who: caller.Caller | None, network=None, vm: str | None = None, nic: str | None = None,
          tap: str | None = None, **details) -> list[tuple[str, str]]:
    """(name, value) of an entry, in the order shown; absent facts left out."""
    out = [("action", action)]
    if network is not None:
        out += [("network", network.name), ("network_id", network.id), ("bridge", network.bridge),
                ("vlan", str(network.vlan))]
    out += [(k, v) for k, v in (("vm", vm), ("nic", nic), ("tap", tap)) if v is not None]
    out += [(k, str(v)) for k, v in details.items() if v is not None]
    if who is not None:
        out += [(k, str(v)) for k, v in (("caller_uid", who.uid), ("caller_pid", who.pid),
                                          ("caller_unit", who.unit), ("caller_sender", who.sender),
                                          ("actor", who.actor)) if v is not None]
    return out


def line(action: str, pairs: list[tuple[str, str]]) -> str:
    """The entry's MESSAGE, and its whole text where there is no journal."""
    return f"{ACTIONS[action]}: " + " ".join(f"{k}={_shown(v)}" for k, v in pairs)


def journal_fields(action: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [("MESSAGE", line(action, pairs)), ("MESSAGE_ID", MESSAGE_ID), ("PRIORITY", str(PRIORITY_NOTICE)),
            ("SYSLOG_IDENTIFIER", "fcnetd")] + [("FCNETD_" + k.upper(), v) for k, v in pairs]


class Audit:
    def __init__(self, socket_path: str | None = None):
        self.path = socket_path or os.environ.get(SOCKET_ENV) or JOURNAL_SOCKET
        self.send_errors = 0  # entries that went to the log because the journal refused them
        self._failing = False
        self._sock = None
        try:
            there = stat.S_ISSOCK(os.stat(self.path).st_mode)
        except OSError:
            there = False
        if there:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
            log.info("audit trail: journal entries MESSAGE_ID=%s through %s", MESSAGE_ID, self.path)
        else:
            log.info("audit trail: log lines (no journal socket at %s)", self.path)

    def record(self, action: str, *, by_daemon: bool = False, **about) -> None:
        """One change, already made. The caller is the call being served
        (caller.current) unless the daemon acted on its own (by_daemon)."""
        try:
            pairs = facts(action, None if by_daemon else caller.current.get(), **about)
            if self._sock is None or not self._send(action, pairs):
                log.info("%s", line(action, pairs))
        except Exception:  # the change is made; its record must not undo or fail it
            log.exception("cannot record %s in the audit trail", action)

    def _send(self, action: str, pairs: list[tuple[str, str]]) -> bool:
        try:
            self._sock.sendto(encode(journal_fields(action, pairs)), self.path)
        except OSError as e:
            self.send_errors += 1
            if not self._failing:
                self._failing = True
                log.warning("cannot write the audit trail to the journal at %s (%s); writing log lines "
                            "until it takes entries again", self.path, errno.errorcode.get(e.errno, e))
            return False
        if self._failing:
            self._failing = False
            log.info("the journal at %s takes audit entries again (%d written as log lines since start)",
                     self.path, self.send_errors)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
