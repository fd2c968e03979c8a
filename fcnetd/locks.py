"""The locks of the engine's serialization model (README, "What may
interleave"): a gate that per-object work shares and whole-state work
(reconcile, a hand edit) holds alone, one lock per VM NIC, and coalesced
runs of a job."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Awaitable, Callable


class Gate:
    """A readers-writer lock for asyncio. Writers are preferred: once one
    waits, new readers queue behind it, so a reconcile is never starved by
    a steady stream of VM starts. Not re-entrant: a holder must not enter
    again (a waiting writer would deadlock it)."""

    def __init__(self):
        self._readers = 0
        self._writer = False
        self._waiters: deque[tuple[bool, asyncio.Future]] = deque()  # (exclusive, future)

    @property
    def held_exclusive(self) -> bool:
        return self._writer

    def _grant(self) -> None:
        while self._waiters and not self._writer:
            exclusive, fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if exclusive:
                if self._readers:
                    return
                self._writer = True
            else:
                self._readers += 1
            self._waiters.popleft()
            fut.set_result(None)
            if exclusive:
                return

    async def _acquire(self, exclusive: bool) -> None:
        free = not self._writer and not self._waiters and (not exclusive or not self._readers)
        if free:
            if exclusive:
                self._writer = True
            else:
                self._readers += 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((exclusive, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                self._grant()  # we may have been the head that held others back
            else:  # granted as we were cancelled: give it back
                self._release(exclusive)
            raise

    def _release(self, exclusive: bool) -> None:
        if exclusive:
            self._writer = False
        else:
            self._readers -= 1
        self._grant()

    @contextlib.asynccontextmanager
    async def shared(self):
        await self._acquire(False)
        try:
            yield
        finally:
            self._release(False)

    @contextlib.asynccontextmanager
    async def exclusive(self):
        await self._acquire(True)
        try:
            yield
        finally:
            self._release(True)


class KeyedLocks:
    """One asyncio.Lock per key, alive only while someone holds or awaits
    it: a stream of calls for ever new keys leaves nothing behind."""

    def __init__(self):
        self._locks: dict[object, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key):
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Coalesced:
    """Runs of one job under a lock, coalesced: callers that ask while a run
    waits for the lock share that run, so a storm of triggers costs at most
    one run more than the one in progress."""

    def __init__(self, hold: Callable[[], contextlib.AbstractAsyncContextManager], job: Callable[[], Awaitable]):
        self._hold, self._job = hold, job
        self._queued: asyncio.Future | None = None

    def __call__(self) -> Awaitable:
        if self._queued is None:
            self._queued = asyncio.ensure_future(self._run())
        return asyncio.shield(self._queued)

    async def _run(self):
        async with self._hold():
            self._queued = None  # a request from now on needs a run of its own
            return await self._job()
