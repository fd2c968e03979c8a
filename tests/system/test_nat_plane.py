"""The NAT plane (fcnetd/nat.py) against real parts, with no daemon and no
bus: a NatPlane runs in a process of its own (natdriver) inside a network
namespace the test makes, with real netlink, real nft and real dnsmasq; a
"guest" namespace joined to the bridge by a veth runs busybox udhcpc as a
VM's DHCP client would. Nothing of the host's own (ruleset, sysctls,
addresses) is read or changed: every check runs in the test's namespaces.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from fcnetd.dnsmasq import cmdline
from fcnetd.firewall import counter_names
from tests.prereq import require

from .harness import REPO, Netns, run, wait_for

NET1 = {"id": "1a2b3c4d-0000-4000-8000-000000000001", "name": "fcbr0", "bridge": "fcbr0",
        "subnet": "10.213.0.0/24"}
NET2 = {"id": "5e6f7a8b-0000-4000-8000-000000000002", "name": "fcbr1", "bridge": "fcbr1",
        "subnet": "10.213.1.0/24"}
GATEWAY1 = "10.213.0.1"
MAC1, MAC2, STRANGER = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:99"
ADMIN_ADDRESS = "192.0.2.1/24"
UDHCPC_SCRIPT = '#!/bin/sh\n[ "$1" = bound ] && echo "bound ip=$ip router=$router dns=$dns subnet=$subnet"\nexit 0\n'


@pytest.fixture(scope="module", autouse=True)
def _tools():
    missing = [t for t in ("nft", "busybox", "/usr/sbin/dnsmasq") if shutil.which(t) is None]
    require("system", [f"missing: {', '.join(missing)} (tools/bootstrap.sh installs them)"] if missing else [])


class Plane:
    """A NatPlane in its own process inside `ns`."""

    def __init__(self, ns: Netns, state_dir: str, log: str):
        self.log = open(log, "a")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns.name, sys.executable, "-m", "tests.system.natdriver", state_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "PYTHONPATH": REPO})

    def call(self, op: str, timeout: float = 30, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"natdriver gave no answer to {op} (exit {self.proc.poll()}); see {self.log.name}")
        reply = json.loads(line)
        if "error" in reply:
            raise PlaneError(reply["error"])
        return reply["ok"]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(30)
        self.log.close()


class PlaneError(Exception):
    pass


@pytest.fixture
def host():
    """The daemon's namespace: bridges fcbr0 and fcbr1, an admin's own
    address on fcbr0 and an admin's own nft table."""
    ns = Netns()
    for bridge in ("fcbr0", "fcbr1"):
        ns.ip("link", "add", bridge, "type", "bridge")
        ns.ip("link", "set", bridge, "up")
    ns.ip("addr", "add", ADMIN_ADDRESS, "dev", "fcbr0")
    nft(ns, "add table inet admin; add chain inet admin input { type filter hook input priority 10; }; "
            "add rule inet admin input udp dport 9999 counter accept")
    yield ns
    ns.delete()


@pytest.fixture
def guest(host):
    """A VM's side: a namespace with g0, whose peer is a port of fcbr0."""
    ns = Netns()
    host.ip("link", "add", "v0", "type", "veth", "peer", "name", "g0", "netns", ns.name)
    host.ip("link", "set", "v0", "master", "fcbr0", "up")
    ns.ip("link", "set", "g0", "up")
    yield ns
    ns.delete()


@pytest.fixture
def state_dir():
    # Under /tmp itself: dnsmasq, once it is user dnsmasq, must be able to
    # reach the hosts files, and pytest's tmp_path lies in a 0700 directory.
    path = tempfile.mkdtemp(prefix="fcnetd-nat-")
    yield path
    # A dnsmasq a failed test left running: only processes serving this
    # test's own directory (a fresh temp name) are ours to end.
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if any(arg.startswith(f"--dhcp-leasefile={path}/") for arg in cmdline(pid)):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(path)


@pytest.fixture
def planes(host, state_dir, tmp_path):
    started = []

    def start() -> Plane:
        started.append(Plane(host, state_dir, str(tmp_path / "natdriver.log")))
        return started[-1]
    yield start
    for plane in started:
        plane.stop()


def nft(ns: Netns, command: str) -> str:
    return run(["ip", "netns", "exec", ns.name, "nft", command]).stdout


def ruleset(ns: Netns) -> str:
    return nft(ns, "list ruleset")


def fcnetd_addresses(ns: Netns) -> list[tuple[str, str, int]]:
    """(device, address/prefix, IFA_PROTO) of each IPv4 address, read with
    pyroute2 (iproute2 6.1 does not print an address's protocol)."""
    out = ns.python("import json, socket\n"
                    "from pyroute2 import IPRoute\n"
                    "with IPRoute() as ipr:\n"
                    "    print(json.dumps([(socket.if_indextoname(a['index']),\n"
                    "                       f\"{a.get('IFA_LOCAL')}/{a['prefixlen']}\", a.get('IFA_PROTO') or 0)\n"
                    "                      for a in ipr.get_addr(family=socket.AF_INET)]))")
    return [tuple(a) for a in json.loads(out)]


def sysctl_ip_forward(ns: Netns) -> str:
    return run(["ip", "netns", "exec", ns.name, "cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip()


def _pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def dnsmasq_pid(state_dir: str, net: dict) -> int | None:
    """The pid of the network's dnsmasq if one runs (its pidfile names a
    live dnsmasq serving that network's leases file)."""
    pid = _pid(os.path.join(state_dir, "nat", f"{net['id']}.pid"))
    argv = cmdline(pid) if pid else []
    leases = os.path.join(state_dir, "nat", f"{net['id']}.leases")
    return pid if argv and argv[0].endswith("dnsmasq") and f"--dhcp-leasefile={leases}" in argv else None


def process_user(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Uid:")).split()[1])


def exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def dhcp(guest: Netns, mac: str, tries: int = 3) -> dict | None:
    """Runs busybox udhcpc on g0 with `mac`: the lease's fields, or None if
    no server gave one."""
    guest.ip("link", "set", "g0", "down")
    guest.ip("link", "set", "g0", "address", mac)
    guest.ip("link", "set", "g0", "up")
    script = os.path.join(tempfile.mkdtemp(prefix="fcnetd-udhcpc-"), "script")
    with open(script, "w") as f:
        f.write(UDHCPC_SCRIPT)
    os.chmod(script, 0o755)
    try:
        res = run(["ip", "netns", "exec", guest.name, "busybox", "udhcpc", "-i", "g0", "-f", "-q", "-n",
                   "-t", str(tries), "-T", "1", "-s", script], check=False)
    finally:
        shutil.rmtree(os.path.dirname(script))
    for line in res.stdout.splitlines():
        if line.startswith("bound "):
            return dict(field.split("=", 1) for field in line.split()[1:])
    return None


def attachment(mac: str, ip: str) -> dict:
    return {"vm_id": f"vm-{mac[-2:]}", "nic": "eth0", "mac": mac, "ip": ip}


def test_network_added_makes_gateway_table_forwarding_and_dnsmasq(host, planes, state_dir):
    plane = planes()
    admin_rules = nft(host, "list table inet admin")
    assert sysctl_ip_forward(host) == "0"
    plane.call("network_added", net=NET1, networks=[NET1])

    assert ("fcbr0", f"{GATEWAY1}/24", 0xFC) in fcnetd_addresses(host)
    assert ("fcbr0", ADMIN_ADDRESS, 0) in fcnetd_addresses(host)
    table = nft(host, "list table inet fcnetd")
    assert 'iifname "fcbr0" oifname != "fcbr0" ip saddr 10.213.0.0/24 masquerade' in table
    assert 'iifname "fcbr0" ip daddr { 10.213.0.1, 255.255.255.255 } udp dport 67 accept' in table
    assert sysctl_ip_forward(host) == "1"
    pid = dnsmasq_pid(state_dir, NET1)
    assert pid, "no dnsmasq runs for the network"
    assert process_user(pid) == int(run(["id", "-u", "dnsmasq"]).stdout), "dnsmasq kept root"
    listening = run(["ip", "netns", "exec", host.name, "ss", "-lnup"]).stdout
    assert f"{GATEWAY1}:53 " in listening and "0.0.0.0%fcbr0:67 " in listening
    assert nft(host, "list table inet admin") == admin_rules


def test_a_vm_gets_exactly_its_address_and_a_stranger_nothing(host, guest, planes):
    plane = planes()
    plane.call("network_added", net=NET1, networks=[NET1])
    plane.call("leases_changed", net=NET1, attachments=[attachment(MAC1, "10.213.0.5")])

    lease = dhcp(guest, MAC1)
    assert lease == {"ip": "10.213.0.5", "router": GATEWAY1, "dns": GATEWAY1, "subnet": "255.255.255.0"}
    assert dhcp(guest, STRANGER, tries=2) is None
    assert plane.call("snapshot")[NET1["id"]]["leases"] == 1


def test_a_released_address_goes_to_the_next_mac_at_once(host, guest, planes, state_dir):
    """dnsmasq refuses a static address still leased to another MAC ("not
    using configured address ... because it is leased to ...") until the
    lease expires; DetachVm's release ends the lease at once."""
    plane = planes()
    plane.call("network_added", net=NET1, networks=[NET1])
    first, second = attachment(MAC1, "10.213.0.5"), attachment(MAC2, "10.213.0.5")
    plane.call("leases_changed", net=NET1, attachments=[first])
    assert dhcp(guest, MAC1)["ip"] == "10.213.0.5"
    with open(os.path.join(state_dir, "nat", f"{NET1['id']}.leases")) as f:
        assert f" {MAC1} 10.213.0.5 " in f.read()

    plane.call("leases_changed", net=NET1, attachments=[], released=[first])
    plane.call("leases_changed", net=NET1, attachments=[second])
    assert dhcp(guest, MAC2) == {"ip": "10.213.0.5", "router": GATEWAY1, "dns": GATEWAY1,
                                 "subnet": "255.255.255.0"}
    assert dhcp(guest, MAC1, tries=2) is None


def test_network_removed_leaves_nothing_behind(host, planes, state_dir):
    plane = planes()
    admin_rules = nft(host, "list table inet admin")
    plane.call("network_added", net=NET1, networks=[NET1])
    plane.call("network_added", net=NET2, networks=[NET1, NET2])
    pid1, pid2 = dnsmasq_pid(state_dir, NET1), dnsmasq_pid(state_dir, NET2)
    assert pid1 and pid2

    plane.call("network_removed", net=NET2, networks=[NET1])
    assert "10.213.1.0/24" not in ruleset(host) and "10.213.0.0/24" in ruleset(host)
    assert not exists(pid2) and exists(pid1)
    plane.call("network_removed", net=NET1, networks=[])

    assert "table inet fcnetd" not in ruleset(host)
    assert nft(host, "list table inet admin") == admin_rules
    assert [a for a in fcnetd_addresses(host) if a[2] == 0xFC] == []
    assert ("fcbr0", ADMIN_ADDRESS, 0) in fcnetd_addresses(host)
    assert not exists(pid1), "dnsmasq still runs"
    assert os.listdir(os.path.join(state_dir, "nat")) == []
    assert sysctl_ip_forward(host) == "1", "ip_forward is never turned off again"


def test_a_failed_dnsmasq_start_undoes_every_step(host, planes, state_dir):
    """Port 53 of every address taken by someone else: dnsmasq cannot bind
    the gateway's, so network_added fails and leaves nothing of its own."""
    blocker = subprocess.Popen(["ip", "netns", "exec", host.name, sys.executable, "-c",
                                "import socket, sys, time\n"
                                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                "s.bind(('0.0.0.0', 53)); print('bound', flush=True); time.sleep(120)"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert blocker.stdout.readline().strip() == "bound"
        plane = planes()
        with pytest.raises(PlaneError, match="Internal: dnsmasq for network fcbr0 exited at start"):
            plane.call("network_added", net=NET1, networks=[NET1])
    finally:
        blocker.kill()
        blocker.wait()
    assert "table inet fcnetd" not in ruleset(host)
    assert [a for a in fcnetd_addresses(host) if a[2] == 0xFC] == []
    assert dnsmasq_pid(state_dir, NET1) is None


def test_a_tagged_network_without_8021q_is_refused_and_leaves_nothing(host, planes):
    """This kernel has no 802.1Q devices nor bridge VLAN filtering, so only
    the refusal can be checked here; the kernel tier runs tagged ones."""
    plane = planes()
    tagged = {**NET1, "vlan": 10, "name": "fcbr0-vlan-10"}
    with pytest.raises(PlaneError, match="VlanUnsupported: device fcbr0.10: creating it as a VLAN device"):
        plane.call("network_added", net=tagged, networks=[tagged])
    assert host.link("fcbr0.10") is None
    assert "table inet fcnetd" not in ruleset(host)


def test_converge_after_a_crash_adopts_what_stays_and_reaps_the_rest(host, guest, planes, state_dir):
    crashed = planes()
    crashed.call("network_added", net=NET1, networks=[NET1])
    crashed.call("network_added", net=NET2, networks=[NET1, NET2])
    crashed.call("leases_changed", net=NET1, attachments=[attachment(MAC1, "10.213.0.5")])
    pid1, pid2 = dnsmasq_pid(state_dir, NET1), dnsmasq_pid(state_dir, NET2)
    crashed.kill9()  # NET2's DeleteNetwork was committed; its network_removed never ran
    admin_rules = nft(host, "list table inet admin")

    plane = planes()
    counts = plane.call("converge", networks=[NET1], attachments={NET1["id"]: [attachment(MAC1, "10.213.0.5")]})

    assert dnsmasq_pid(state_dir, NET1) == pid1, "the running dnsmasq was not adopted"
    assert not exists(pid2) or not cmdline(pid2), "the gone network's dnsmasq still runs"
    files = sorted(os.listdir(os.path.join(state_dir, "nat")))
    assert files == [f"{NET1['id']}.{suffix}" for suffix in ("hosts", "leases", "pid")]
    assert [a for a in fcnetd_addresses(host) if a[2] == 0xFC] == [("fcbr0", f"{GATEWAY1}/24", 0xFC)]
    assert "10.213.1.0/24" not in ruleset(host) and "10.213.0.0/24" in ruleset(host)
    assert nft(host, "list table inet admin") == admin_rules
    # adopted: NET1's gateway and dnsmasq; drift: the table still held NET2's
    # rules; reaped: NET2's gateway, and its dnsmasq with its files.
    assert counts == {"adopted": 2, "drift": 1, "reaped": 2, "error": 0}, counts
    assert dhcp(guest, MAC1)["ip"] == "10.213.0.5"


def test_a_killed_dnsmasq_is_started_again(host, guest, planes, state_dir):
    plane = planes()
    plane.call("network_added", net=NET1, networks=[NET1])
    plane.call("leases_changed", net=NET1, attachments=[attachment(MAC1, "10.213.0.5")])
    old = dnsmasq_pid(state_dir, NET1)
    os.kill(old, signal.SIGKILL)

    new = wait_for(lambda: (pid := dnsmasq_pid(state_dir, NET1)) != old and pid, what="a new dnsmasq")
    assert not exists(old), "the dead dnsmasq was left a zombie"
    assert plane.call("snapshot")[NET1["id"]]["dnsmasq_restarts"] == 1
    assert dhcp(guest, MAC1)["ip"] == "10.213.0.5"
    assert dnsmasq_pid(state_dir, NET1) == new


def test_host_prefixes_name_the_hosts_but_not_fcnetds_own(host, planes):
    plane = planes()
    host.ip("route", "add", "198.51.100.0/24", "dev", "fcbr1")
    plane.call("network_added", net=NET1, networks=[NET1])

    prefixes = plane.call("host_prefixes")
    assert ["192.0.2.0/24", f"address {ADMIN_ADDRESS} on fcbr0"] in prefixes
    assert ["198.51.100.0/24", "route 198.51.100.0/24 via fcbr1"] in prefixes
    assert not [p for p in prefixes if p[0].startswith("10.213.")], prefixes


def test_close_stops_dnsmasq_and_keeps_table_addresses_and_leases(host, guest, planes, state_dir):
    plane = planes()
    plane.call("network_added", net=NET1, networks=[NET1])
    plane.call("leases_changed", net=NET1, attachments=[attachment(MAC1, "10.213.0.5")])
    assert dhcp(guest, MAC1)
    pid = dnsmasq_pid(state_dir, NET1)
    plane.call("close")

    assert not exists(pid)
    assert "10.213.0.0/24" in ruleset(host)
    assert ("fcbr0", f"{GATEWAY1}/24", 0xFC) in fcnetd_addresses(host)
    with open(os.path.join(state_dir, "nat", f"{NET1['id']}.leases")) as f:
        assert MAC1 in f.read()


def test_a_vm_reaches_the_outside_masqueraded_and_is_counted_across_rebuilds(host, guest, planes):
    """The "internet" is a namespace at 203.0.113.1 with no route back to
    the nat subnet: its echo replies come back only because the host
    masqueraded the VM's address. The host itself answers the VM only at
    its gateway."""
    outside = Netns()
    try:
        host.ip("link", "add", "out0", "type", "veth", "peer", "name", "o0", "netns", outside.name)
        host.ip("addr", "add", "203.0.113.2/24", "dev", "out0")
        host.ip("link", "set", "out0", "up")
        outside.ip("addr", "add", "203.0.113.1/24", "dev", "o0")
        outside.ip("link", "set", "o0", "up")
        plane = planes()
        plane.call("network_added", net=NET1, networks=[NET1])
        guest.ip("addr", "add", "10.213.0.5/24", "dev", "g0")
        guest.ip("route", "add", "default", "via", GATEWAY1)

        def ping(address: str = "203.0.113.1") -> bool:
            return run(["ip", "netns", "exec", guest.name, "busybox", "ping", "-c", "1", "-W", "1", address],
                       check=False).returncode == 0
        assert wait_for(ping, what="an answer from outside")
        assert ping(GATEWAY1)
        assert not ping("192.0.2.1"), "the admin's address on the bridge answers the VM"
        assert not ping("203.0.113.2"), "the host's outside address answers the VM"
        out, back = counter_names(NET1["id"])
        counters = plane.call("snapshot")[NET1["id"]]["counters"]
        assert counters[out][0] >= 1 and counters[back][0] >= 1, counters

        plane.call("network_added", net=NET2, networks=[NET1, NET2])  # the table is rebuilt
        kept = plane.call("snapshot")[NET1["id"]]["counters"]
        assert kept[out][0] >= counters[out][0] and kept[back][0] >= counters[back][0], (counters, kept)
        assert ping()
    finally:
        outside.delete()
