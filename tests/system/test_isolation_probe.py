"""ProbeIsolation against the real daemon, and the probe's frames on real
packet sockets. This kernel has no bridge VLAN filtering, so no tagged
network exists here: the daemon's answer for an untagged network is tested
here, and the probe on a tagged network (ok, a leak seen and fixed, a kill
-9 mid-probe) in the kernel tier (tests/kernel, scenario 17)."""

import json
import time

import pytest

from .harness import fcnetctl, run, v, wait_for


def probe_ports(ns) -> list[str]:
    return [link["ifname"] for link in ns.links() if link["ifname"].startswith("fcprobe")]


def test_an_untagged_network_is_not_probed_and_says_why(daemon, client, ns, bus):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    rows = {r["Check"]: r for r in client.call("ProbeIsolation", "sa{sv}", "fcbr0", {})[0]}
    row = rows["vlan.isolation"]
    assert row["Result"] == "warn", row
    assert "not run" in row["Detail"] and "tagged networks only" in row["Detail"]
    assert "tagged networks (different VLANs)" in row["Hint"]
    assert rows["bridge.present"]["Result"] == "ok"  # Diagnose's checks come with it
    assert probe_ports(ns) == []

    res = fcnetctl(bus.address, "diagnose", "fcbr0", "--isolation", check=False)
    assert res.returncode == 2, res.stderr  # warnings only
    assert "vlan.isolation" in res.stdout and "tagged networks only" in res.stdout
    res = fcnetctl(bus.address, "--json", "diagnose", "fcbr0", "--isolation", "--timeout", "0.5", check=False)
    assert [r["Result"] for r in json.loads(res.stdout) if r["Check"] == "vlan.isolation"] == ["warn"]
    res = fcnetctl(bus.address, "diagnose", "fcbr0", "--isolation", "--dhcp-probe", check=False)
    assert res.returncode == 2 and "not allowed with" in res.stderr
    assert probe_ports(ns) == []


def test_probe_isolation_checks_its_input(daemon, client):
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    e = client.error("ProbeIsolation", "sa{sv}", "fcbr0", {"timeout_ms": v("u", 50)})
    assert e.type == "org.freedesktop.DBus.Error.InvalidArgs" and "timeout_ms" in e.text and "100 to 30000" in e.text
    e = client.error("ProbeIsolation", "sa{sv}", "fcbr0", {"timeout_ms": v("s", "5")})
    assert "timeout_ms" in e.text and "'u'" in e.text
    e = client.error("ProbeIsolation", "sa{sv}", "fcbr0", {"vlan": v("q", 20)})
    assert e.type == "org.freedesktop.DBus.Error.InvalidArgs" and "vlan" in e.text
    assert client.error("ProbeIsolation", "sa{sv}", "nope", {}).type.endswith("NoSuchNetwork")


EXCHANGE = """
import asyncio, json, sys
from types import SimpleNamespace
from fcnetd import isolationprobe as iso

def port(stem):
    mac = open(f"/sys/class/net/{stem}d/address").read().strip()
    return SimpleNamespace(port=stem + "b", own=stem + "d", mac=mac)

async def main():
    seen = await iso.exchange(port("snd"), port("ctl"), port("lis"), 10, float(sys.argv[1]))
    print(json.dumps({"control": sorted(seen.control), "leaks": sorted(map(list, seen.leaks)),
                      "listener": seen.listener_mac, "sender": seen.sender}))
asyncio.run(main())
"""


@pytest.mark.parametrize("timeout", [0.3])
def test_the_frames_cross_real_packet_sockets_and_the_tag_names_the_vlan(ns, timeout):
    """A bridge WITHOUT VLAN filtering (all this kernel has) joins every
    port, so the listener hears the frames sent in VLAN 10, with the tag
    the kernel hands over beside them (PACKET_AUXDATA): exactly what the
    probe reports as a leak on a filtering bridge."""
    # No IPv6 chatter from the ports, as the probe's own ports have none: the
    # bridge must not learn the listener's MAC before the unicast to it.
    run(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])
    ns.ip("link", "add", "br0", "type", "bridge")
    ns.ip("link", "set", "br0", "up")
    for stem in ("snd", "ctl", "lis"):
        ns.ip("link", "add", stem + "b", "type", "veth", "peer", "name", stem + "d")
        ns.ip("link", "set", stem + "b", "master", "br0")
        ns.ip("link", "set", stem + "b", "up")
        ns.ip("link", "set", stem + "d", "up")
    wait_for(lambda: all(ns.link(n + e)["operstate"] == "UP" for n in ("snd", "ctl", "lis") for e in "bd"), 10,
             what="carrier on the three pairs")
    started = time.monotonic()
    seen = json.loads(ns.python(EXCHANGE, str(timeout)))
    took = time.monotonic() - started
    assert seen["control"] == ["broadcast", "unicast"], seen
    assert seen["leaks"] == [[10, "broadcast"], [10, "unicast"]], seen
    assert seen["listener"] == ns.link("lisd")["address"] and seen["sender"] == "sndb"
    assert timeout <= took < timeout + 10
