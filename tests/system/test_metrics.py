"""Metrics as operators consume them: promtool on a real scrape, a real
Prometheus server scraping the daemon, counters that follow real frames."""

import json
import subprocess

import pytest

from fcnetd.schema import LABELS

from .guestnet import guests, internet  # noqa: F401 (fixtures)
from .harness import Daemon, v, wait_for

PORT = 9617
FRAME_WRITER = """
import os, sys, time
from fcnetd.tundev import open_tap
fd = open_tap(sys.argv[1])
frame = bytes.fromhex("ffffffffffff" "02fc00000001" "0800") + bytes(100)
for _ in range(int(sys.argv[2])):
    os.write(fd, frame)
os.close(fd)
"""


@pytest.fixture
def mdaemon(ns, bus, tmp_path, config):
    # the last --metrics wins over the harness's default "off"
    d = Daemon(ns, bus, str(tmp_path / "state"), config, extra=["--metrics", f"127.0.0.1:{PORT}"]).start()
    yield d
    d.stop()


def scrape(d) -> str:
    return d.ns.http_get(f"http://127.0.0.1:{PORT}/metrics")


def wait_scrape(d, predicate, timeout=10):
    last = [""]

    def matching():
        last[0] = scrape(d)
        return predicate(last[0]) and last[0]
    try:
        return wait_for(matching, timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"scrape never matched; last scrape:\n{last[0]}") from None


def series(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_scrape_shows_networks_taps_and_passes_promtool(mdaemon, client):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})[0]
    text = wait_scrape(mdaemon, lambda t: f'tap="{tap}"' in t)
    assert 'fcnetd_networks{type="bridge"} 1.0' in text
    net = client.call("GetNetwork", "s", "fcbr0")[0]
    (info,) = series(text, "fcnetd_network_info")
    # Its labels are the field table's (fcnetd/schema.py), with the network's values.
    assert info == "fcnetd_network_info{" + ",".join(
        f'{f.label}="{net[f.prop]}"' for f in sorted(LABELS, key=lambda f: f.label)) + "}"
    assert series(text, "fcnetd_tap_up")[f'fcnetd_tap_up{{network="fcbr0",nic="eth0",tap="{tap}",vm="vm-1"}}'] == 1
    assert 'fcnetd_dbus_requests_total{method="CreateTap",result="ok"} 1.0' in text
    assert 'fcnetd_bridge_present{bridge="fcbr0"} 1.0' in text
    assert 'fcnetd_registry_writes_total{result="ok"}' in text
    assert "fcnetd_build_info{version=" in text
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_frames_written_through_the_tap_fd_show_in_its_counters(mdaemon, client):
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})[0]
    labels = f'{{network="fcbr0",nic="eth0",tap="{tap}",vm="vm-1"}}'
    before = series(wait_scrape(mdaemon, lambda t: "fcnetd_tap_receive_packets_total" + labels in t),
                    "fcnetd_tap_receive_packets_total")["fcnetd_tap_receive_packets_total" + labels]
    mdaemon.ns.python(FRAME_WRITER, tap, "25")
    text = wait_scrape(mdaemon, lambda t: series(t, "fcnetd_tap_receive_packets_total").get(
        "fcnetd_tap_receive_packets_total" + labels, 0) >= before + 25)
    got = series(text, "fcnetd_tap_receive_bytes_total")["fcnetd_tap_receive_bytes_total" + labels]
    assert got >= 25 * 114


def test_real_prometheus_scrapes_the_daemon(mdaemon, client, tmp_path):
    client.call("AttachVm", "ssqa{sv}", "vm-p", "fcbr1", 0, {"vm_name": v("s", "prom")})
    tap = client.call("CreateTap", "ssa{sv}", "vm-p", "eth0", {})[0]
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: fcnetd\n"
                   f"    static_configs:\n      - targets: ['127.0.0.1:{PORT}']\n")
    log = open(tmp_path / "prometheus.log", "w")
    prom = subprocess.Popen(["ip", "netns", "exec", mdaemon.ns.name, "prometheus", f"--config.file={cfg}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", "--web.listen-address=127.0.0.1:9090"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        query = "http://127.0.0.1:9090/api/v1/query?query=fcnetd_tap_receive_bytes_total"

        def series_in_prometheus():
            try:
                return json.loads(mdaemon.ns.http_get(query))["data"]["result"]
            except AssertionError:  # not listening yet
                return []
        result = wait_for(series_in_prometheus, timeout=60, interval=1,
                          what="the TAP series in Prometheus; see " + str(tmp_path / "prometheus.log"))
        assert result[0]["metric"]["tap"] == tap and result[0]["metric"]["vm"] == "vm-p"
        assert result[0]["metric"]["job"] == "fcnetd"
    finally:
        prom.terminate()
        prom.wait(20)


def test_a_nat_network_shows_its_addresses_leases_and_forwarded_traffic(mdaemon, client, internet, guests):
    """Issue 10's metrics: addresses in use and free, the dnsmasq's leases,
    and the named nft counters of what was forwarded out and let back."""
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {"mode": v("s", "nat"), "subnet": v("s", "10.213.9.0/24")})
    for vm in ("vm-1", "vm-2"):
        client.call("AttachVm", "ssqa{sv}", vm, "fcbr0", 0, {})
    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})[0]
    mac = client.call("GetNetwork", "s", "fcbr0")[0]["Vms"][0]["Mac"]
    guest = guests(tap, mac)
    assert guest.dhcp() is not None, "the guest got no lease"
    assert wait_for(lambda: guest.ping("198.51.100.1"), what="an answer from outside")
    text = wait_scrape(mdaemon, lambda t: 'fcnetd_nat_dhcp_leases{network="fcbr0"} 1.0' in t
                       and 'fcnetd_nat_packets_total{direction="in",network="fcbr0"} 0.0' not in t)
    got = series(text, "fcnetd_nat_addresses")
    assert got['fcnetd_nat_addresses{network="fcbr0",state="used"}'] == 2
    assert got['fcnetd_nat_addresses{network="fcbr0",state="free"}'] == 251  # 256 - network, gateway, broadcast - 2
    for direction in ("out", "in"):
        assert series(text, "fcnetd_nat_packets_total")[
            f'fcnetd_nat_packets_total{{direction="{direction}",network="fcbr0"}}'] >= 1
        assert series(text, "fcnetd_nat_bytes_total")[
            f'fcnetd_nat_bytes_total{{direction="{direction}",network="fcbr0"}}'] >= 84  # one echo at least
    assert series(text, "fcnetd_nat_dnsmasq_restarts_total") == {
        'fcnetd_nat_dnsmasq_restarts_total{network="fcbr0"}': 0}
    res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
