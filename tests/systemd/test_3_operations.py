"""Every operation under the shipped sandbox (fcnetd.service as installed):
a tagged network on a VLAN-filtering bridge, a TAP owned by a jailer uid,
the uplink trunk, metrics, the registry on disk, a nat network."""

import json

import pytest

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def tagged(configured):
    """vm-a on fcbr0 VLAN 100 with a TAP owned by the launcher user (a
    Firecracker jailer's uid), made by the launcher itself: it is in fcnet."""
    g = configured
    uid = g.ok("id -u launcher").strip()
    g.ok("runuser -u launcher -- fcnetctl attach vm-a fcbr0 --vlan 100 --vm-name web-a")
    tap = g.ok(f"runuser -u launcher -- fcnetctl tap-create vm-a --uid {uid}").strip()
    return g, tap, uid


def test_tagged_network_on_a_vlan_filtering_bridge(tagged):
    g, tap, _ = tagged
    assert "vlan_filtering 1" in g.ok("ip -d link show fcbr0")
    vlans = {v["ifname"]: v["vlans"] for v in json.loads(g.ok(f"bridge -j vlan show dev {tap}"))}
    assert [v["vlan"] for v in vlans[tap]] == [100], f"the TAP must be in VLAN 100 only: {vlans}"
    assert {"PVID", "Egress Untagged"} <= set(vlans[tap][0].get("flags", [])), vlans


def test_tap_is_owned_by_the_jailer_uid_and_on_the_bridge(tagged):
    g, tap, uid = tagged
    assert g.ok(f"cat /sys/class/net/{tap}/owner").strip() == uid
    assert g.ok(f"cat /sys/class/net/{tap}/tun_flags").strip(), "not a tun/tap device"
    assert f"master fcbr0" in g.ok(f"ip link show {tap}")


def test_uplink_trunks_exactly_the_vlans_in_use(tagged):
    g, _, _ = tagged
    vids = {v["vlan"]: v.get("flags", []) for v in json.loads(g.ok("bridge -j vlan show dev uplink0"))[0]["vlans"]}
    assert 100 in vids and "Egress Untagged" not in vids[100], f"VLAN 100 must be trunked tagged: {vids}"


def test_metrics_over_http(tagged):
    g, tap, _ = tagged
    text = g.ok("curl -fsS http://127.0.0.1:9617/metrics")
    assert f'fcnetd_tap_up{{' in text and f'tap="{tap}"' in text, text[-2000:]
    assert 'fcnetd_bridge_vlan_filtering{bridge="fcbr0"} 1.0' in text, text[-2000:]


def test_registry_on_disk(tagged):
    g, _, _ = tagged
    # folded into registry.json after a second without changes
    g.wait_for("grep -q '\"vm-a\"' /var/lib/fcnetd/registry.json", 30, "vm-a in registry.json")
    assert g.ok("stat -c '%a %U' /var/lib/fcnetd/registry.json").split() == ["600", "root"]


def test_nat_network_runs_dnsmasq_and_its_nft_table(configured):
    g = configured
    out = g.ok("fcnetctl create fcbr2 --mode nat --name natnet")
    assert "nat" in out and "gateway" in out, out
    g.ok("nft list table inet fcnetd")
    # dnsmasq: started by fcnetd, inside fcnetd.service, dropped to user dnsmasq
    pid = g.wait_for("pgrep -u dnsmasq -x dnsmasq", 30, "dnsmasq running as user dnsmasq").stdout.split()[0]
    assert g.ok(f"ps -o unit= -p {pid}").strip() == "fcnetd.service"
    assert "fcbr2" in g.ok(f"tr '\\0' ' ' </proc/{pid}/cmdline")


def test_nat_network_gives_a_vm_its_lease(configured):
    """A "VM" (a namespace behind a veth on the nat bridge, with the MAC fcnetd
    gave it) takes its address by DHCP with busybox udhcpc."""
    g = configured
    if "natnet" not in g.ok("fcnetctl list"):
        g.ok("fcnetctl create fcbr2 --mode nat --name natnet")
    out = g.ok("fcnetctl --json attach vm-n fcbr2 --mac 02:00:00:00:00:42")
    ip = json.loads(out)["ip"]
    g.ok("ip netns add vmn && ip link add vmn0 type veth peer name vmn0p && ip link set vmn0 netns vmn && "
         "ip -n vmn link set vmn0 address 02:00:00:00:00:42 up && ip link set vmn0p master fcbr2 up")
    r = g.run("ip netns exec vmn busybox udhcpc -i vmn0 -n -q -t 20 -T 1 -s /bin/true", timeout=60)
    assert f"lease of {ip} obtained" in r.stdout + r.stderr, str(r)
