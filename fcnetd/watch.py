"""File watching (pyinotify imported here only). Directories are watched,
not files, because the registry and the config are replaced by rename."""

from __future__ import annotations

import asyncio
import os

import pyinotify

MASK = (pyinotify.IN_CLOSE_WRITE | pyinotify.IN_MOVED_TO | pyinotify.IN_DELETE
        | pyinotify.IN_MOVED_FROM | pyinotify.IN_CREATE)


class FileWatcher:
    """Calls callback(path) when one of the watched files changes, debounced
    so an editor's save (several events) is seen once."""

    DEBOUNCE = 0.1

    def __init__(self, loop: asyncio.AbstractEventLoop, callback):
        self._loop = loop
        self._callback = callback
        self._files: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._wm = pyinotify.WatchManager()
        self._dirs: set[str] = set()
        self._notifier = pyinotify.AsyncioNotifier(self._wm, loop, default_proc_fun=self._event)

    def watch(self, path: str) -> None:
        path = os.path.abspath(path)
        directory = os.path.dirname(path)
        self._files.add(path)
        if directory not in self._dirs and os.path.isdir(directory):
            self._wm.add_watch(directory, MASK)
            self._dirs.add(directory)

    def _event(self, event) -> None:
        path = event.pathname
        if path not in self._files:
            return
        if (timer := self._timers.pop(path, None)) is not None:
            timer.cancel()
        self._timers[path] = self._loop.call_later(self.DEBOUNCE, self._fire, path)

    def _fire(self, path: str) -> None:
        self._timers.pop(path, None)
        self._callback(path)

    def close(self) -> None:
        self._notifier.stop()
