from fcnetd.procstats import parse

SAMPLE = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
vmtap123456: 11400     100    1    2    0     0          0         0     2000      20    3    4    0     0       0          0
"""


def test_parse_all_and_filtered():
    all_ = parse(SAMPLE)
    assert set(all_) == {"lo", "vmtap123456"}
    c = parse(SAMPLE, {"vmtap123456"})["vmtap123456"]
    assert (c.rx_bytes, c.rx_packets, c.rx_errors, c.rx_drops) == (11400, 100, 1, 2)
    assert (c.tx_bytes, c.tx_packets, c.tx_errors, c.tx_drops) == (2000, 20, 3, 4)
