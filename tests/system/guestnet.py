"""A guest and an internet, made of network namespaces, so a system test can
check what a VM on an fcnetd network really gets: a lease from a real DHCP
client, pings, DNS, and the source address the outside sees.

    internet = Internet(ns, dns={"outside.example": Internet.OUTSIDE})  # before the daemon starts
    guest = Guest(ns, tap, mac=vm["Mac"])     # joins the TAP through fcnetd.relay
    lease = guest.dhcp()                      # busybox udhcpc, as a guest's init runs it
    with internet.capture() as cap:
        assert guest.ping(Internet.OUTSIDE)
    assert cap.echo_sources(Internet.OUTSIDE) == {Internet.HOST}

Everything lives in namespaces made here or by the harness: the internet is
a namespace holding documentation addresses, reached through a veth that is
the daemon namespace's default route and goes nowhere else. Every process
started here is ended by its PID in close().
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pytest

from .harness import REPO, Netns, run, wait_for

# udhcpc runs this at each DHCP event ($1). It configures the interface as a
# guest's init would (never /etc/resolv.conf: inside `ip netns exec` that can
# be the host's own file), then records what the server said, one line per
# event, last, so a reader that sees the line also sees the address and route.
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  deconfig)
    ip addr flush dev "$interface" ;;
  bound|renew)
    [ "$1" = bound ] && ip addr flush dev "$interface"
    ip addr replace "$ip/${mask:-32}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface" ;;
esac
echo "$1|$ip|$subnet|$router|$dns|$serverid|$lease" >> "$(dirname "$0")/events"
"""


@dataclass(frozen=True)
class Lease:
    """What udhcpc got: its script's environment at a bound or renew event."""

    event: str
    ip: str
    subnet: str  # the mask, dotted
    router: str
    dns: tuple[str, ...]
    server: str  # the DHCP server identifier
    seconds: int

    @property
    def prefix(self) -> int:
        return ipaddress.IPv4Network(f"0.0.0.0/{self.subnet}").prefixlen

    @staticmethod
    def parse(line: str) -> "Lease":
        event, ip, subnet, router, dns, server, seconds = line.rstrip("\n").split("|")
        return Lease(event, ip, subnet, router.split(" ")[0] if router else "", tuple(dns.split()), server,
                     int(seconds or 0))


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    """Ends a process this module started, by its PID."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _netns_exec(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


class Guest:
    """A VM stand-in: a namespace whose eth0 is joined to `tap` (in the daemon
    namespace `ns`) by fcnetd.relay, which opens the TAP as Firecracker does.
    The relay ends with the thread that started it (PR_SET_PDEATHSIG names
    the thread, not the process): make a Guest in the thread that uses it."""

    def __init__(self, ns: Netns, tap: str, mac: str | None = None, timeout: float = 10):
        self.ns, self.tap, self.ifname = ns, tap, "eth0"
        self.netns = Netns()
        self.dir = tempfile.mkdtemp(prefix="fcnetd-guest-")
        self.relay: subprocess.Popen | None = None
        self.udhcpc: subprocess.Popen | None = None
        try:
            # Router solicitations and DAD would only add noise to captures.
            run(_netns_exec(self.netns.name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"))
            self._start_relay(timeout)
            if mac:
                self.mac = mac
            self.netns.ip("link", "set", self.ifname, "up")
            self.script = os.path.join(self.dir, "udhcpc.sh")
            with open(self.script, "w") as f:
                f.write(UDHCPC_SCRIPT)
            os.chmod(self.script, 0o755)
        except BaseException:
            self.close()
            raise

    def _start_relay(self, timeout: float) -> None:
        self.relay_log = os.path.join(self.dir, "relay.log")
        with open(self.relay_log, "wb") as log:
            self.relay = subprocess.Popen(
                [sys.executable, "-m", "fcnetd.relay", self.tap, "--tap-netns", self.ns.name,
                 "--netns", self.netns.name, "--ifname", self.ifname],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": REPO})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.relay.stdout], [], [], 0.1)[0]:
                if self.relay.stdout.readline() == b"ready\n":
                    return
            if self.relay.poll() is not None:
                break
        raise AssertionError(f"the relay for {self.tap} did not start: {self.relay_output()}")

    def relay_output(self) -> str:
        with open(self.relay_log, errors="replace") as f:
            return f.read()

    @property
    def mac(self) -> str:
        return self.netns.link(self.ifname)["address"]

    @mac.setter
    def mac(self, value: str) -> None:
        self.netns.ip("link", "set", "dev", self.ifname, "address", value)

    def events(self) -> list[Lease]:
        try:
            with open(os.path.join(self.dir, "events")) as f:
                return [Lease.parse(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def _next_lease(self, after: int, timeout: float) -> Lease | None:
        try:
            return wait_for(lambda: next((e for e in self.events()[after:] if e.event in ("bound", "renew")), None),
                            timeout, what=f"a DHCP lease on {self.netns.name}")
        except AssertionError:
            return None

    def dhcp(self, timeout: float = 10) -> Lease | None:
        """Starts udhcpc (DISCOVER every second) and returns its first lease,
        or None (udhcpc stopped) if none came within `timeout`. udhcpc keeps
        running on success, so renew() can follow."""
        if self.udhcpc is not None:
            raise AssertionError("udhcpc is already running in this guest")
        seen = len(self.events())
        self.udhcpc = subprocess.Popen(
            _netns_exec(self.netns.name, "busybox", "udhcpc", "-f", "-i", self.ifname, "-s", self.script,
                        "-t", "1000", "-T", "1", "-A", "1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        lease = self._next_lease(seen, timeout)
        if lease is None:
            _stop(self.udhcpc)
            self.udhcpc = None
        return lease

    def renew(self, timeout: float = 10) -> Lease | None:
        """Asks udhcpc to renew now (SIGUSR1: a REQUEST unicast to the server
        that gave the lease); the lease it gets, or None."""
        if self.udhcpc is None or self.udhcpc.poll() is not None:
            raise AssertionError("udhcpc is not running: call dhcp() first")
        seen = len(self.events())
        self.udhcpc.send_signal(signal.SIGUSR1)
        return self._next_lease(seen, timeout)

    def addresses(self) -> list[str]:
        """The IPv4 addresses on eth0, as A.B.C.D/N."""
        info = json.loads(self.netns.ip("-j", "-4", "addr", "show", "dev", self.ifname).stdout)
        return [f"{a['local']}/{a['prefixlen']}" for i in info for a in i.get("addr_info", [])]

    def default_route(self) -> str | None:
        routes = json.loads(self.netns.ip("-j", "-4", "route", "show", "default").stdout)
        return routes[0].get("gateway") if routes else None

    def ping(self, addr: str, timeout: float = 3, source: str | None = None) -> bool:
        """True once one echo request is answered; False after `timeout`.
        `source`: an address the guest holds, sent as the echo's source."""
        deadline = time.monotonic() + timeout
        options = ("-I", source) if source else ()
        while True:
            res = subprocess.run(_netns_exec(self.netns.name, "busybox", "ping", "-c", "1", "-W", "1", *options,
                                             addr), capture_output=True, timeout=10)
            if res.returncode == 0:
                return True
            if time.monotonic() >= deadline:
                return False

    def resolve(self, name: str, server: str | None = None) -> list[str]:
        """The IPv4 addresses `name` resolves to, asked of `server` (default:
        the first DNS server of the last lease), as a guest's resolver would."""
        if server is None:
            leases = [e for e in self.events() if e.event in ("bound", "renew")]
            if not leases or not leases[-1].dns:
                raise AssertionError("no DNS server: the guest has no lease naming one")
            server = leases[-1].dns[0]
        res = subprocess.run(_netns_exec(self.netns.name, "busybox", "nslookup", "-type=a", name, server),
                             capture_output=True, text=True, timeout=30)
        answer = res.stdout.split("Name:", 1)[1] if "Name:" in res.stdout else ""
        return re.findall(r"^Address:\s*(\d+\.\d+\.\d+\.\d+)\s*$", answer, re.M)

    def connects(self, addr: str, port: int, timeout: float = 2) -> bool:
        """Whether a TCP connection to addr:port is accepted within `timeout`."""
        code = ("import socket, sys\n"
                "try:\n"
                "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()\n"
                "except OSError:\n"
                "    sys.exit(1)\n")
        res = subprocess.run(_netns_exec(self.netns.name, sys.executable, "-c", code, addr, str(port), str(timeout)),
                             capture_output=True, timeout=timeout + 30)
        return res.returncode == 0

    def close(self) -> None:
        _stop(self.udhcpc)
        _stop(self.relay)
        if self.relay is not None and self.relay.stdout is not None:
            self.relay.stdout.close()
        self.netns.delete()
        shutil.rmtree(self.dir, ignore_errors=True)


class Capture:
    """tcpdump on the internet's side of the uplink: what the outside sees."""

    def __init__(self, netns: str, ifname: str, workdir: str, timeout: float = 10):
        self.out = os.path.join(workdir, "capture.txt")
        err = os.path.join(workdir, "capture.err")
        with open(self.out, "wb") as out, open(err, "wb") as errf:
            self.proc = subprocess.Popen(_netns_exec(netns, "tcpdump", "-i", ifname, "-n", "-l", "-p",
                                                     "--immediate-mode", "icmp"),
                                         stdout=out, stderr=errf, stdin=subprocess.DEVNULL)
        try:
            wait_for(lambda: "listening on" in open(err).read() or self.proc.poll() is not None, timeout,
                     what="tcpdump to start")
            if self.proc.poll() is not None:
                raise AssertionError(f"tcpdump exited: {open(err).read()}")
        except BaseException:
            self.stop()
            raise

    def lines(self) -> list[str]:
        with open(self.out, errors="replace") as f:
            return f.read().splitlines()

    def echo_sources(self, dst: str, wait: float = 2) -> set[str]:
        """The sources of the echo requests to `dst` seen so far, waiting up
        to `wait` seconds for the first (tcpdump prints a moment after the
        frame arrives)."""
        def seen() -> set[str]:
            found = (re.search(r"IP (\S+) > (\S+): ICMP echo request", line) for line in self.lines())
            return {m.group(1) for m in found if m and m.group(2) == dst}
        try:
            return wait_for(seen, wait, what=f"an echo request to {dst}")
        except AssertionError:
            return set()

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Internet:
    """"Somewhere outside" for the daemon namespace `ns`: a namespace joined
    by a veth that is `ns`'s default route. It holds GATEWAY on the veth and
    OUTSIDE (a documentation address) on loopback, and has no route back into
    any subnet behind the host: only masqueraded traffic gets answers.

    With `dns`, a dnsmasq here answers those names (name -> IPv4 address)
    and `ns`'s /etc/resolv.conf names it. `ip netns exec` bind-mounts that
    file when it starts a process, so create the Internet before the daemon."""

    HOST = "203.0.113.2"  # the daemon namespace's outside address
    GATEWAY = "203.0.113.1"
    OUTSIDE = "198.51.100.1"
    UPLINK = "uplink0"  # the daemon namespace's end of the veth
    IFNAME = "wan0"  # the internet's end

    def __init__(self, ns: Netns, dns: dict[str, str] | None = None):
        self.ns = ns
        self.netns = Netns()
        self.dir = tempfile.mkdtemp(prefix="fcnetd-internet-")
        self.dnsmasq: subprocess.Popen | None = None
        self.resolv_dir = os.path.join("/etc/netns", ns.name)
        try:
            self.netns.ip("link", "add", self.IFNAME, "type", "veth", "peer", "name", self.UPLINK, "netns", ns.name)
            self.netns.ip("addr", "add", f"{self.GATEWAY}/24", "dev", self.IFNAME)
            self.netns.ip("addr", "add", f"{self.OUTSIDE}/32", "dev", "lo")
            self.netns.ip("link", "set", self.IFNAME, "up")
            ns.ip("addr", "add", f"{self.HOST}/24", "dev", self.UPLINK)
            ns.ip("link", "set", self.UPLINK, "up")
            ns.ip("route", "add", "default", "via", self.GATEWAY)
            if dns:
                self._start_dns(dns)
        except BaseException:
            self.close()
            raise

    def _start_dns(self, names: dict[str, str]) -> None:
        os.makedirs(self.resolv_dir, exist_ok=True)
        with open(os.path.join(self.resolv_dir, "resolv.conf"), "w") as f:
            f.write(f"nameserver {self.GATEWAY}\n")
        self.dnsmasq = dnsmasq(self.netns.name, os.path.join(self.dir, "dnsmasq.log"), 53,
                               "--no-resolv", f"--listen-address={self.GATEWAY}",
                               *(f"--host-record={name},{addr}" for name, addr in names.items()))

    def capture(self) -> Capture:
        """Starts capturing ICMP arriving from the host; use as a context manager."""
        return Capture(self.netns.name, self.IFNAME, self.dir)

    def close(self) -> None:
        _stop(self.dnsmasq)
        shutil.rmtree(self.resolv_dir, ignore_errors=True)
        try:
            os.rmdir("/etc/netns")  # only when no other namespace keeps files there
        except OSError:
            pass
        self.netns.delete()  # takes the veth, and with it the daemon namespace's default route
        shutil.rmtree(self.dir, ignore_errors=True)


class DhcpServer:
    """A plain dnsmasq started by hand on an interface of the daemon
    namespace (not fcnetd's): the yardstick the test bed proves itself
    against. It answers DHCP in `pool` (first, last) with itself as router
    and DNS, static `hosts` (mac -> ip) first, and forwards DNS to what
    /etc/resolv.conf of its namespace names."""

    def __init__(self, ns: Netns, ifname: str, address: str, pool: tuple[str, str],
                 hosts: dict[str, str] | None = None):
        self.ns, self.ifname, self.address = ns, ifname, address
        self.dir = tempfile.mkdtemp(prefix="fcnetd-dhcp-")
        iface = ipaddress.IPv4Interface(address)
        ns.ip("addr", "add", address, "dev", ifname)
        self.proc: subprocess.Popen | None = None
        self.proc = dnsmasq(ns.name, os.path.join(self.dir, "dnsmasq.log"), 67, "--log-dhcp",
                            f"--interface={ifname}", f"--dhcp-leasefile={os.path.join(self.dir, 'leases')}",
                            f"--dhcp-range={pool[0]},{pool[1]},{iface.netmask},1h",
                            *(f"--dhcp-host={mac},{ip}" for mac, ip in (hosts or {}).items()))

    def close(self) -> None:
        _stop(self.proc)
        self.ns.ip("addr", "del", self.address, "dev", self.ifname, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "DhcpServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def dnsmasq(netns: str, log: str, port: int, *args: str) -> subprocess.Popen:
    """A dnsmasq of the test bed's own (no config file, no /etc/hosts, bound
    to the interfaces it is given) in `netns`, logging to `log`; returns once
    it listens on UDP `port`."""
    with open(log, "wb") as logf:
        proc = subprocess.Popen(_netns_exec(netns, "dnsmasq", "--keep-in-foreground", "--log-facility=-",
                                            "--conf-file=/dev/null", "--no-hosts", "--bind-interfaces",
                                            "--pid-file=", *args),
                                stdout=subprocess.DEVNULL, stderr=logf, stdin=subprocess.DEVNULL)

    def up() -> bool:
        listening = run(_netns_exec(netns, "ss", "-Hlnu", f"sport = :{port}")).stdout.strip()
        return proc.poll() is not None or bool(listening)
    wait_for(up, 10, what=f"dnsmasq in {netns}")
    if proc.poll() is not None:
        with open(log, errors="replace") as f:
            raise AssertionError(f"dnsmasq in {netns} exited: {f.read()}")
    return proc


def dnsmasq_pids(state_dir: str, network_id: str = "") -> set[int]:
    """The dnsmasq processes whose command line names a file of fcnetd's
    under `state_dir`'s nat/ directory (of `network_id` when given)."""
    mark = os.path.join(state_dir, "nat", network_id)
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == "dnsmasq" and any(mark in arg for arg in argv[1:]):
            found.add(int(pid))
    return found


# Fixtures for the test modules that import them. `internet` must come
# before the daemon (see Internet), so those modules' `daemon` asks for it.
OUTSIDE_NAME = "outside.example"


@pytest.fixture
def internet(ns):
    net = Internet(ns, dns={OUTSIDE_NAME: Internet.OUTSIDE})
    yield net
    net.close()


@pytest.fixture
def guests(ns):
    """guests(tap, mac=None) -> Guest joined to a TAP of the daemon's namespace; all closed after the test."""
    made: list[Guest] = []

    def make(tap: str, mac: str | None = None) -> Guest:
        made.append(Guest(ns, tap, mac))
        return made[-1]
    yield make
    for guest in made:
        guest.close()
