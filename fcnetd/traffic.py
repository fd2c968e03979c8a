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
sees traffic (an idle VM costs nothing), 5.6 KB for an hour; a sample not
written is zero.
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
    """What a feed needs of one TAP, from the metrics snapshot."""
    vm: str
    nic: str
    network_id: str
    index: int  # the TAP's ifindex: a new device, a new baseline
    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int


class Ring:
    """SAMPLES slots of WIDTH rates; `last` is the newest sample written.
    Slots of samples between two writes are zeroed at the second one."""
    __slots__ = ("values", "last")

    def __init__(self, seq: int):
        self.values = array("f", bytes(4 * SAMPLES * WIDTH))
        self.last = seq - 1

    def write(self, seq: int, rates: tuple) -> None:
        values = self.values
        for gap in range(max(self.last + 1, seq - SAMPLES + 1), seq):
            at = (gap % SAMPLES) * WIDTH
            values[at:at + WIDTH] = array("f", bytes(4 * WIDTH))
        at = (seq % SAMPLES) * WIDTH
        values[at:at + WIDTH] = array("f", rates)
        self.last = seq

    def get(self, seq: int) -> tuple:
        if seq > self.last or seq <= self.last - SAMPLES:
            return (0.0,) * WIDTH
        at = (seq % SAMPLES) * WIDTH
        return tuple(self.values[at:at + WIDTH])


class History:
    def __init__(self, sample_seconds: float = SAMPLE_SECONDS):
        self.sample_seconds = sample_seconds
        self.seq = -1  # the newest sample's number; -1: none yet
        self.times: deque[tuple[int, float]] = deque(maxlen=SAMPLES)  # (seq, unix time) of each sample
        self._taken = 0.0  # when the newest sample (or the first baseline) was taken; 0: never fed
        self._base: dict[tuple[str, str], tuple] = {}  # VM NIC -> (ifindex, counters) at the last sample
        self.nics: dict[tuple[str, str], Ring] = {}
        self.networks: dict[str, Ring] = {}

    def feed(self, taken: float, taps: Iterable[TapCounters]) -> bool:
        """One snapshot's counters (taken: unix time). Takes a sample if
        sample_seconds have passed since the last one; True if it did."""
        if self._taken and taken - self._taken < self.sample_seconds:
            return False
        first = not self._taken  # the first feed is only a baseline
        interval = taken - self._taken
        base, fresh = self._base, {}
        by_network: dict[str, list[float]] = {}
        seq = self.seq + 1
        for t in taps:
            key = (t.vm, t.nic)
            counters = (t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets)
            fresh[key] = (t.index, counters)
            was = base.get(key)
            if was is None or was[0] != t.index:
                continue  # a new device: its counters are only a baseline
            rates = tuple((now - then) / interval for now, then in zip(counters, was[1]))
            if min(rates) < 0:  # counters went back on the same device: a baseline again
                continue
            if not any(rates):
                continue  # an unwritten sample is zero
            ring = self.nics.get(key)
            if ring is None:
                ring = self.nics[key] = Ring(seq)
            ring.write(seq, rates)
            total = by_network.get(t.network_id)
            if total is None:
                by_network[t.network_id] = list(rates)
            else:
                for i in range(WIDTH):
                    total[i] += rates[i]
        self._base, self._taken = fresh, taken
        if first:
            return False
        for net_id, rates in by_network.items():
            ring = self.networks.get(net_id)
            if ring is None:
                ring = self.networks[net_id] = Ring(seq)
            ring.write(seq, tuple(rates))
        self.seq = seq
        self.times.append((seq, taken))
        self._prune()
        return True

    def _prune(self) -> None:
        """Forgets rings whose every sample has left the hour."""
        if self.seq % 60:
            return  # every ten minutes is soon enough
        oldest = self.seq - SAMPLES
        for rings in (self.nics, self.networks):
            for key in [k for k, r in rings.items() if r.last <= oldest]:
                del rings[key]

    def forget_network(self, net_id: str) -> None:
        self.networks.pop(net_id, None)

    def series(self, ring: Ring | None, seconds: float) -> list[tuple[float, tuple]]:
        """(time, rates) of every sample of the last `seconds`, oldest first."""
        if not self.times:
            return []
        since = self.times[-1][1] - seconds
        return [(at, ring.get(seq) if ring is not None else (0.0,) * WIDTH)
                for seq, at in self.times if at > since]

    def network_series(self, net_id: str, seconds: float) -> list[tuple[float, tuple]]:
        return self.series(self.networks.get(net_id), seconds)

    def nic_series(self, vm: str, nic: str, seconds: float) -> list[tuple[float, tuple]]:
        return self.series(self.nics.get((vm, nic)), seconds)

    def rate(self, net_id: str) -> tuple[float, float]:
        """The network's (receive, transmit) bytes per second over the newest sample."""
        ring = self.networks.get(net_id)
        if ring is None or ring.last != self.seq:
            return (0.0, 0.0)
        rates = ring.get(self.seq)
        return (float(rates[0]), float(rates[1]))
