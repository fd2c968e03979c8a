"""Real parts for the system tier: a network namespace, a dbus-daemon with the
project's policy, the fcnetd process, and clients (busctl, fcnetctl, and a
small dbus-fast client for asserting error names)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

from fcnetd.bus import DBusError, Variant, call, connect, unwrap
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH
from fcnetd.testbus import PrivateBus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_counter = itertools.count()


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} failed ({res.returncode}): {res.stderr or res.stdout}")
    return res


CARRIER_FLAGS = {"LOWER_UP", "NO-CARRIER", "DORMANT", "M-DOWN"}


class Netns:
    def __init__(self):
        self.name = f"fcnt{os.getpid()}x{next(_counter)}"
        run(["ip", "netns", "add", self.name])
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.name, *args], check=check)

    def link(self, name: str) -> dict | None:
        res = self.ip("-d", "-j", "link", "show", "dev", name, check=False)
        return json.loads(res.stdout)[0] if res.returncode == 0 else None

    def links(self) -> list[dict]:
        return json.loads(self.ip("-d", "-j", "link", "show").stdout)

    def configured(self) -> dict[str, tuple]:
        """Each link's master, alias and the flags someone sets. Carrier
        flags are left out: the kernel's linkwatch changes them up to a
        second after their cause (a TAP's fd closing, a bridge losing its
        last running port), so they differ between two reads of an
        untouched link."""
        return {l["ifname"]: (l.get("master"), l.get("ifalias"), sorted(set(l["flags"]) - CARRIER_FLAGS))
                for l in self.links()}

    def taps(self) -> list[dict]:
        return [l for l in self.links() if l.get("linkinfo", {}).get("info_kind") == "tun"]

    def python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Runs Python inside the namespace (e.g. to open a TAP as a VMM would)."""
        res = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code, *args],
                             capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONPATH": REPO})
        if res.returncode != 0:
            raise AssertionError(f"python in {self.name} failed: {res.stderr}")
        return res.stdout

    def http_get(self, url: str) -> str:
        return self.python("import sys, urllib.request; "
                           "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())", url)

    def sysfs(self, ifname: str, attr: str) -> str:
        return run(["ip", "netns", "exec", self.name, "cat", f"/sys/class/net/{ifname}/{attr}"]).stdout.strip()

    def delete(self) -> None:
        run(["ip", "netns", "del", self.name], check=False)


def searchable_above(path: str) -> None:
    """Lets every user pass through the directories above `path` (o+x: no
    listing), as an admin must for a state directory whose nat networks run
    dnsmasq: it drops to user dnsmasq and reads its hosts file from there.
    pytest makes its temporary directories 0700."""
    here = os.path.dirname(os.path.abspath(path))
    while here != "/":
        mode = os.stat(here).st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(here, stat.S_IMODE(mode) | stat.S_IXOTH)
        here = os.path.dirname(here)


class Daemon:
    """The real fcnetd process inside the namespace; waits for READY=1."""

    def __init__(self, ns: Netns, bus: PrivateBus, state_dir: str, config: str | None = None,
                 extra: list[str] | None = None):
        self.ns, self.bus, self.state_dir, self.config = ns, bus, state_dir, config
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.log = os.path.join(os.path.dirname(state_dir.rstrip("/")), f"fcnetd-{next(_counter)}.log")
        searchable_above(state_dir)

    def command(self) -> list[str]:
        cmd = ["ip", "netns", "exec", self.ns.name, sys.executable, "-m", "fcnetd.daemon",
               "--bus", self.bus.address, "--state-dir", self.state_dir, "--metrics", "off", *self.extra]
        if self.config:
            cmd += ["--config", self.config]
        return cmd

    def start(self, wait: bool = True, timeout: float = 20) -> "Daemon":
        # a local directory: some file systems (9p in the kernel tier) refuse sockets
        sock_path = os.path.join(tempfile.mkdtemp(prefix="fcnetd-notify-"), "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        sock.settimeout(0.2)
        # PYTHONFAULTHANDLER: a daemon that never gets ready is sent SIGABRT
        # and prints where each of its threads was.
        # FCNETD_JOURNAL_SOCKET: a test daemon's audit entries go to a test's
        # own socket, or nowhere (log lines), never to the host's journal.
        env = {"FCNETD_JOURNAL_SOCKET": os.path.join(os.path.dirname(sock_path), "no-journal"), **os.environ,
               "NOTIFY_SOCKET": sock_path, "PYTHONPATH": REPO, "PYTHONFAULTHANDLER": "1"}
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.command(), env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.notifications: list[str] = []
        try:
            deadline = time.monotonic() + timeout
            while wait:
                try:
                    self.notifications.append(sock.recv(4096).decode())
                    if any("READY=1" in n for n in self.notifications):
                        break
                except socket.timeout:
                    pass
                if self.proc.poll() is not None:
                    raise AssertionError(f"fcnetd exited with {self.proc.returncode}: {self.output()}")
                if time.monotonic() > deadline:
                    self.proc.send_signal(signal.SIGABRT)
                    self.proc.wait(10)
                    raise AssertionError(f"fcnetd sent no READY=1 in {timeout}s: {self.output()}")
        finally:
            sock.close()
            os.unlink(sock_path)
        return self

    def output(self) -> str:
        self.logf.flush()
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait(self, timeout: float = 20) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


class Client:
    """Synchronous calls through dbus-fast; errors come back as DBusError."""

    def __init__(self, address: str):
        self.address = address

    def call(self, member: str, signature: str = "", *body, path: str = MANAGER_PATH,
             interface: str = MANAGER_IFACE):
        async def go():
            conn = await connect(self.address)
            try:
                return await call(conn, BUS_NAME, path, interface, member, signature, list(body))
            finally:
                conn.disconnect()
        return unwrap(asyncio.run(go()))

    def error(self, member: str, signature: str = "", *body, **kw) -> DBusError:
        try:
            result = self.call(member, signature, *body, **kw)
        except DBusError as e:
            return e
        raise AssertionError(f"{member}{body} succeeded with {result!r}; an error was expected")

    def props(self, path: str, interface: str) -> dict:
        return self.call("GetAll", "s", interface, path=path, interface="org.freedesktop.DBus.Properties")[0]


def wait_for(predicate, timeout=10.0, what="condition", interval=0.05):
    """Polls until predicate() is true and returns its value; an
    AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def folded_registry(state_dir: str, timeout: float = 10.0) -> dict:
    """registry.json once the daemon has folded its journal into it (it does
    after a second without changes): the file an admin opens to edit."""
    def current():
        try:
            if os.path.getsize(os.path.join(state_dir, "registry.journal")) == 0:
                with open(os.path.join(state_dir, "registry.json")) as f:
                    return json.load(f)
        except (FileNotFoundError, ValueError):
            return None
    return wait_for(current, timeout, what="the journal folded into registry.json")


class Pool:
    """Several bus connections sharing a burst, as a pool of VM launchers
    would. Each keeps at most PER_CONNECTION calls waiting for a reply:
    a system bus refuses a connection's 129th (max_replies_per_connection).
    Use in one event loop: `async with Pool(bus.address, 30) as pool:`."""

    PER_CONNECTION = 100

    def __init__(self, address: str, size: int):
        self.address, self.size = address, size
        self._conns: list = []
        self._slots: list[asyncio.Semaphore] = []
        self._turn = itertools.count()

    async def __aenter__(self) -> "Pool":
        self._conns = list(await asyncio.gather(*(connect(self.address) for _ in range(self.size))))
        self._slots = [asyncio.Semaphore(self.PER_CONNECTION) for _ in self._conns]
        return self

    async def __aexit__(self, *exc) -> None:
        for conn in self._conns:
            conn.disconnect()

    async def flush(self) -> None:
        """Returns once the bus has taken every call sent so far: a round
        trip to the bus itself on each connection, which it answers in order."""
        await asyncio.gather(*(call(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                    "org.freedesktop.DBus", "GetId") for conn in self._conns))

    async def call(self, member: str, signature: str = "", *body, path: str = MANAGER_PATH,
                   interface: str = MANAGER_IFACE):
        """One call on the next connection in turn; errors come back as DBusError."""
        i = next(self._turn) % self.size
        async with self._slots[i]:
            return unwrap(await call(self._conns[i], BUS_NAME, path, interface, member, signature, list(body)))


def v(sig: str, value) -> Variant:
    return Variant(sig, value)


def busctl(address: str, *args: str, check: bool = True, user: int | None = None,
           groups: list[int] | None = None) -> subprocess.CompletedProcess:
    cmd = ["busctl", f"--address={address}", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}",
               f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups", *cmd]
    return run(cmd, check=check)


def fcnetctl(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "fcnetd.cli", "--bus", address, *args], check=check,
               env={**os.environ, "PYTHONPATH": REPO})
