"""Fairness for bulk reads (Describe, GetManagedObjects, ListNetworks, ...).

A bulk read costs milliseconds to tens of milliseconds at thousands of
networks; a VM launcher's CreateTap must not wait behind a client that asks
for hundreds of them. Two rules keep it so:

- per caller, bulk reads run one at a time, in order; a caller may have
  PER_CALLER of them queued (the running one included) and is answered
  LimitsExceeded beyond that, so one connection holds at most one
  computation and a bounded queue, however fast it writes;
- a computation over many networks runs in slices (`sliced`): it gives the
  event loop back every SLICE_SECONDS, so other calls run in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Awaitable, Callable, Iterable, TypeVar

log = logging.getLogger("fcnetd.lanes")
PER_CALLER = 16
SLICE_SECONDS = 0.001

T = TypeVar("T")


class Lanes:
    def __init__(self, per_caller: int = PER_CALLER):
        self.per_caller = per_caller
        self._queues: dict[str, deque[Callable[[], Awaitable[None]]]] = {}
        self._tasks: set[asyncio.Task] = set()
        self.refused = 0

    def submit(self, caller: str, job: Callable[[], Awaitable[None]]) -> bool:
        """Queues job behind the caller's other bulk reads; False if the
        caller already has per_caller of them."""
        queue = self._queues.get(caller)
        if queue is None:
            queue = self._queues[caller] = deque()
            task = asyncio.get_running_loop().create_task(self._drain(caller, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif len(queue) >= self.per_caller:
            self.refused += 1
            return False
        queue.append(job)
        return True

    def queued(self, caller: str) -> int:
        return len(self._queues.get(caller, ()))

    async def _drain(self, caller: str, queue: deque) -> None:
        try:
            while queue:
                try:
                    await queue[0]()
                except Exception:  # jobs answer their own errors; this is a bug, not a reply
                    log.exception("bulk read of %s failed", caller)
                queue.popleft()
                await asyncio.sleep(0)  # the next read of this caller queues behind everyone else
        finally:
            # an idle caller costs nothing: callers come and go by the thousand
            del self._queues[caller]


async def sliced(items: Iterable[T], fn: Callable[[T], object]) -> None:
    """fn(item) for every item, yielding to the event loop every SLICE_SECONDS."""
    clock = time.perf_counter
    until = clock() + SLICE_SECONDS
    for item in items:
        fn(item)
        if clock() > until:
            await asyncio.sleep(0)
            until = clock() + SLICE_SECONDS
