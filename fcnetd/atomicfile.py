"""Files replaced atomically: a temp file in the same directory, fsync,
rename, fsync of the directory. A reader sees the old file or the new one."""

from __future__ import annotations

import os


def fsync_directory(directory: str) -> None:
    dfd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_atomic(path: str, payload: bytes, mode: int = 0o600) -> os.stat_result:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)  # a full disk must not keep a half-written copy too
        except OSError:
            pass
        raise
    fsync_directory(os.path.dirname(path))
    return st
