"""GetTraffic and the networks' current rates with the real daemon: a guest
(joined to its TAP through fcnetd.relay) floods another VM with UDP; the
rates go up for the network and for each VM, in the host's direction
(receive: what the VM sent), and back to zero after. A TAP made anew (its
counters from zero) gives no negative or huge rate. The history takes a
sample every ten seconds, so this file takes about a minute."""

import subprocess
import sys

import pytest

from .guestnet import guests  # noqa: F401 (fixture)
from .harness import fcnetctl, v, wait_for

A, B = "192.0.2.10", "192.0.2.20"  # documentation addresses, inside the test's namespaces
FIELDS = {"Time", "ReceiveBytes", "TransmitBytes", "ReceivePackets", "TransmitPackets"}
BUSY = 100_000  # bytes per second: far above what ARP and the like make, far below the flood
# UDP datagrams from the guest's namespace to B until killed, ~2 MB/s at
# most (the machine is shared; the relays copy every frame in Python)
FLOOD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes(1000)
while True:
    for _ in range(100):
        s.sendto(payload, (sys.argv[1], 9))
    time.sleep(0.05)
"""


def start(client, guests, vm: str, address: str):
    client.call("AttachVm", "ssqa{sv}", vm, "fcbr0", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", vm, "eth0", {"tap_name": v("s", f"vmtap{vm[-1]}")})[0]
    guest = guests(tap)
    guest.netns.ip("addr", "add", f"{address}/24", "dev", guest.ifname)
    return tap, guest


def traffic(client, network: str, **options) -> list[dict]:
    opts = {k: v("u" if k == "seconds" else "s", val) for k, val in options.items()}
    return client.call("GetTraffic", "sa{sv}", network, opts)[0]


def newest(client, network: str, **options) -> dict:
    rows = traffic(client, network, **options)
    return rows[-1] if rows else {}


def test_a_flood_shows_in_the_rates_of_the_network_and_of_each_vm_then_they_fall_to_zero(
        daemon, client, guests):
    tap_a, a = start(client, guests, "vm-a", A)
    tap_b, b = start(client, guests, "vm-b", B)
    assert a.ping(B)
    flood = subprocess.Popen(["ip", "netns", "exec", a.netns.name, sys.executable, "-c", FLOOD, B],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The first sample wholly inside the flood: the one after a busy one.
        first = wait_for(lambda: newest(client, "fcbr0", vm="vm-a").get("ReceiveBytes", 0) > BUSY and
                         newest(client, "fcbr0", vm="vm-a")["Time"], timeout=40, what="a busy sample")
        wait_for(lambda: newest(client, "fcbr0")["Time"] > first, timeout=20, what="the next sample")
        rows = traffic(client, "fcbr0")
        sent = traffic(client, "fcbr0", vm="vm-a")[-1]
        got = traffic(client, "fcbr0", vm="vm-b")[-1]
        listed = {n["Name"]: n for n in client.call("ListNetworks", "a{sv}", {})[0]}["fcbr0"]
        shown = client.call("GetNetwork", "s", "fcbr0")[0]
    finally:
        flood.kill()
        flood.wait(10)
    assert all(set(r) == FIELDS for r in rows) and [r["Time"] for r in rows] == sorted(r["Time"] for r in rows)
    net = rows[-1]
    assert sent["Time"] == got["Time"] == net["Time"]
    # vm-a's TAP receives what vm-a sends; the bridge forwards it to vm-b's TAP.
    assert sent["ReceiveBytes"] > BUSY and sent["ReceivePackets"] > BUSY / 1100
    assert got["TransmitBytes"] > 0.9 * sent["ReceiveBytes"], (sent, got)
    assert net["ReceiveBytes"] == pytest.approx(sent["ReceiveBytes"] + got["ReceiveBytes"], rel=1e-3)
    assert net["TransmitBytes"] >= got["TransmitBytes"] * 0.999
    assert listed["ReceiveRate"] == pytest.approx(net["ReceiveBytes"], rel=1e-3)
    assert shown["TransmitRate"] == pytest.approx(net["TransmitBytes"], rel=1e-3)
    assert "ReceiveRate" not in client.props(listed["Path"], "org.fcnetd.Network1.Network"), \
        "rates are not properties: no PropertiesChanged every sample"

    # Quiet again: a sample wholly after the flood (and the relay's queue) is ~0.
    wait_for(lambda: newest(client, "fcbr0")["ReceiveBytes"] < 1000, timeout=40, what="a quiet sample")
    assert newest(client, "fcbr0", vm="vm-a")["ReceiveBytes"] < 1000
    assert {n["Name"]: n for n in client.call("ListNetworks", "a{sv}", {})[0]}["fcbr0"]["ReceiveRate"] < 1000

    # vm-a's TAP made anew under the same name: its counters start from zero.
    a.close()
    client.call("DeleteTap", "ss", "vm-a", "eth0")
    client.call("CreateTap", "ssa{sv}", "vm-a", "eth0", {"tap_name": v("s", tap_a)})
    after = newest(client, "fcbr0")["Time"]
    wait_for(lambda: newest(client, "fcbr0")["Time"] > after, timeout=20, what="a sample after the new TAP")
    for row in traffic(client, "fcbr0", vm="vm-a", seconds=30) + traffic(client, "fcbr0", seconds=30):
        assert all(0 <= row[k] < 10**8 for k in FIELDS - {"Time"}), row

    listed = fcnetctl(daemon.bus.address, "--json", "list").stdout
    assert '"ReceiveRate"' in listed


def test_get_traffic_refuses_bad_input_naming_the_option(daemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-a", "fcbr0", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-b", "fcbr1", 0, {})
    assert traffic(client, "fcbr0", seconds=60) == [] or all(set(r) == FIELDS for r in traffic(client, "fcbr0"))
    cases = [
        ("nosuch", {}, "NoSuchNetwork", "nosuch"),
        ("fcbr0", {"vm": v("s", "vm-b")}, "NoSuchVm", "vm-b"),  # attached, to another network
        ("fcbr0", {"vm": v("s", "vm-a"), "nic": v("s", "eth1")}, "NoSuchVm", "eth1"),
        ("fcbr0", {"seconds": v("u", 0)}, "InvalidArgs", "seconds"),
        ("fcbr0", {"seconds": v("u", 3601)}, "InvalidArgs", "seconds"),
        ("fcbr0", {"seconds": v("i", 60)}, "InvalidArgs", "seconds"),
        ("fcbr0", {"nic": v("s", "eth0")}, "InvalidArgs", "nic"),
        ("fcbr0", {"vm": v("s", "x" * 5000)}, "InvalidArgs", "vm"),
        ("fcbr0", {"colour": v("s", "red")}, "InvalidArgs", "colour"),
    ]
    for network, options, error, named in cases:
        err = client.error("GetTraffic", "sa{sv}", network, options)
        assert err.type.endswith(error) and named[:40] in err.text and len(err.text) < 300, (options, err)
