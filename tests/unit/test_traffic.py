"""The traffic history (fcnetd/traffic.py): rates from counters, per VM NIC
and per network, a recreated TAP, the hour's window, the current rate."""

import pytest

from fcnetd.traffic import SAMPLES, History, TapCounters

T0 = 1_700_000_000.0


def tap(vm, net, index, rx_bytes, tx_bytes=0, rx_packets=0, tx_packets=0, nic="eth0"):
    return TapCounters(vm, nic, net, index, rx_bytes, tx_bytes, rx_packets, tx_packets)


def test_rates_over_the_interval_per_nic_and_summed_per_network():
    h = History()
    assert not h.feed(T0, [tap("a", "n1", 5, 1000), tap("b", "n1", 6, 0)])  # the baseline
    assert not h.feed(T0 + 1, [tap("a", "n1", 5, 999_999)])  # between samples: nothing taken
    assert h.feed(T0 + 10, [tap("a", "n1", 5, 11_000, 500, 10, 5), tap("b", "n1", 6, 2000, 0, 4, 0)])
    [(at, rates)] = h.nic_series("a", "eth0", 3600)
    assert at == T0 + 10 and rates == (1000.0, 50.0, 1.0, 0.5)
    [(_, total)] = h.network_series("n1", 3600)
    assert total == pytest.approx((1200.0, 50.0, 1.4, 0.5), rel=1e-6)  # stored as float32
    assert h.rate("n1") == (1200.0, 50.0)
    assert h.rate("other") == (0.0, 0.0)


def test_a_recreated_tap_gives_no_negative_or_huge_rate():
    h = History()
    h.feed(T0, [tap("a", "n1", 5, 10**12)])
    h.feed(T0 + 10, [tap("a", "n1", 5, 10**12 + 10_000)])
    # The VM restarted: a new TAP (new ifindex) counting from zero again.
    h.feed(T0 + 20, [tap("a", "n1", 9, 300)])
    # Same device, counters lower (should not happen; a baseline again).
    h.feed(T0 + 30, [tap("a", "n1", 9, 100)])
    h.feed(T0 + 40, [tap("a", "n1", 9, 1100)])
    received = [rates[0] for _, rates in h.nic_series("a", "eth0", 3600)]
    assert received == [1000.0, 0.0, 0.0, 100.0]
    assert all(0 <= r < 10**6 for r in received)


def test_a_new_tap_with_an_old_name_by_another_index_starts_from_a_baseline():
    h = History()
    h.feed(T0, [tap("a", "n1", 5, 5000)])
    h.feed(T0 + 10, [tap("a", "n1", 7, 9000)])  # higher, but another device
    assert h.nic_series("a", "eth0", 3600) == [(T0 + 10, (0.0, 0.0, 0.0, 0.0))]


def test_idle_nics_cost_no_ring_and_read_as_zero():
    h = History()
    idle = [tap(f"vm{i}", "n1", i, 100) for i in range(50)]
    h.feed(T0, idle)
    h.feed(T0 + 10, idle)
    assert h.nics == {} and h.networks == {}
    assert h.network_series("n1", 3600) == [(T0 + 10, (0.0,) * 4)]


def test_gaps_read_as_zero_and_the_window_is_an_hour():
    h = History()
    h.feed(T0, [tap("a", "n1", 5, 0)])
    count = 0
    for i in range(1, SAMPLES + 20):
        count += 100 if i in (1, 5, SAMPLES + 10) else 0
        h.feed(T0 + 10 * i, [tap("a", "n1", 5, count)])
    series = h.nic_series("a", "eth0", 3600)
    assert len(series) == SAMPLES and series[0][0] == T0 + 10 * 20  # the oldest samples are gone
    assert [at for at, r in series if r[0]] == [T0 + 10 * (SAMPLES + 10)]
    assert len(h.nic_series("a", "eth0", 60)) == 6  # the last minute
    # A gap after the newest write reads as zero, not as the slot's old value.
    h.feed(T0 + 10 * (SAMPLES + 20), [tap("a", "n1", 5, count)])
    assert h.nic_series("a", "eth0", 10)[-1][1] == (0.0,) * 4
    assert h.rate("n1") == (0.0, 0.0)


def test_a_nic_history_spans_its_taps_and_the_network_is_forgotten_when_deleted():
    h = History()
    h.feed(T0, [tap("a", "n1", 5, 0)])
    h.feed(T0 + 10, [tap("a", "n1", 5, 1000)])
    h.feed(T0 + 20, [])  # stopped
    h.feed(T0 + 30, [tap("a", "n1", 8, 0)])
    h.feed(T0 + 40, [tap("a", "n1", 8, 2000)])
    assert [r[0] for _, r in h.nic_series("a", "eth0", 3600)] == [100.0, 0.0, 0.0, 200.0]
    h.forget_network("n1")
    assert h.network_series("n1", 3600)[-1][1] == (0.0,) * 4
