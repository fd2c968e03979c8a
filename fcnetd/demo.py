"""fcnetd-demo: the whole system in a sandbox network namespace, with a
private bus, so it needs no setup and leaves the host's interfaces alone."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .testbus import PrivateBus

NETNS = "fcnetd-demo"
# The NAT part: a namespace joined to a VM's TAP by fcnetd.relay gets its
# address from a nat network and reaches an "outside" namespace.
VM_NETNS = "fcnetd-demo-vm"
OUT_NETNS = "fcnetd-demo-out"
OUTSIDE = "198.51.100.1"  # documentation addresses, only inside the demo's namespaces
UPLINK, UPLINK_HOST, UPLINK_PEER = "uplink0", "203.0.113.2", "203.0.113.1"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def _wait_for_name(address: str, proc: subprocess.Popen, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fcnetd-demo: {what} exited with {proc.returncode}")
        res = _run("busctl", f"--address={address}", "status", "org.fcnetd.Network1", check=False)
        if res.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"fcnetd-demo: {what} did not come up in {timeout}s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fcnetd-demo", description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:8080", help="web UI address (default 127.0.0.1:8080)")
    p.add_argument("--no-webui", action="store_true", help="run only the bus and the daemon")
    p.add_argument("--seed", action=argparse.BooleanOptionalAction, default=True,
                   help="create a few example networks and VMs (default on)")
    p.add_argument("--nat", action=argparse.BooleanOptionalAction, default=True,
                   help="a nat network whose VM (a namespace) gets an address by DHCP and reaches "
                        f"an outside address {OUTSIDE} (default on)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("fcnetd-demo: needs root (it creates a network namespace); run ./demo as root", file=sys.stderr)
        return 1

    work = tempfile.mkdtemp(prefix="fcnetd-demo-")
    os.chmod(work, 0o755)
    procs: list[subprocess.Popen] = []
    for ns in (NETNS, VM_NETNS, OUT_NETNS):
        _run("ip", "netns", "del", ns, check=False)
    _run("ip", "netns", "add", NETNS)
    _run("ip", "-n", NETNS, "link", "set", "lo", "up")
    bus = PrivateBus().start()
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        config = os.path.join(work, "fcnetd.toml")
        with open(config, "w") as f:
            f.write('[daemon]\nmetrics = "127.0.0.1:9617"\n\n'
                    '[bridges.fcbr0]\ncreate = true\n\n[bridges.fcbr1]\ncreate = true\n')
            if args.nat:
                f.write('\n[bridges.fcbr2]\ncreate = true\n')
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, sys.executable, "-m", "fcnetd.daemon", "--bus", bus.address,
             "--config", config, "--state-dir", os.path.join(work, "state")],
            stdin=subprocess.DEVNULL)
        procs.append(daemon)
        _wait_for_name(bus.address, daemon, "fcnetd")
        ctl = [sys.executable, "-m", "fcnetd.cli", "--bus", bus.address]
        if args.seed:
            for cmd in (["create", "fcbr0", "--description", "Shared services (DNS, NTP)"],
                        ["attach", "vm-web-1", "fcbr0", "--vm-name", "web-server-dev"],
                        ["attach", "vm-db-1", "fcbr1", "--vm-name", "db-primary"],
                        ["tap-create", "vm-web-1"]):
                subprocess.run(ctl + cmd, check=True, stdout=subprocess.DEVNULL)
        nat_lines = _nat_demo(ctl, work, procs) if args.nat else []
        url = None
        if not args.no_webui:
            url = _start_webui(args, bus, work, procs)
        print()
        print("fcnetd demo is running.")
        print(f"  D-Bus:    {bus.address}")
        print(f"  netns:    {NETNS}   (ip -n {NETNS} link)")
        print(f"  CLI:      {os.path.join(os.path.dirname(sys.executable), 'fcnetctl')} --bus {bus.address} list")
        print(f"  busctl:   busctl --address={bus.address} tree org.fcnetd.Network1")
        print(f"  metrics:  ip netns exec {NETNS} curl -s http://127.0.0.1:9617/metrics")
        if url:
            print(f"  web UI:   {url}")
        for line in nat_lines:
            print(line)
        print("Ctrl-C stops it and removes its namespaces.")
        sys.stdout.flush()
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.2)
        if not stop:
            dead = next(p for p in procs if p.poll() is not None)
            print(f"fcnetd-demo: {dead.args[-1] if dead is not procs[0] else 'fcnetd'} exited with "
                  f"{dead.returncode}; stopping", file=sys.stderr)
            return 1
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        bus.stop()
        for ns in (VM_NETNS, OUT_NETNS, NETNS):
            _run("ip", "netns", "del", ns, check=False)
        shutil.rmtree(work, ignore_errors=True)


# The demo guest's udhcpc script: configure eth0 and the default route as a
# guest's init would (never /etc/resolv.conf: in `ip netns exec` that can be
# the host's own file).
_UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr replace "$ip/${mask:-32}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    echo "$ip" > "$(dirname "$0")/leased" ;;
esac
"""


def _nat_demo(ctl: list[str], work: str, procs: list[subprocess.Popen]) -> list[str]:
    """A nat network on fcbr2 and its VM, played by the namespace VM_NETNS
    joined to the VM's TAP by fcnetd.relay: it takes its address by DHCP from
    fcnetd and pings OUTSIDE, in the namespace OUT_NETNS, which is the demo
    namespace's default route and goes nowhere else. Returns the lines to
    print; a failure is reported there and the rest of the demo runs on."""
    for cmd in (("ip", "netns", "add", OUT_NETNS), ("ip", "netns", "add", VM_NETNS),
                ("ip", "-n", OUT_NETNS, "link", "add", "wan0", "type", "veth", "peer", "name", UPLINK, "netns", NETNS),
                ("ip", "-n", OUT_NETNS, "addr", "add", f"{UPLINK_PEER}/24", "dev", "wan0"),
                ("ip", "-n", OUT_NETNS, "addr", "add", f"{OUTSIDE}/32", "dev", "lo"),
                ("ip", "-n", OUT_NETNS, "link", "set", "wan0", "up"),
                ("ip", "-n", NETNS, "addr", "add", f"{UPLINK_HOST}/24", "dev", UPLINK),
                ("ip", "-n", NETNS, "link", "set", UPLINK, "up"),
                ("ip", "-n", NETNS, "route", "add", "default", "via", UPLINK_PEER)):
        _run(*cmd)
    made = subprocess.run(ctl + ["create", "fcbr2", "--mode", "nat", "--description", "Internet only (NAT)"],
                          capture_output=True, text=True)
    if made.returncode != 0:
        return [f"  nat:      not shown: {made.stderr.strip().splitlines()[-1]}"]
    for cmd in (["attach", "vm-nat-1", "fcbr2", "--vm-name", "nat-guest"], ["tap-create", "vm-nat-1"]):
        subprocess.run(ctl + cmd, check=True, stdout=subprocess.DEVNULL)
    net = json.loads(subprocess.run(ctl + ["--json", "show", "fcbr2"], check=True, capture_output=True,
                                    text=True).stdout)
    vm = net["Vms"][0]
    relay = subprocess.Popen([sys.executable, "-m", "fcnetd.relay", "--tap-netns", NETNS, "--netns", VM_NETNS,
                              vm["Tap"]], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    procs.append(relay)
    if relay.stdout.readline() != b"ready\n":
        return [f"  nat:      the relay for {vm['Tap']} did not start"]
    _run("ip", "-n", VM_NETNS, "link", "set", "eth0", "address", vm["Mac"], "up")
    script = os.path.join(work, "udhcpc.sh")
    with open(script, "w") as f:
        f.write(_UDHCPC_SCRIPT)
    os.chmod(script, 0o755)
    guest = ("ip", "netns", "exec", VM_NETNS, "busybox")
    got = _run(*guest, "udhcpc", "-q", "-n", "-t", "10", "-T", "1", "-i", "eth0", "-s", script, check=False)
    head = f"  nat:      fcbr2 {net['Subnet']} via {net['Gateway']}: VM vm-nat-1 ({vm['Mac']}), namespace {VM_NETNS}"
    if got.returncode != 0:
        return [head, f"            no DHCP lease in 10 s (fcnetd reported {vm['Ip']})"]
    with open(os.path.join(work, "leased")) as f:
        leased = f.read().strip()
    reached = _run(*guest, "ping", "-c", "3", "-W", "2", OUTSIDE, check=False).returncode == 0
    return [head,
            f"            leased {leased} by DHCP (fcnetd reported {vm['Ip']}); "
            f"{OUTSIDE} (outside) {'reached through NAT' if reached else 'NOT reached'}",
            f"            try: ip netns exec {VM_NETNS} busybox ping {OUTSIDE}"]


def _start_webui(args, bus, work, procs) -> str | None:
    """Starts the web UI as an unprivileged user in group fcnet."""
    import importlib.util
    if importlib.util.find_spec("webui") is None:
        print("  (the web UI is not part of this build yet)")
        return None
    users = os.path.join(work, "webui-users.json")
    password = secrets.token_urlsafe(9)
    webui = [os.path.join(os.path.dirname(sys.executable), "fcnetd-webui")]
    subprocess.run(webui + ["--users", users, "user", "add", "admin", "--role", "admin",
                            "--password-stdin"], input=password + "\n", text=True, check=True,
                   stdout=subprocess.DEVNULL)
    os.chown(users, 65534, -1)
    import grp
    gid = grp.getgrnam("fcnet").gr_gid
    proc = subprocess.Popen(["setpriv", "--reuid=65534", f"--regid={gid}", "--clear-groups", *webui,
                             "--bus", bus.address, "--listen", args.listen, "--users", users],
                            stdin=subprocess.DEVNULL)
    procs.append(proc)
    print(f"  sign in:  admin / {password}")
    return f"http://{args.listen}/"


if __name__ == "__main__":
    sys.exit(main())
