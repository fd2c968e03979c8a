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


def _dnsmasq_unit(g) -> str:
    units = g.ok("systemctl list-units 'fcnetd-dnsmasq@*' --plain --no-legend --state=active").split()
    assert units and units[0].startswith("fcnetd-dnsmasq@"), units
    return units[0]


def test_nat_network_runs_dnsmasq_as_a_unit_of_its_own_and_its_nft_table(configured):
    g = configured
    out = g.ok("fcnetctl create fcbr2 --mode nat --name natnet")
    assert "nat" in out and "gateway" in out, out
    g.ok("nft list table inet fcnetd")
    # dnsmasq: a unit of its own that fcnetd started through systemd, dropped to user dnsmasq
    unit = _dnsmasq_unit(g)
    network_id = json.loads(g.ok("fcnetctl --json show natnet"))["Id"]
    assert unit == f"fcnetd-dnsmasq@{network_id}.service"
    pid = g.ok(f"systemctl show -p MainPID --value {unit}").strip()
    assert g.ok(f"ps -o user=,unit= -p {pid}").split() == ["dnsmasq", unit]
    assert "fcbr2" in g.ok(f"cat /var/lib/fcnetd/nat/{network_id}.conf")
    # ... so fcnetd itself holds CAP_NET_ADMIN and CAP_NET_RAW (bits 12, 13) and nothing else.
    main = g.ok("systemctl show -p MainPID --value fcnetd").strip()
    assert g.ok(f"grep CapEff /proc/{main}/status").split()[1] == "0000000000003000"


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


def test_a_dnsmasq_that_dies_is_restarted_by_systemd_and_still_leases(configured):
    """kill -9 of the network's dnsmasq: systemd starts its unit again
    (Restart=on-failure), fcnetd counts it, and a VM attached afterwards
    leases its address."""
    g = configured
    if "natnet" not in g.ok("fcnetctl list"):
        g.ok("fcnetctl create fcbr2 --mode nat --name natnet")
    unit = _dnsmasq_unit(g)
    pid = g.ok(f"systemctl show -p MainPID --value {unit}").strip()
    g.ok(f"kill -9 {pid}")
    g.wait_for(f"test \"$(systemctl show -p MainPID --value {unit})\" -gt 0 && "
               f"test \"$(systemctl show -p MainPID --value {unit})\" != {pid}", 30, "a new dnsmasq")
    g.wait_for("curl -fsS http://127.0.0.1:9617/metrics | grep -E '^fcnetd_nat_dnsmasq_restarts_total.* [1-9]'",
               30, "the restart counted in fcnetd's metrics")
    ip = json.loads(g.ok("fcnetctl --json attach vm-r fcbr2 --mac 02:00:00:00:00:43"))["ip"]
    g.ok("ip netns add vmr && ip link add vmr0 type veth peer name vmr0p && ip link set vmr0 netns vmr && "
         "ip -n vmr link set vmr0 address 02:00:00:00:00:43 up && ip link set vmr0p master fcbr2 up")
    r = g.run("ip netns exec vmr busybox udhcpc -i vmr0 -n -q -t 20 -T 1 -s /bin/true", timeout=60)
    assert f"lease of {ip} obtained" in r.stdout + r.stderr, str(r)


def test_diagnose_and_the_dhcp_probe_work_under_the_sandbox(configured):
    """Diagnose reads the unit's state through systemd; the DHCP probe
    (a probe port, raw frames: CAP_NET_RAW, AF_PACKET) is answered by the
    network's dnsmasq."""
    g = configured
    if "natnet" not in g.ok("fcnetctl list"):
        g.ok("fcnetctl create fcbr2 --mode nat --name natnet")
    g.ok("fcnetctl attach vm-p fcbr2")  # fcnetd's dnsmasq answers the probe for an attached VM's MAC only
    # (exit status 1 or 2 if some other check fails or warns: only these count here)
    checks = {c["Check"]: c for c in json.loads(g.run("fcnetctl --json diagnose natnet").stdout)}
    assert checks["nat.dnsmasq"]["Result"] == "ok", checks["nat.dnsmasq"]
    gateway = json.loads(g.ok("fcnetctl --json show natnet"))["Gateway"]
    probe = g.run("fcnetctl --json diagnose natnet --dhcp-probe", timeout=60)
    rows = json.loads(probe.stdout)
    assert any(gateway in r["Detail"] for r in rows), str(probe)


def test_fcnetd_killed_keeps_its_nat_networks_dhcp(configured):
    """kill -9 of fcnetd: systemd starts it again (Restart=on-failure); the
    network's dnsmasq unit runs once more, one of it, and the VM's DHCP
    client gets its own address again."""
    g = configured
    vms = {v["VmId"]: v for v in json.loads(g.ok("fcnetctl --json show natnet"))["Vms"]}
    assert "vm-r" in vms, "the restart test above attached vm-r"
    main = g.ok("systemctl show -p MainPID --value fcnetd").strip()
    g.ok(f"kill -9 {main}")
    g.wait_for(f"test \"$(systemctl show -p MainPID --value fcnetd)\" -gt 0 && "
               f"test \"$(systemctl show -p MainPID --value fcnetd)\" != {main} && systemctl is-active fcnetd",
               60, "systemd to start fcnetd again")
    g.wait_for("systemctl list-units 'fcnetd-dnsmasq@*' --plain --no-legend --state=active | grep -q .", 30,
               "the network's dnsmasq unit running")
    units = g.ok("systemctl list-units 'fcnetd-dnsmasq@*' --plain --no-legend --state=active").strip().splitlines()
    assert len(units) == 1, units
    r = g.run("ip netns exec vmr busybox udhcpc -i vmr0 -n -q -t 20 -T 1 -s /bin/true", timeout=60)
    assert f"lease of {vms['vm-r']['Ip']} obtained" in r.stdout + r.stderr, str(r)


def test_deleting_a_nat_network_stops_its_unit_and_removes_its_files(configured):
    g = configured
    if "natnet" not in g.ok("fcnetctl list"):
        g.ok("fcnetctl create fcbr2 --mode nat --name natnet")
    network_id = json.loads(g.ok("fcnetctl --json show natnet"))["Id"]
    for vm in ("vm-n", "vm-r", "vm-p"):
        g.run(f"fcnetctl detach {vm}")
    g.ok("fcnetctl delete natnet")
    assert g.run(f"systemctl is-active fcnetd-dnsmasq@{network_id}.service").stdout.strip() != "active"
    assert not g.ok(f"ls /var/lib/fcnetd/nat/ | grep {network_id} || true").strip()
