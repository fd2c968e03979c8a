"""Asking systemd (org.freedesktop.systemd1, on the system bus) to start,
stop and signal units, and to say how they are: what `systemctl` does, over
the same API. No policy here (dnsmasq_unit.py decides which units).

fcnetd is root, which systemd lets manage units without asking polkit.
A start or stop is a job: the call returns the job at once and systemd
announces its end with JobRemoved to subscribed clients, which is when the
unit is up (for Type=forking, once its main process is ready) or down.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from .bus import DBusError, Message, MessageType, call, unwrap

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
JOB_REMOVED = (f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',interface='{MANAGER}',"
               "member='JobRemoved'")
UNIT_CHANGES = (f"type='signal',sender='{SYSTEMD}',interface='{PROPERTIES}',member='PropertiesChanged',"
                "path_namespace='/org/freedesktop/systemd1/unit'")
# Longer than the units' own TimeoutStartSec/TimeoutStopSec, so systemd's
# verdict ("timeout", "failed") is what a caller sees.
JOB_SECONDS = 120.0
# JobRemoved of jobs whose StartUnit reply was read but not yet acted on
# (the signal may be dispatched first); only for units of `prefix`, and a
# few: the rest (systemd's own restart jobs) are nobody's.
ENDED_KEPT = 64
RUNNING = frozenset({"active", "reloading", "activating"})


class UnitFailed(Exception):
    """A job of systemd's ended other than "done"."""


class Systemd:
    """One connection's view of systemd, for units named `prefix`*."""

    def __init__(self, conn, prefix: str):
        self.conn, self.prefix = conn, prefix
        self._waiting: dict[str, asyncio.Future] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._watchers: dict[str, Callable[[], None]] = {}  # unit object path -> callback
        self._paths: dict[str, str] = {}  # unit -> its object path

    @classmethod
    async def attach(cls, conn, prefix: str, template: str) -> Systemd | None:
        """systemd on this bus with `template` installed, subscribed to
        its job ends; None without either (no systemd as PID 1, a private
        bus, the unit file not installed)."""
        (owned,) = await call(conn, *DBUS, "NameHasOwner", "s", [SYSTEMD])
        if not owned:
            return None
        try:
            await call(conn, SYSTEMD, MANAGER_PATH, MANAGER, "GetUnitFileState", "s", [template])
        except DBusError:
            return None
        self = cls(conn, prefix)
        conn.add_message_handler(self._on_message)
        for rule in (JOB_REMOVED, UNIT_CHANGES):
            await call(conn, *DBUS, "AddMatch", "s", [rule])
        await call(conn, SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")
        return self

    def _on_message(self, msg: Message):
        if msg.message_type != MessageType.SIGNAL or msg.sender is None:
            return None
        if msg.member == "JobRemoved" and msg.path == MANAGER_PATH and msg.signature == "uoss":
            _id, job, unit, result = msg.body
            waiter = self._waiting.pop(job, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(result)
            elif unit.startswith(self.prefix):
                self._ended[job] = result
                while len(self._ended) > ENDED_KEPT:
                    self._ended.popitem(last=False)
        elif msg.member == "PropertiesChanged" and msg.path in self._watchers:
            self._watchers[msg.path]()
        return None

    async def start(self, unit: str) -> None:
        await self._job("StartUnit", unit)

    async def stop(self, unit: str) -> None:
        await self._job("StopUnit", unit)

    async def restart(self, unit: str) -> None:
        await self._job("RestartUnit", unit)

    async def _job(self, method: str, unit: str) -> None:
        try:
            (job,) = await call(self.conn, SYSTEMD, MANAGER_PATH, MANAGER, method, "ss", [unit, "replace"])
        except DBusError as e:
            raise UnitFailed(f"{method} {unit}: {e.text[:200]}") from None
        result = self._ended.pop(job, None)
        if result is None:
            waiter = self._waiting[job] = asyncio.get_running_loop().create_future()
            try:
                result = await asyncio.wait_for(waiter, JOB_SECONDS)
            except asyncio.TimeoutError:
                raise UnitFailed(f"{method} {unit}: no end of its job in {JOB_SECONDS:g} s") from None
            finally:
                self._waiting.pop(job, None)
        if result != "done":
            raise UnitFailed(f"{method} {unit} ended with result '{result}' (journalctl -u {unit} says why)")

    async def signal(self, unit: str, signo: int) -> bool:
        """Signals the unit's main process; False if it has none (not
        running, or between a death and its restart)."""
        try:
            await call(self.conn, SYSTEMD, MANAGER_PATH, MANAGER, "KillUnit", "ssi", [unit, "main", signo])
        except DBusError:
            return False
        return True

    async def state(self, unit: str) -> tuple[str, int, int]:
        """(ActiveState, MainPID, NRestarts); ("inactive", 0, 0) for a unit
        systemd has not loaded."""
        try:
            (path,) = await call(self.conn, SYSTEMD, MANAGER_PATH, MANAGER, "GetUnit", "s", [unit])
            (active,) = await call(self.conn, SYSTEMD, path, PROPERTIES, "Get", "ss", [UNIT, "ActiveState"])
            (service,) = await call(self.conn, SYSTEMD, path, PROPERTIES, "GetAll", "s", [SERVICE])
        except DBusError:
            return "inactive", 0, 0
        service = unwrap(service)
        return unwrap(active), int(service.get("MainPID", 0)), int(service.get("NRestarts", 0))

    async def units(self, pattern: str) -> dict[str, str]:
        """Loaded units matching `pattern`: name -> ActiveState."""
        (found,) = await call(self.conn, SYSTEMD, MANAGER_PATH, MANAGER, "ListUnitsByPatterns", "asas",
                              [[], [pattern]])
        return {entry[0]: entry[3] for entry in found}

    async def watch(self, unit: str, changed) -> None:
        """Calls `changed()` at each change systemd announces of the unit
        (its state, its main process)."""
        (path,) = await call(self.conn, SYSTEMD, MANAGER_PATH, MANAGER, "LoadUnit", "s", [unit])
        self._paths[unit] = path
        self._watchers[path] = changed

    def unwatch(self, unit: str) -> None:
        self._watchers.pop(self._paths.pop(unit, ""), None)
