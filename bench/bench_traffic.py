"""The traffic history's sampling cost (fcnetd/traffic.py) at 10,000 TAPs
against 100, in process: every TAP busy (the worst case: each sample writes
every VM NIC's ring and its network's), spread over 100 networks. A sample
runs in the metrics refresh's worker thread once every ten seconds; the
feeds between samples cost one comparison. Also the rings' memory when every TAP is busy."""

from __future__ import annotations

import os
import sys
import time

from common import Figure

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fcnetd.metrics import TapRow, traffic_rows  # noqa: E402
from fcnetd.procstats import Counters  # noqa: E402
from fcnetd.traffic import SAMPLE_SECONDS, SAMPLES, WIDTH, History  # noqa: E402

MS = 1000.0
T0 = 1_700_000_000.0  # unix time of the first feed


def rows(n: int, step: int) -> tuple:
    """n TAPs' snapshot rows at the step-th sample: counters that grow."""
    return tuple(TapRow(f"vmtap{i:06d}", f"vm{i}", "eth0", f"net{i % 100}", True, True,
                        Counters(step * (1000 + i), step * 10, 0, 0, step * 500, step * 5, 0, 0),
                        f"id{i % 100}", 1000 + i) for i in range(n))


def sample_seconds(n: int, samples: int = 12) -> tuple[float, History]:
    """The median time of one sample (feed + the snapshot rows' conversion)."""
    h = History()
    snaps = [rows(n, step) for step in range(samples + 1)]
    h.feed(T0, traffic_rows(snaps[0]))
    times = []
    for step in range(1, samples + 1):
        t = time.perf_counter()
        assert h.feed(T0 + step * SAMPLE_SECONDS, traffic_rows(snaps[step]))
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], h


def between_seconds(h: History, n: int) -> float:
    """A feed between two samples, as the once-a-second snapshot makes it."""
    snap = rows(n, 99)
    t = time.perf_counter()
    for k in range(100):
        h.feed(h._taken + 1.0, traffic_rows(snap))
    return (time.perf_counter() - t) / 100


def bench_traffic(figures: list) -> None:
    small, _ = sample_seconds(100)
    big, history = sample_seconds(10_000)
    per_small, per_big = small / 100, big / 10_000
    figures.append(Figure("traffic sample, 10,000 busy TAPs", big * MS, "ms", "100 busy TAPs", small * MS,
                          "< 100 ms every 10 s, in the refresh's worker thread", big < 0.1))
    # Not quite flat: 55 MiB of rings written at random miss the caches.
    figures.append(Figure("traffic sample per TAP at 10,000", per_big * 1e6, "µs", "per TAP at 100",
                          per_small * 1e6, "ratio < 3", per_big < 3 * per_small))
    between = between_seconds(history, 10_000)
    figures.append(Figure("traffic feed between samples, 10,000 TAPs", between * 1e6, "µs", "a sample",
                          big * 1e6, "ratio < 0.01", between < 0.01 * big))
    ring_bytes = (len(history.nics) + len(history.networks)) * SAMPLES * WIDTH * 4
    figures.append(Figure("traffic rings, 10,000 busy TAPs", ring_bytes / 2**20, "MiB", "idle TAPs", 0.0,
                          "< 64 MiB (float32, an hour at 10 s)", ring_bytes < 64 * 2**20))
