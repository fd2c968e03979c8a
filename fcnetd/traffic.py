"""Recent traffic of each VM NIC and each network: one hour of per-second
rates at one sample every ten seconds, in memory, for GetTraffic and the
networks' current rates.

It is fed from the snapshot the metrics code builds about once a second
(TAP counters from /proc/net/dev); a feed between two samples costs one
comparison. A sample turns each TAP's counters into rates over the interval
since the previous sample. Counters are only compared with those of the
same device (its ifindex): a TAP made anew (a VM restart, a TAP deleted and
created by hand) starts from a new baseline, so a counter reset never shows
as a negative or huge rate; that TAP's first interval shows nothing.

History is kept per VM NIC (vm_id, nic), not per TAP, so it spans VM
restarts; and per network, the sum of its VM NICs' rates at each sample.
Storage: a ring of float32 per VM NIC or network, allocated only once it
sees traffic (an idle VM costs nothing), 5.8 KB for an hour; a sample not
written is zero. The metrics refresh feeds it in its worker thread (a
sample of 10,000 busy TAPs is tens of milliseconds of Python), while the
event loop reads it: see History for why that is safe.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

SAMPLE_SECONDS = 10.0
SAMPLES = 360  # one hour
# The order of the four rates in a ring slot and in a GetTraffic entry.
FIELDS = ("ReceiveBytes", "TransmitBytes", "ReceivePackets", "TransmitPackets")
WIDTH = len(FIELDS)


class TapCounters(NamedTuple):
    """What a feed needs of one TAP, from the metrics snapshot (any tuple
    in this order will do)."""
    vm: str
    nic: str
    network_id: str
    index: int  # the TAP's ifindex: a new device, a new baseline
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


# A ring has one slot more than the samples shown: the slot a sample is
# being written to is never one a reader may read (see History).
SLOTS = SAMPLES + 1
_ZERO = (0.0,) * WIDTH


class Ring:
    """SLOTS slots of WIDTH rates; `last` is the newest sample written.
    Slots of samples between two writes are zeroed at the second one, and
    only then is `last` moved: a sample after `last` reads as zero."""
    __slots__ = ("values", "last")

    def __init__(self, seq: int):
        self.values = array("f", bytes(4 * SLOTS * WIDTH))
        self.last = seq - 1

    def write(self, seq: int, r0: float, r1: float, r2: float, r3: float) -> None:
        values = self.values
        if self.last < seq - 1:
            for gap in range(max(self.last + 1, seq - SLOTS + 1), seq):
                at = (gap % SLOTS) * WIDTH
                values[at:at + WIDTH] = _ZEROS
        at = (seq % SLOTS) * WIDTH
        values[at] = r0
        values[at + 1] = r1
        values[at + 2] = r2
        values[at + 3] = r3
        self.last = seq

    def get(self, seq: int) -> tuple:
        if seq > self.last or seq <= self.last - SLOTS:
            return _ZERO
        at = (seq % SLOTS) * WIDTH
        return tuple(self.values[at:at + WIDTH])


_ZEROS = array("f", _ZERO)


class History:
    """Written by one thread at a time (the metrics refresh's worker), read
    by the event loop at any moment: a sample's rings are written first,
    then it is published (times, then seq), and a reader reads only
    published samples, whose slots a writer no longer touches."""

    def __init__(self, sample_seconds: float = SAMPLE_SECONDS):
        self.sample_seconds = sample_seconds
        self.seq = -1  # the newest published sample's number; -1: none yet
        self.times: deque[tuple[int, float]] = deque(maxlen=SAMPLES)  # (seq, unix time) of each sample
        self._taken = 0.0  # when the newest sample (or the first baseline) was taken; 0: never fed
        self._base: dict[tuple[str, str], tuple] = {}  # VM NIC -> its row at the last sample
        self.nics: dict[tuple[str, str], Ring] = {}
        self.networks: dict[str, Ring] = {}

    def feed(self, taken: float, taps: Iterable[tuple]) -> bool:
        """One snapshot's counters (taken: unix time; taps: TapCounters
        rows). Takes a sample if sample_seconds have passed since the last
        one; True if it did. ~1 µs between samples."""
        if self._taken and taken - self._taken < self.sample_seconds:
            return False
        first = not self._taken  # the first feed is only a baseline
        inv = 1.0 / (taken - self._taken) if not first else 0.0
        base, fresh, nics = self._base, {}, self.nics
        by_network: dict[str, list[float]] = {}
        seq = self.seq + 1
        # Inline and by index: this runs for every busy TAP of every sample.
        for t in taps:
            key = (t[0], t[1])
            fresh[key] = t
            was = base.get(key)
            if was is None or was[3] != t[3]:
                continue  # a new device: its counters are only a baseline
            d0, d1, d2, d3 = t[4] - was[4], t[5] - was[5], t[6] - was[6], t[7] - was[7]
            if not (d0 or d1 or d2 or d3):
                continue  # an unwritten sample is zero
            if d0 < 0 or d1 < 0 or d2 < 0 or d3 < 0:
                continue  # counters went back on the same device: a baseline again
            r0, r1, r2, r3 = d0 * inv, d1 * inv, d2 * inv, d3 * inv
            ring = nics.get(key)
            if ring is None:
                ring = nics[key] = Ring(seq)
            ring.write(seq, r0, r1, r2, r3)
            total = by_network.get(t[2])
            if total is None:
                by_network[t[2]] = [r0, r1, r2, r3]
            else:
                total[0] += r0
                total[1] += r1
                total[2] += r2
                total[3] += r3
        self._base, self._taken = fresh, taken
        if first:
            return False
        for net_id, rates in by_network.items():
            ring = self.networks.get(net_id)
            if ring is None:
                ring = self.networks[net_id] = Ring(seq)
            ring.write(seq, *rates)
        self.times.append((seq, taken))
        self.seq = seq
        self._prune()
        return True

    def _prune(self) -> None:
        """Forgets rings whose every sample has left the hour."""
        if self.seq % 60:
            return  # every ten minutes is soon enough
        oldest = self.seq - SAMPLES
        for rings in (self.nics, self.networks):
            for key, ring in list(rings.items()):  # one C-level copy: the loop may pop meanwhile
                if ring.last <= oldest:
                    rings.pop(key, None)

    def forget_network(self, net_id: str) -> None:
        self.networks.pop(net_id, None)

    def series(self, ring: Ring | None, seconds: float) -> list[tuple[float, tuple]]:
        """(time, rates) of every sample of the last `seconds`, oldest first."""
        times = list(self.times)
        if not times:
            return []
        since = times[-1][1] - seconds
        return [(at, ring.get(seq) if ring is not None else _ZERO) for seq, at in times if at > since]

    def network_series(self, net_id: str, seconds: float) -> list[tuple[float, tuple]]:
        return self.series(self.networks.get(net_id), seconds)

    def nic_series(self, vm: str, nic: str, seconds: float) -> list[tuple[float, tuple]]:
        return self.series(self.nics.get((vm, nic)), seconds)

    def rate(self, net_id: str) -> tuple[float, float]:
        """The network's (receive, transmit) bytes per second over the newest sample."""
        ring = self.networks.get(net_id)
        if ring is None or self.seq < 0:
            return (0.0, 0.0)
        rates = ring.get(self.seq)
        return (float(rates[0]), float(rates[1]))
