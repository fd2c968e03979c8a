"""Who made the call being served: its bus credentials, its systemd unit and
the person it says it acts for, for the audit trail (audit.py).

The access gate (access.py) asks the bus for each connection's credentials
before it lets a call through (from_credentials) and, just before dispatch,
makes the call's Caller current.
dbus-fast then runs each method in a task of its own, made right after the
gate in the same synchronous dispatch; a task starts with a copy of the
context it was made in, so the handler, and any task it starts, reads its
own caller from `current`, whatever runs in between. Work the daemon does
on its own (reconcile, drift repair, reload) records no caller at all.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass, replace

from .errors import InvalidArgs, excerpt

ACTOR_MAX = 64
# systemd's unit_name_is_valid (plain and instance names) and its unit types
_UNIT = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\."
                   r"(service|socket|target|device|mount|automount|swap|timer|path|slice|scope)")
UNIT_NAME_MAX = 255


@dataclass(frozen=True)
class Caller:
    sender: str | None  # the connection's unique bus name
    uid: int | None
    pid: int | None
    unit: str | None  # its systemd unit, named as journald's _SYSTEMD_UNIT names it
    actor: str | None = None  # who the caller says it acts for (option `actor`)
    gids: tuple[int, ...] | None = None  # its groups (None: a bus too old to report UnixGroupIDs)


current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("fcnetd_caller", default=None)


def acting_for(actor: str) -> None:
    """Marks the current call as made for `actor` (already checked), for
    the rest of its task and the tasks it starts."""
    who = current.get()
    current.set(replace(who, actor=actor) if who is not None else Caller(None, None, None, None, actor))


def check_actor(value: str) -> str:
    if not 1 <= len(value) <= ACTOR_MAX or not value.isprintable():
        raise InvalidArgs("actor", f"{excerpt(value)} must be 1-{ACTOR_MAX} printable characters (the name "
                                   "of the person the call is made for, e.g. the web UI's signed-in user)")
    return value


def _unescape(part: str) -> str:
    # systemd prefixes a cgroup name with "_" where it could clash (cg_escape)
    return part[1:] if part.startswith("_") else part


def unit_of_cgroup(path: str) -> str | None:
    """The unit a cgroup path belongs to, the way systemd's cg_path_get_unit
    finds it: skip the slices, the next component is the unit, if it is a
    valid unit name that is not a slice (/user.slice/user-1000.slice/
    user@1000.service/app.slice/x.service is user@1000.service)."""
    for part in path.strip("/").split("/"):
        name = _unescape(part)
        if len(name) > UNIT_NAME_MAX or not (m := _UNIT.fullmatch(name)):
            return None
        if m.group(2) != "slice":
            return name
    return None


def unit_of_proc_cgroup(text: str) -> str | None:
    """From a /proc/PID/cgroup: systemd's own hierarchy (name=systemd) where
    there is one (cgroup v1, hybrid), else the unified one (the "0::" line)."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            paths[parts[1]] = parts[2]
    path = paths.get("name=systemd", paths.get(""))
    return unit_of_cgroup(path) if path else None


def unit_of_pid(pid: int) -> str | None:
    """None if the process is gone or in no unit."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return unit_of_proc_cgroup(f.read())
    except OSError:
        return None


def from_credentials(sender: str, creds: dict) -> Caller:
    """creds: GetConnectionCredentials' answer (a{sv}, values unwrapped or
    not). KeyError if it names no user."""
    def value(key):
        v = creds.get(key)
        return getattr(v, "value", v)
    uid = value("UnixUserID")
    if uid is None:
        raise KeyError("UnixUserID")
    pid, gids = value("ProcessID"), value("UnixGroupIDs")
    return Caller(sender, uid, pid, unit_of_pid(pid) if pid else None,
                  gids=tuple(gids) if gids is not None else None)
