"""Fairness for bulk reads (Describe, GetManagedObjects, ListNetworks, ...).

A bulk read costs milliseconds to tens of milliseconds at thousands of
networks, and its reply megabytes; a VM launcher's CreateTap must not wait
behind a client that asks for hundreds of them. Three rules keep it so:

- per caller, bulk reads run one at a time, in order; a caller may have
  PER_CALLER of them queued (the running one included) and is answered
  LimitsExceeded beyond that, so one connection holds at most one
  computation and a bounded queue, however fast it writes;
- a computation over many networks runs in slices (`sliced`): it gives the
  event loop back every SLICE_SECONDS, so other calls run in between;
- a caller gets at most UNREAD_BYTES of bulk replies it has not shown it
  read. dbus-daemon keeps a reply the recipient does not read and charges
  it to the sender: past max_incoming_bytes (127 MiB on a system bus) it
  stops reading fcnetd's socket, and every caller waits. So past that
  budget a caller is pinged (org.freedesktop.DBus.Peer.Ping, which every
  D-Bus library answers): the bus delivers the ping behind the replies, so
  its answer proves they were read. A caller that does not read gets
  nothing more until it does. The count outlives the caller's lane (a
  caller sending one call at a time has a new lane each time), for the
  last CARRIED callers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import Awaitable, Callable, Iterable, TypeVar

log = logging.getLogger("fcnetd.lanes")
PER_CALLER = 16
SLICE_SECONDS = 0.001
UNREAD_BYTES = 8 << 20
# Where the bus will not let fcnetd ping a caller (a policy without the rule
# in dbus/), unread replies are paced at this rate instead.
UNACKNOWLEDGED_RATE = 8 << 20  # bytes a second
CARRIED = 4096  # callers whose unread count is kept between lanes

T = TypeVar("T")
Job = Callable[[], Awaitable[int]]  # answers one call; returns the bytes it sent


class Lane:
    __slots__ = ("queue", "unread")

    def __init__(self):
        self.queue: deque[Job] = deque()
        self.unread = 0


class Lanes:
    def __init__(self, acknowledge: Callable[[str], Awaitable[bool]], per_caller: int = PER_CALLER):
        """acknowledge(caller) returns once the caller has read everything
        sent to it before: True, or False if that cannot be known."""
        self.acknowledge = acknowledge
        self.per_caller = per_caller
        self._lanes: dict[str, Lane] = {}
        self._carried: OrderedDict[str, int] = OrderedDict()  # caller -> unread bytes, between lanes
        self._tasks: set[asyncio.Task] = set()

    def submit(self, caller: str, job: Job) -> bool:
        """Queues job behind the caller's other bulk reads; False if the
        caller already has per_caller of them."""
        lane = self._lanes.get(caller)
        if lane is None:
            lane = self._lanes[caller] = Lane()
            lane.unread = self._carried.pop(caller, 0)
            task = asyncio.get_running_loop().create_task(self._drain(caller, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif len(lane.queue) >= self.per_caller:
            return False
        lane.queue.append(job)
        return True

    def queued(self, caller: str) -> int:
        lane = self._lanes.get(caller)
        return len(lane.queue) if lane is not None else 0

    async def _drain(self, caller: str, lane: Lane) -> None:
        try:
            while lane.queue:
                try:
                    lane.unread += await lane.queue[0]()
                except Exception:  # jobs answer their own errors; this is a bug, not a reply
                    log.exception("bulk read of %s failed", caller)
                lane.queue.popleft()
                if lane.unread > UNREAD_BYTES:
                    await self._read_by(caller, lane)
                await asyncio.sleep(0)  # the caller's next read queues behind everyone else
        finally:
            # an idle caller costs a number at most: callers come and go by the thousand
            del self._lanes[caller]
            if lane.unread:
                self._carried[caller] = lane.unread
                if len(self._carried) > CARRIED:
                    self._carried.popitem(last=False)

    async def _read_by(self, caller: str, lane: Lane) -> None:
        started = time.monotonic()
        if not await self.acknowledge(caller):
            await asyncio.sleep(max(0.0, lane.unread / UNACKNOWLEDGED_RATE - (time.monotonic() - started)))
        lane.unread = 0


async def sliced(items: Iterable[T], fn: Callable[[T], object]) -> None:
    """fn(item) for every item, yielding to the event loop every SLICE_SECONDS."""
    clock = time.perf_counter
    until = clock() + SLICE_SECONDS
    for item in items:
        fn(item)
        if clock() > until:
            await asyncio.sleep(0)
            until = clock() + SLICE_SECONDS
