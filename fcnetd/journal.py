"""The registry's journal: one JSON object a line, appended and fsync'd once
per group of changes, beside the registry.json snapshot it continues.

A line is acknowledged only once it and its newline are on disk, so a torn
last line (a crash mid-append) was never acknowledged and is dropped. A
failed append is cut off again (ftruncate to the last good size), so a torn
line can never end up in the middle of the file.
"""

from __future__ import annotations

import os

from . import faultpoint
from .atomicfile import fsync_directory, write_atomic
from .errors import InvalidArgs
from .model import load_json_object


class JournalError(Exception):
    """The journal cannot be read: the daemon must not start with it."""


class Journal:
    def __init__(self, path: str):
        self.path = path
        self.fd = -1
        self.size = 0  # bytes acknowledged so far
        self._cut = False  # a failed append may have left bytes past `size`

    def open(self) -> None:
        created = not os.path.exists(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size
        if created:
            fsync_directory(os.path.dirname(self.path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def append(self, payload: bytes) -> None:
        """Appends whole lines and makes them durable; on failure the file is
        cut back to what it was, and the OSError is raised."""
        faultpoint.reached("journal.before-append")
        if self.fd < 0:
            self.open()
        if self._cut:  # O_APPEND writes at the real end: cut what a failure left first
            os.ftruncate(self.fd, self.size)
            self._cut = False
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(self.fd, view):]
            os.fdatasync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                self._cut = True  # the next append cuts it before writing
            raise
        self.size += len(payload)
        faultpoint.reached("journal.after-append")

    def drop_before(self, offset: int) -> None:
        """Keeps only what was appended after `offset` (the lines a new
        snapshot does not hold yet): the tail is written to a new file that
        replaces the journal atomically."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                tail = f.read(self.size - offset)
        except FileNotFoundError:  # nothing appended yet
            tail = b""
        write_atomic(self.path, tail)
        self.close()
        self.open()

    @staticmethod
    def read(path: str) -> tuple[list[dict], int, bool]:
        """The journal's records, the size of its good part, and whether a
        torn last line was dropped. A bad line anywhere else is an error."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return [], 0, False
        records, good = [], 0
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:-1], 1):
            try:
                record = load_json_object(line, f"line {number}")
            except InvalidArgs:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("seq"), int) \
                    or isinstance(record.get("seq"), bool):
                if number == len(lines) - 1 and lines[-1] == b"":
                    return records, good, True  # torn last line with its newline written
                raise JournalError(f"{path} line {number} is not a journal record; fix or move it aside")
            records.append(record)
            good += len(line) + 1
        return records, good, lines[-1] != b""
