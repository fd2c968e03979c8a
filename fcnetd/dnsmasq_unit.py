"""A nat network's dnsmasq as a systemd unit of its own,
fcnetd-dnsmasq@<network id>.service (systemd/fcnetd-dnsmasq@.service),
where fcnetd runs under systemd and that unit file is installed.

Why a unit: dnsmasq must start as root to bind ports 53 and 67 and then
drop to user dnsmasq, and fcnetd then signals it across that uid. As
fcnetd's child, all of that was fcnetd.service's to allow (CAP_SETUID,
CAP_SETGID, CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE, CAP_NET_RAW, the
@setuid and @chown system calls). As a unit, each dnsmasq gets exactly
those in its own sandbox, fcnetd keeps CAP_NET_ADMIN alone, and systemd
supervises, restarts and logs it (`journalctl -u fcnetd-dnsmasq@ID`).

fcnetd writes the unit's conf file (`<id>.conf` beside the hosts and
leases files, which the unit's command line names), then asks systemd to
start the unit and waits for its job: Type=forking, so "done" means
dnsmasq's sockets are bound. A SIGHUP goes through systemd (KillUnit), so
fcnetd needs no CAP_KILL. A dnsmasq systemd restarted after a death is
swept like an adopted one: it re-read the leases file, which may hold
leases a detach released meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping

from . import systemd1
from .dnsmasq import Dnsmasq, backoff, path, remove_files, write_file
from .errors import FcnetError, Internal

log = logging.getLogger("fcnetd.dnsmasq")

TEMPLATE = "fcnetd-dnsmasq@.service"
PREFIX = "fcnetd-dnsmasq@"
# Where the template's command line looks for a network's conf file (%S/fcnetd/nat).
DIRECTORY = "/var/lib/fcnetd/nat"


def unit_name(network_id: str) -> str:
    return f"{PREFIX}{network_id}.service"


def conf_text(settings: list[str]) -> str:
    return "".join(f"{line}\n" for line in settings)


async def attach(conn, directory: str) -> systemd1.Systemd | None:
    """systemd, where dnsmasq can run as its units: fcnetd is on the
    system bus of a systemd host with the unit file installed, and uses the
    state directory the unit file names. None, with why in the log, else."""
    systemd = await systemd1.Systemd.attach(conn, PREFIX, TEMPLATE)
    if systemd is None:
        return None
    if os.path.abspath(directory) != DIRECTORY:
        log.warning("%s is installed, but fcnetd's state directory is not %s, where it looks: "
                    "dnsmasq runs as fcnetd's child", TEMPLATE, os.path.dirname(DIRECTORY))
        return None
    return systemd


class UnitDnsmasq(Dnsmasq):
    def __init__(self, systemd: systemd1.Systemd, *args) -> None:
        super().__init__(*args)
        self.systemd = systemd
        self.unit = unit_name(self.network_id)
        self.conf_file = path(self.directory, self.network_id, ".conf")
        self.settings = conf_text(self.options)
        self._pid = 0  # its main pid as last seen, 0 if none
        self._starting = False  # a new main pid is then fcnetd's doing, not a restart by systemd
        self._refresh: asyncio.Task | None = None
        self._retry: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"dnsmasq of network {self.name} ({self.unit})"

    async def start(self, hosts: Mapping[str, str]) -> None:
        self._hosts = dict(hosts)
        async with self._lock:
            await self._run("start")
        await self._watch()

    async def adopt(self, hosts: Mapping[str, str]) -> str:
        state, pid, self.restarts = await self.systemd.state(self.unit)
        if state not in systemd1.RUNNING:
            return ""
        try:
            with open(self.conf_file) as f:
                same = f.read() == self.settings
        except OSError:
            same = False
        if not same:
            log.warning("%s ran with other settings (an older fcnetd?); starting it anew", self.unit)
            self._hosts = dict(hosts)
            async with self._lock:
                await self._run("restart")
            await self._watch()
            return "replaced"
        self._pid = pid
        await self._watch()
        await self.tell_anew(hosts)
        return "adopted"

    async def _run(self, how: str) -> None:
        self._starting = True
        try:
            await self._start_unit(how)
        finally:
            self._starting = False

    async def _start_unit(self, how: str) -> None:
        self._files_ready()
        try:
            write_file(self.conf_file, self.settings, 0o644)
        except OSError as e:
            raise Internal(f"dnsmasq for network {self.name}: cannot write {self.conf_file}: {e.strerror}") from e
        try:
            await (self.systemd.start if how == "start" else self.systemd.restart)(self.unit)
        except systemd1.UnitFailed as e:
            # Stopped, or Restart=on-failure would go on starting it for a
            # network whose creation is being undone; retry() is ours to call.
            with contextlib.suppress(systemd1.UnitFailed):
                await self.systemd.stop(self.unit)
            raise Internal(f"dnsmasq for network {self.name}: {e}") from None
        _, self._pid, self.restarts = await self.systemd.state(self.unit)
        log.info("started %s (pid %s)", self.unit, self._pid)

    async def stop(self) -> None:
        self._stopped = True
        self.systemd.unwatch(self.unit)
        for task in (self._refresh, self._retry):
            if task is not None:
                task.cancel()
        async with self._lock:
            try:
                await self.systemd.stop(self.unit)
            except systemd1.UnitFailed as e:
                log.error("%s", e)

    def retry(self) -> None:
        # As a child's: again after a delay, growing while it keeps failing.
        self._retry = asyncio.ensure_future(self._retry_start())

    async def _retry_start(self) -> None:
        failures = 1
        while True:
            await asyncio.sleep(backoff(failures))
            failures += 1
            try:
                async with self._lock:
                    await self._run("start")
                await self._watch()
                return
            except FcnetError as e:
                log.error("%s; trying again in %.1f s", e, backoff(failures))

    async def live_pid(self) -> int | None:
        state, pid, _ = await self.systemd.state(self.unit)
        return pid if state in ("active", "reloading") and pid else None

    async def _reload(self) -> bool:
        return await self.systemd.signal(self.unit, signal.SIGHUP)

    # -- what systemd did on its own ------------------------------------------
    async def _watch(self) -> None:
        await self.systemd.watch(self.unit, self._changed)

    def _changed(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.ensure_future(self._look())

    async def _look(self) -> None:
        """After a change systemd announced: a new main pid that fcnetd did
        not start is a restart by systemd (Restart=on-failure), whose
        dnsmasq loaded the leases file as it was."""
        _, pid, self.restarts = await self.systemd.state(self.unit)
        if not pid or pid == self._pid:
            return
        restarted, self._pid = self._pid != 0, pid
        if restarted and not self._stopped and not self._starting:
            log.warning("%s was restarted by systemd (pid %s now); sweeping its leases", self.unit, pid)
            await self.tell_anew(self._hosts)


async def reap(systemd: systemd1.Systemd, keep: set[str]) -> list[str]:
    """Stops the units of networks not in `keep` (a deleted network's, one
    a killed daemon left); the network ids."""
    reaped = []
    for unit, state in (await systemd.units(f"{PREFIX}*.service")).items():
        network_id = unit[len(PREFIX):-len(".service")]
        if network_id not in keep and state in systemd1.RUNNING:
            await systemd.stop(unit)
            reaped.append(network_id)
    return reaped


async def reap_network(systemd: systemd1.Systemd, directory: str, network_id: str) -> None:
    """Stops a network's unit fcnetd does not hold, and removes its files."""
    await systemd.stop(unit_name(network_id))
    remove_files(directory, network_id)
