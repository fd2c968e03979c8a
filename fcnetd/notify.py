"""systemd notifications (sdnotify imported here only). Outside systemd,
NOTIFY_SOCKET is unset and every call is a no-op."""

from __future__ import annotations

import asyncio
import os

import sdnotify


class Notifier:
    def __init__(self):
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self._enabled else None
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = 0
        self.watchdog_seconds = usec / 1e6
        self._task = None

    def _send(self, text: str) -> None:
        if self._n is not None:
            self._n.notify(text)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def reloaded(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def start_watchdog(self) -> None:
        """Pings from the event loop itself, so a hung loop stops the pings
        and systemd restarts the daemon."""
        if self.watchdog_seconds and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._ping())

    async def _ping(self) -> None:
        while True:
            self._send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_seconds / 2)
