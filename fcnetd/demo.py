"""fcnetd-demo: the whole system in a sandbox network namespace, with a
private bus, so it needs no setup and leaves the host's interfaces alone."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from .testbus import PrivateBus

INSTANCE = "fcnetd-demo"  # its namespace; the nat part adds INSTANCE-vm and INSTANCE-out
# The NAT part: a namespace joined to a VM's TAP by fcnetd.relay gets its
# address from a nat network and reaches an "outside" namespace.
OUTSIDE = "198.51.100.1"  # documentation addresses, only inside the demo's namespaces
UPLINK, UPLINK_HOST, UPLINK_PEER = "uplink0", "203.0.113.2", "203.0.113.1"
# What a run made, for whoever cleans up after it (itself, its guard, or
# the next run): RUNS/<instance>.json, and in the environment of every
# process it starts (inherited by theirs), MARK=<instance>:<run id>.
RUNS = "/run/fcnetd-demo"
MARK = "FCNETD_DEMO_RUN"
STOP_SECONDS = 10


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Run:
    """One run of the demo under an instance name: its namespaces, work
    directory and mark, recorded in a file, so that what it made is found
    again even after it was killed, and nothing else is touched."""

    def __init__(self, instance: str):
        self.instance = instance
        self.netns, self.vm_netns, self.out_netns = instance, f"{instance}-vm", f"{instance}-out"
        self.record = os.path.join(RUNS, f"{instance}.json")

    def namespaces(self) -> tuple[str, ...]:
        return self.vm_netns, self.out_netns, self.netns

    def previous(self) -> dict | None:
        try:
            with open(self.record) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def begin(self, listen: str) -> dict:
        work = tempfile.mkdtemp(prefix=f"{self.instance}-")
        os.chmod(work, 0o755)
        run = {"pid": os.getpid(), "started": _start_time(os.getpid()), "work": work, "listen": listen,
               "mark": f"{self.instance}:{secrets.token_hex(8)}"}
        os.makedirs(RUNS, mode=0o755, exist_ok=True)
        tmp = self.record + ".tmp"
        with open(tmp, "w") as f:
            json.dump(run, f)
        os.replace(tmp, self.record)
        os.environ[MARK] = run["mark"]  # every process started from here on carries it
        return run

    def clean(self, run: dict | None) -> list[int]:
        """Ends what `run` started (by its mark) and whatever is in the
        instance's namespaces, removes the namespaces, the run's work
        directory and its record. Returns the PIDs it had to end."""
        mark = run and run.get("mark")
        pids = set(_marked(mark)) if mark else set()
        for ns in self.namespaces():
            pids.update(int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split())
        pids.discard(os.getpid())
        _end(pids)
        for ns in self.namespaces():
            _run("ip", "netns", "del", ns, check=False)
        work = (run or {}).get("work", "")
        if os.path.basename(work).startswith(f"{self.instance}-") and os.path.dirname(work) == tempfile.gettempdir():
            shutil.rmtree(work, ignore_errors=True)
        if run is not None and self.previous() == run:
            os.unlink(self.record)
        return sorted(pids)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(run: dict) -> bool:
    """Whether the demo process that made `run` still runs (not a reused PID)."""
    return _start_time(run.get("pid", 0)) == run.get("started")


def _marked(mark: str) -> list[int]:
    want = f"{MARK}={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if want in f.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _end(pids: set[int]) -> None:
    """SIGTERM, then SIGKILL for what is still there after STOP_SECONDS
    (fcnetd stops its dnsmasq on SIGTERM)."""
    started = {pid: _start_time(pid) for pid in pids}

    def left() -> list[int]:
        return [pid for pid, t in started.items() if t is not None and _start_time(pid) == t
                and not _zombie(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_SECONDS
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _guard(instance: str, fd: int, mark: str) -> int:
    """The guard: a process of its own session (a closed terminal's SIGHUP
    or a Ctrl-C does not reach it) holding the read end of a pipe only the
    demo can write. The pipe ends when the demo does, however it ends; if
    its record is still there, the demo did not clean up: the guard does.
    (PR_SET_PDEATHSIG would not do: a change of uid, as setpriv makes for
    the web UI, clears it, and fcnetd's dnsmasq is not the demo's child.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while os.read(fd, 1):
        pass
    run = Run(instance)
    left = run.previous()
    if left is None or left.get("mark") != mark:
        return 0
    ended = run.clean(left)
    try:
        print(f"fcnetd-demo: the demo (pid {left['pid']}) ended without stopping; its guard ended "
              f"{len(ended)} processes and removed its namespaces", file=sys.stderr)
    except OSError:  # the terminal is gone
        pass
    return 0


def _start_guard(run: Run, mark: str) -> None:
    read_end, _write_end = os.pipe()  # not inherited by anything the demo starts (O_CLOEXEC)
    subprocess.Popen([sys.executable, "-m", "fcnetd.demo", "--instance", run.instance, "--guard",
                      f"{read_end}:{mark}"], pass_fds=(read_end,), start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     env={k: v for k, v in os.environ.items() if k != MARK})  # the demo's clean-up spares it
    os.close(read_end)
    # _write_end stays open, unwritten, until this process ends


def _port_taken(listen: str) -> str | None:
    """Who holds the web UI's address, if anyone: a message with the way out."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web UI binds
        try:
            s.bind((host, int(port)))
            return None
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                return f"fcnetd-demo: --listen {listen}: {e.strerror}"
    holders = _run("ss", "-Hltnp", f"sport = :{port}", check=False).stdout
    who = ", ".join(f"{name} (pid {pid})" for name, pid in
                    dict.fromkeys(re.findall(r'\("([^"]+)",pid=(\d+)', holders))) or "another program"
    return (f"fcnetd-demo: {listen} is in use by {who}; give the web UI another address with "
            f"--listen {host}:PORT, or stop that program")


def _listen_address(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value[:80]!r} must be HOST:PORT")
    return value


def _instance_name(value: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,23}", value):
        raise argparse.ArgumentTypeError(f"{value[:80]!r} must be 1-24 of a-z, 0-9 and '-', starting with a letter")
    return value


def _how_it_ended(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fcnetd-demo", description=__doc__)
    p.add_argument("--listen", default="127.0.0.1:8080", type=_listen_address,
                   help="web UI address (default 127.0.0.1:8080)")
    p.add_argument("--no-webui", action="store_true", help="run only the bus and the daemon")
    p.add_argument("--seed", action=argparse.BooleanOptionalAction, default=True,
                   help="create a few example networks and VMs (default on)")
    p.add_argument("--nat", action=argparse.BooleanOptionalAction, default=True,
                   help="a nat network whose VM (a namespace) gets an address by DHCP and reaches "
                        f"an outside address {OUTSIDE} (default on)")
    p.add_argument("--instance", default=INSTANCE, type=_instance_name,
                   help=f"name of this demo and its namespaces (default {INSTANCE}), for running more than one")
    p.add_argument("--guard", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.guard:
        fd, mark = args.guard.split(":", 1)
        return _guard(args.instance, int(fd), mark)
    if os.geteuid() != 0:
        print("fcnetd-demo: needs root (it creates a network namespace); run ./demo as root", file=sys.stderr)
        return 1

    run = Run(args.instance)
    previous = run.previous()
    if previous is not None and _alive(previous):
        print(f"fcnetd-demo: this demo is already running as pid {previous['pid']} (web UI on "
              f"{previous['listen']}); stop it with Ctrl-C in its terminal, or start another with "
              f"--instance NAME --listen HOST:PORT", file=sys.stderr)
        return 1
    ended = run.clean(previous)  # what a killed run left: its processes, namespaces, files
    if previous is not None or ended:
        print(f"fcnetd-demo: cleaned up after an earlier run that did not stop"
              f"{f' (ended {len(ended)} processes)' if ended else ''}", file=sys.stderr)
    if not args.no_webui and (taken := _port_taken(args.listen)):
        print(taken, file=sys.stderr)
        return 1

    this = run.begin(args.listen)
    _start_guard(run, this["mark"])
    work = this["work"]
    procs: list[tuple[str, subprocess.Popen]] = []
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal closed
        signal.signal(sig, on_signal)
    try:
        _run("ip", "netns", "add", run.netns)
        _run("ip", "-n", run.netns, "link", "set", "lo", "up")
        os.mkdir(os.path.join(work, "bus"))
        bus = PrivateBus(os.path.join(work, "bus")).start()
        procs.append((f"the private bus (dbus-daemon, pid {bus.proc.pid})", bus.proc))
        config = os.path.join(work, "fcnetd.toml")
        with open(config, "w") as f:
            f.write('[daemon]\nmetrics = "127.0.0.1:9617"\n\n'
                    '[bridges.fcbr0]\ncreate = true\n\n[bridges.fcbr1]\ncreate = true\n')
            if args.nat:
                f.write('\n[bridges.fcbr2]\ncreate = true\n')
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", run.netns, sys.executable, "-m", "fcnetd.daemon", "--bus", bus.address,
             "--config", config, "--state-dir", os.path.join(work, "state")],
            stdin=subprocess.DEVNULL)
        procs.append((f"fcnetd (pid {daemon.pid})", daemon))
        _wait_for_name(bus.address, procs)
        ctl = [sys.executable, "-m", "fcnetd.cli", "--bus", bus.address]
        if args.seed:
            for cmd in (["create", "fcbr0", "--description", "Shared services (DNS, NTP)"],
                        ["attach", "vm-web-1", "fcbr0", "--vm-name", "web-server-dev"],
                        ["attach", "vm-db-1", "fcbr1", "--vm-name", "db-primary"],
                        ["tap-create", "vm-web-1"]):
                subprocess.run(ctl + cmd, check=True, stdout=subprocess.DEVNULL)
        nat_lines = _nat_demo(ctl, run, work, procs) if args.nat else []
        url = None
        if not args.no_webui:
            url = _start_webui(args, bus, work, procs)
        print()
        print("fcnetd demo is running.")
        print(f"  D-Bus:    {bus.address}")
        print(f"  netns:    {run.netns}   (ip -n {run.netns} link)")
        print(f"  CLI:      {os.path.join(os.path.dirname(sys.executable), 'fcnetctl')} --bus {bus.address} list")
        print(f"  busctl:   busctl --address={bus.address} tree org.fcnetd.Network1")
        print(f"  metrics:  ip netns exec {run.netns} curl -s http://127.0.0.1:9617/metrics")
        if url:
            print(f"  web UI:   {url}")
        for line in nat_lines:
            print(line)
        print("Ctrl-C stops it and removes its namespaces.")
        sys.stdout.flush()
        while not stop and not _exited(procs):
            time.sleep(0.2)
        if not stop:
            what, dead = _exited(procs)
            raise SystemExit(f"fcnetd-demo: {what} {_how_it_ended(dead.returncode)}; stopping")
        return 0
    finally:
        for _, proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        run.clean(this)  # anything left, the namespaces, the work directory, the record


def _exited(procs: list[tuple[str, subprocess.Popen]]) -> tuple[str, subprocess.Popen] | None:
    return next(((what, p) for what, p in procs if p.poll() is not None), None)


def _wait_for_name(address: str, procs: list[tuple[str, subprocess.Popen]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited := _exited(procs):
            what, dead = exited
            raise SystemExit(f"fcnetd-demo: {what} {_how_it_ended(dead.returncode)} at start")
        res = _run("busctl", f"--address={address}", "status", "org.fcnetd.Network1", check=False)
        if res.returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"fcnetd-demo: fcnetd did not come up in {timeout}s")


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


def _nat_demo(ctl: list[str], run: Run, work: str, procs: list[tuple[str, subprocess.Popen]]) -> list[str]:
    """A nat network on fcbr2 and its VM, played by the namespace run.vm_netns
    joined to the VM's TAP by fcnetd.relay: it takes its address by DHCP from
    fcnetd and pings OUTSIDE, in the namespace run.out_netns, which is the demo
    namespace's default route and goes nowhere else. Returns the lines to
    print; a failure is reported there and the rest of the demo runs on."""
    netns, vm_netns, out_netns = run.netns, run.vm_netns, run.out_netns
    for cmd in (("ip", "netns", "add", out_netns), ("ip", "netns", "add", vm_netns),
                ("ip", "-n", out_netns, "link", "add", "wan0", "type", "veth", "peer", "name", UPLINK, "netns", netns),
                ("ip", "-n", out_netns, "addr", "add", f"{UPLINK_PEER}/24", "dev", "wan0"),
                ("ip", "-n", out_netns, "addr", "add", f"{OUTSIDE}/32", "dev", "lo"),
                ("ip", "-n", out_netns, "link", "set", "wan0", "up"),
                ("ip", "-n", netns, "addr", "add", f"{UPLINK_HOST}/24", "dev", UPLINK),
                ("ip", "-n", netns, "link", "set", UPLINK, "up"),
                ("ip", "-n", netns, "route", "add", "default", "via", UPLINK_PEER)):
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
    relay = subprocess.Popen([sys.executable, "-m", "fcnetd.relay", "--tap-netns", netns, "--netns", vm_netns,
                              vm["Tap"]], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    procs.append((f"the relay (fcnetd.relay, pid {relay.pid})", relay))
    if relay.stdout.readline() != b"ready\n":
        return [f"  nat:      the relay for {vm['Tap']} did not start"]
    _run("ip", "-n", vm_netns, "link", "set", "eth0", "address", vm["Mac"], "up")
    script = os.path.join(work, "udhcpc.sh")
    with open(script, "w") as f:
        f.write(_UDHCPC_SCRIPT)
    os.chmod(script, 0o755)
    guest = ("ip", "netns", "exec", vm_netns, "busybox")
    got = _run(*guest, "udhcpc", "-q", "-n", "-t", "10", "-T", "1", "-i", "eth0", "-s", script, check=False)
    head = f"  nat:      fcbr2 {net['Subnet']} via {net['Gateway']}: VM vm-nat-1 ({vm['Mac']}), namespace {vm_netns}"
    if got.returncode != 0:
        return [head, f"            no DHCP lease in 10 s (fcnetd reported {vm['Ip']})"]
    with open(os.path.join(work, "leased")) as f:
        leased = f.read().strip()
    reached = _run(*guest, "ping", "-c", "3", "-W", "2", OUTSIDE, check=False).returncode == 0
    return [head,
            f"            leased {leased} by DHCP (fcnetd reported {vm['Ip']}); "
            f"{OUTSIDE} (outside) {'reached through NAT' if reached else 'NOT reached'}",
            f"            try: ip netns exec {vm_netns} busybox ping {OUTSIDE}"]


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
    procs.append((f"the web UI (fcnetd-webui, pid {proc.pid})", proc))
    url = f"http://{args.listen}/"
    deadline = time.monotonic() + 20
    while True:  # the address printed answers
        if exited := _exited(procs):
            what, dead = exited
            raise SystemExit(f"fcnetd-demo: {what} {_how_it_ended(dead.returncode)} at start")
        try:
            urllib.request.urlopen(url + "login", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"fcnetd-demo: the web UI did not answer on {url} in 20 s")
            time.sleep(0.1)
    print(f"  sign in:  admin / {password}")
    return url


if __name__ == "__main__":
    sys.exit(main())
