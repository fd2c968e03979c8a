"""One dnsmasq (Debian's dnsmasq-base) per nat network with DHCP: a static
lease for each attached VM and nothing for anyone else, DNS forwarded to
the host's resolvers (/etc/resolv.conf), bound to the network's L3 port
only.

Files, in <state_dir>/nat/, per network id: `<id>.hosts` (MAC,address
lines; written by fcnetd, re-read by dnsmasq on SIGHUP), `<id>.leases`
(dnsmasq's), `<id>.pid`, and `<id>.conf` where it runs as a unit.

Where it runs: under systemd, as a unit of its own,
fcnetd-dnsmasq@<id>.service (dnsmasq_unit.py), so that its privileges
(binding ports 53 and 67, dropping to user dnsmasq) are not fcnetd's and
systemd supervises it. Elsewhere (the demo, the tests, a host without that
unit file) as fcnetd's child (ChildDnsmasq below): a process is fcnetd's if
its pid is in the pidfile and /proc/PID/cmdline is dnsmasq with
`--dhcp-leasefile=` that network's leases file, so one left running by a
killed daemon is adopted, and one whose network is gone is reaped.
Supervision is by pidfd (os.pidfd_open), which works for a process fcnetd
started and for an adopted one alike; its own children are reaped at
their exit, so none lingers as a zombie. A dnsmasq that dies is started
again, at once the first time, then after a growing delay while it keeps
dying.

dnsmasq drops its privileges to user `dnsmasq` (made by dnsmasq-base for
exactly this: no login, owns nothing else), group that user's own group
(nogroup), once its sockets, pidfile and leases file are open. What it
reads after that is the hosts file, on each SIGHUP, and /etc/resolv.conf.
So the nat directory is 0711 (search, no listing) and the hosts files
0644: nothing in them is secret (every caller of fcnetd's API sees the
same MACs and addresses in a network's Vms), and the state directory must
be searchable by that user (fcnetd adds o+x to its own; a parent it does
not own is reported, not changed). The registry files stay 0600.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network

from . import faultpoint
from .errors import FcnetError, Internal

log = logging.getLogger("fcnetd.dnsmasq")

DNSMASQ = "/usr/sbin/dnsmasq"
USER = "dnsmasq"
# Every lease is a static reservation, released explicitly at detach: a long
# lease only spares a VM renewals, and keeps its address while fcnetd (and
# so its dnsmasq) is stopped for a while.
LEASE_TIME = "12h"
SUFFIXES = (".hosts", ".leases", ".pid", ".conf")  # .conf: a unit's (dnsmasq_unit.py)
START_SECONDS = 10.0  # from spawn to its pidfile: dnsmasq takes ~30 ms
STOP_SECONDS = 5.0  # from SIGTERM to SIGKILL
HEALTHY_SECONDS = 30.0  # a process that lived this long restarts at once when it dies
BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.5, 30.0
DHCPRELEASE = 7


def user() -> tuple[pwd.struct_passwd, str]:
    """The user dnsmasq runs as and its group's name."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        raise Internal(f"dnsmasq: user {USER} does not exist (Debian's dnsmasq-base package makes it)") from None
    return entry, grp.getgrgid(entry.pw_gid).gr_name


def path(directory: str, network_id: str, suffix: str) -> str:
    return os.path.join(directory, network_id + suffix)


def options(directory: str, network_id: str, port: str, subnet: IPv4Network, gateway: IPv4Address,
            user_name: str, group_name: str) -> list[str]:
    """What a network's dnsmasq serves, as long options without their
    dashes: a command line's arguments, or a conf file's lines."""
    return [
        "bind-interfaces", f"interface={port}", "except-interface=lo", f"listen-address={gateway}",
        f"dhcp-range={subnet.network_address},static,{subnet.netmask},{LEASE_TIME}",
        # dnsmasq's default of 1,000 leases is fewer than a bridge's 1,023 ports
        f"dhcp-lease-max={subnet.num_addresses}",
        f"dhcp-hostsfile={path(directory, network_id, '.hosts')}",
        f"dhcp-leasefile={path(directory, network_id, '.leases')}",
        f"pid-file={path(directory, network_id, '.pid')}",
        "dhcp-authoritative", "no-hosts",
        # A VM's DHCP hostname puts no name in the host's DNS.
        "dhcp-ignore-names",
        # Neither plain names nor reverse lookups of private ranges (the
        # network's own among them) leave the host.
        "domain-needed", "bogus-priv",
        f"user={user_name}", f"group={group_name}",
    ]


def command(settings: list[str]) -> list[str]:
    """The command line of a dnsmasq that is fcnetd's child."""
    # Its log (each DHCP exchange, its errors) joins fcnetd's on stderr.
    return [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", *(f"--{o}" for o in settings),
            "--log-facility=-"]


def hosts_text(hosts: Mapping[str, str]) -> str:
    """The hosts file for static leases: MAC -> address."""
    return "".join(f"{mac},{ip}\n" for mac, ip in sorted((mac.lower(), ip) for mac, ip in hosts.items()))


def parse_leases(text: str) -> list[tuple[str, str]]:
    """(MAC, address) of each DHCPv4 lease in a dnsmasq leases file
    ("<expiry> <mac> <address> <hostname> <client-id>" lines)."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] != "duid" and "." in fields[2]:
            found.append((fields[1].lower(), fields[2]))
    return found


def stale_leases(text: str, hosts: Mapping[str, str]) -> list[tuple[str, str]]:
    """The leases no static lease backs any more (a detached VM's)."""
    wanted = {(mac.lower(), ip) for mac, ip in hosts.items()}
    return [lease for lease in parse_leases(text) if lease not in wanted]


def prune_leases(text: str, hosts: Mapping[str, str]) -> str:
    """The leases file without the stale leases: what a dnsmasq about to
    start must not load, or it would refuse their addresses to the VMs
    they are now reserved for ("not using configured address ... because
    it is leased to ...") until they expire."""
    stale = set(stale_leases(text, hosts))
    kept = [line for line in text.splitlines(keepends=True)
            if not (len(f := line.split()) >= 3 and (f[1].lower(), f[2]) in stale)]
    return "".join(kept)


def release_packet(mac: str, ip: str, server: str) -> bytes:
    """A DHCPRELEASE of `ip` by `mac` to the DHCP server at `server`: what
    dnsmasq-utils' dhcp_release sends (libvirt and neutron use it) to end
    a lease at once."""
    head = bytes([1, 1, 6, 0]) + os.urandom(4) + bytes(4)  # BOOTREQUEST, Ethernet, xid, secs, flags
    head += IPv4Address(ip).packed + bytes(12)  # ciaddr; yiaddr, siaddr, giaddr
    head += bytes.fromhex(mac.replace(":", "")).ljust(16, b"\0") + bytes(64 + 128)  # chaddr, sname, file
    options = bytes([99, 130, 83, 99, 53, 1, DHCPRELEASE, 54, 4]) + IPv4Address(server).packed + bytes([255])
    return (head + options).ljust(548, b"\0")


def cmdline(pid: int) -> list[str]:
    """A process's argv; [] if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0")[:-1]]


def owner_argv(pidfile: str, leasefile: str) -> tuple[int, list[str]] | None:
    """(pid, argv) of the dnsmasq the pidfile names if it is ours (serves
    that leases file), else None."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    argv = cmdline(pid)
    if argv and os.path.basename(argv[0]) == "dnsmasq" and f"--dhcp-leasefile={leasefile}" in argv:
        return pid, argv
    return None


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def write_file(file: str, text: str, mode: int) -> None:
    """Replaces a file atomically with `mode` whatever the umask (the
    daemon's is 0077, and dnsmasq reads the hosts file as another user).
    No fsync: these files are rebuilt from the registry at every start."""
    tmp = f"{file}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
        os.rename(tmp, file)
    except BaseException:
        _unlink(tmp)
        raise


def prepare_directory(state_dir: str, directory: str, runs_as: pwd.struct_passwd) -> None:
    """Makes the nat directory, and checks that dnsmasq's user can reach
    the hosts files in it (see the module's docstring for the modes)."""
    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o711)
    mode = os.stat(state_dir).st_mode
    if not mode & stat.S_IXOTH:
        os.chmod(state_dir, stat.S_IMODE(mode) | stat.S_IXOTH)
    current = os.path.abspath(directory)
    while True:
        st = os.stat(current)
        if not (st.st_mode & stat.S_IXOTH or (st.st_uid == runs_as.pw_uid and st.st_mode & stat.S_IXUSR)
                or (st.st_gid == runs_as.pw_gid and st.st_mode & stat.S_IXGRP)):
            raise Internal(f"dnsmasq runs as user {runs_as.pw_name} and must read the hosts files in {directory}, "
                           f"but {current} (mode {stat.S_IMODE(st.st_mode):04o}) is not searchable by it: "
                           "put the state directory where every parent directory is (chmod o+x)")
        if current == "/":
            return
        current = os.path.dirname(current)


class Dnsmasq:
    """The dnsmasq of one nat network: its files, and its static leases
    kept current. How the process runs (fcnetd's child, or a systemd unit
    of its own) is a subclass's: ChildDnsmasq here, UnitDnsmasq in
    dnsmasq_unit.py."""

    def __init__(self, state_dir: str, directory: str, network_id: str, name: str, port: str,
                 subnet: IPv4Network, gateway: IPv4Address):
        self.state_dir, self.directory, self.network_id, self.name = state_dir, directory, network_id, name
        self.port, self.gateway = port, str(gateway)
        self.runs_as, group = user()
        self.options = options(directory, network_id, port, subnet, gateway, self.runs_as.pw_name, group)
        self.hosts_file, self.lease_file, self.pid_file = (path(directory, network_id, s) for s in SUFFIXES[:3])
        self.restarts = 0
        self._lock = asyncio.Lock()  # one start or hosts update at a time
        self._hosts: dict[str, str] = {}
        self._released: list[tuple[str, str]] = []
        self._next: asyncio.Future | None = None  # the update the next callers share
        self._flushes: set[asyncio.Task] = set()
        self._stopped = False
        self._reread = False  # SIGHUP at the next update even if the file is as wanted
        self._written: str | None = None  # the hosts file as last written, None if unknown
        self._sweep = False  # look for leases no reservation backs at the next update

    # -- how the process runs: the subclass's -------------------------------
    settings: object  # what it runs with: another value means it must start anew

    async def start(self, hosts: Mapping[str, str]) -> None:
        """Starts it with these static leases; Internal if it does not
        come up (then nothing is left running)."""
        raise NotImplementedError

    async def adopt(self, hosts: Mapping[str, str]) -> str:
        """Takes over the one running for this network since before this
        daemon started: "adopted" (kept, told of `hosts`), "replaced" (it
        ran with other settings, so it was started anew), or "" (none)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stops it (leases stay on disk); a lease update still in flight
        finishes first, and later ones only answer their callers."""
        raise NotImplementedError

    def retry(self) -> None:
        """After a failed start(): starts it again later."""
        raise NotImplementedError

    async def live_pid(self) -> int | None:
        """The pid serving the network now, asked afresh; None if none."""
        raise NotImplementedError

    async def _reload(self) -> bool:
        """SIGHUP: re-read the hosts file. False if it is not running (it
        reads the file when it starts)."""
        raise NotImplementedError

    # -- files ----------------------------------------------------------------
    def remove_files(self) -> None:
        remove_files(self.directory, self.network_id)

    def _prepare_files(self) -> None:
        _unlink(self.pid_file)  # a stale one must not pass for the new process's
        prepare_directory(self.state_dir, self.directory, self.runs_as)
        self._written = hosts_text(self._hosts)
        write_file(self.hosts_file, self._written, 0o644)
        try:
            with open(self.lease_file) as f:
                leases = f.read()
        except FileNotFoundError:
            leases = ""
        if stale_leases(leases, self._hosts):
            write_file(self.lease_file, prune_leases(leases, self._hosts), 0o644)

    def _files_ready(self) -> None:
        """_prepare_files, with its failure said as the network's."""
        try:
            self._prepare_files()
        except OSError as e:
            raise Internal(f"dnsmasq for network {self.name}: cannot prepare its files in {self.directory}: "
                           f"{e.strerror}") from e

    # -- static leases ------------------------------------------------------
    async def update(self, hosts: Mapping[str, str], released: Iterable[tuple[str, str]] = ()) -> None:
        """Makes `hosts` (MAC -> address) its static leases and ends the
        leases in `released` ((MAC, address) of detached VMs) and any other
        lease no static lease backs, so their addresses can go to the next
        VM at once. Calls that overlap share one hosts-file write and one
        SIGHUP; returns once dnsmasq has been told (or, if it is down,
        once the file is written: it reads it at its start)."""
        self._hosts = dict(hosts)
        self._released.extend(released)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            task = asyncio.ensure_future(self._flush())
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        await asyncio.shield(self._next)

    async def tell_anew(self, hosts: Mapping[str, str]) -> None:
        """update() for a dnsmasq whose memory is unknown (adopted after a
        crash, restarted by systemd): a crash may have come between a
        hosts-file write and its SIGHUP, and it loaded the leases file as
        it was, so it re-reads the file and stale leases are swept even if
        the file is already right."""
        self._reread = self._sweep = True
        await self.update(hosts)

    async def _flush(self) -> None:
        async with self._lock:
            done, self._next = self._next, None
            released, self._released = self._released, []
            try:
                if not self._stopped:
                    await self._tell(released)
            except OSError as e:
                log.error("dnsmasq of network %s: cannot update its static leases: %s", self.name, e)
            finally:
                done.set_result(None)

    async def _tell(self, released: list[tuple[str, str]]) -> None:
        # A VM start costs a file write and a signal: nothing is read back.
        text = hosts_text(self._hosts)
        changed = text != self._written
        if changed:
            write_file(self.hosts_file, text, 0o644)
            self._written = text
            faultpoint.reached("dnsmasq.hosts-written")
        if changed or self._reread:
            if not await self._reload():
                return  # down: it reads the file, its stale leases pruned, when it starts
            self._reread = False
        if released or self._sweep:
            # Also any lease no reservation backs: one whose release a
            # killed daemon never sent (the sweep after an adoption).
            self._sweep = False
            try:
                with open(self.lease_file) as f:
                    released = released + stale_leases(f.read(), self._hosts)
            except FileNotFoundError:
                pass
        if released:
            self._release(dict.fromkeys((mac.lower(), ip) for mac, ip in released))

    def _release(self, leases: Iterable[tuple[str, str]]) -> None:
        # Sent from the host to the gateway with the socket bound to the L3
        # port: the kernel delivers it through lo yet reports the bound
        # port as where it came in, which is where dnsmasq looks for it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.port.encode())
            for mac, ip in leases:
                sock.sendto(release_packet(mac, ip, self.gateway), (self.gateway, 67))

    # -- metrics ------------------------------------------------------------
    def lease_count(self) -> int:
        return count_leases(self.lease_file)


class ChildDnsmasq(Dnsmasq):
    """A dnsmasq that is fcnetd's own child (where no systemd manages
    units: the demo, the tests, a host without the unit file), supervised
    by pidfd and adopted after a crash by its pidfile and exact argv."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.argv = self.settings = command(self.options)
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None  # when it is our own child
        self._pidfd: int | None = None
        self._supervisor: asyncio.Task | None = None

    def __repr__(self) -> str:
        return f"dnsmasq of network {self.name} (pid {self.pid})"

    async def start(self, hosts: Mapping[str, str]) -> None:
        self._hosts = dict(hosts)
        async with self._lock:
            await self._spawn()
        self._supervise()

    async def adopt(self, hosts: Mapping[str, str]) -> str:
        found = owner_argv(self.pid_file, self.lease_file)
        if found is None:
            return ""
        pid, argv = found
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return ""
        # The pidfd holds that very process; its argv is read again, so a
        # pid reused between the two reads is not taken for ours.
        if cmdline(pid) != argv:
            os.close(pidfd)
            return ""
        self.pid, self._pidfd = pid, pidfd
        if argv != self.argv:
            log.warning("%r ran with other arguments (an older fcnetd?); starting it anew", self)
            await self._terminate()
            await self.start(hosts)
            return "replaced"
        self._supervise()
        await self.tell_anew(hosts)
        return "adopted"

    async def stop(self) -> None:
        self._stopped = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
        async with self._lock:
            await self._terminate()

    async def live_pid(self) -> int | None:
        found = owner_argv(self.pid_file, self.lease_file)
        return found[0] if found else None

    async def _reload(self) -> bool:
        if self._pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGHUP)
        except ProcessLookupError:
            return False  # it died: its supervisor starts it again, and it reads the file then
        return True

    async def _spawn(self) -> None:
        self._files_ready()
        try:
            # A session of its own: a signal meant for the daemon's process
            # group (a Ctrl-C) does not stop the network's DHCP with it.
            proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    close_fds=True, start_new_session=True)
        except OSError as e:
            raise Internal(f"{DNSMASQ}: cannot start it for network {self.name}: {e.strerror}") from e
        self._proc, self.pid, self._pidfd = proc, proc.pid, os.pidfd_open(proc.pid)
        deadline = time.monotonic() + START_SECONDS
        try:
            # Ready once its pidfile names it: dnsmasq writes it after its
            # sockets are bound and its signal handlers set, so a SIGHUP
            # from then on is a reload, not its death.
            while read_pid(self.pid_file) != proc.pid:
                if proc.poll() is not None:
                    raise Internal(f"dnsmasq for network {self.name} exited at start with status "
                                   f"{proc.returncode} (its message is in fcnetd's log just before)")
                if time.monotonic() > deadline:
                    raise Internal(f"dnsmasq for network {self.name} was not ready after {START_SECONDS:.0f} s")
                await asyncio.sleep(0.01)
        except BaseException:
            await self._terminate()
            raise
        log.info("started %r", self)

    async def _terminate(self) -> None:
        """Ends the process and reaps it; no-op without one."""
        if self._pidfd is None:
            return
        await _end(self._pidfd, repr(self))
        self._reap()
        _unlink(self.pid_file)  # dnsmasq, no longer root, cannot

    def _reap(self) -> int | None:
        """After its exit: collects our own child's status (no zombie) and
        forgets the process. None for an adopted one (its parent reaps)."""
        code = self._proc.wait() if self._proc is not None else None
        os.close(self._pidfd)
        self._proc = self._pidfd = self.pid = None
        return code

    # -- supervision --------------------------------------------------------
    def _supervise(self, failures: int = 0) -> None:
        self._supervisor = asyncio.ensure_future(self._watch(failures))

    def retry(self) -> None:
        # As after a death: after a delay, growing while it keeps failing.
        self._supervise(failures=1)

    async def _watch(self, failures: int) -> None:
        """failures: deaths and failed starts in a row."""
        while True:
            if self._pidfd is not None:
                since, pid = time.monotonic(), self.pid
                await _exit_of(self._pidfd, None)
                code = self._reap()
                if time.monotonic() - since > HEALTHY_SECONDS:
                    failures = 0
                self.restarts += 1
                log.warning("dnsmasq of network %s (pid %s) exited%s; starting it again in %.1f s",
                            self.name, pid, "" if code is None else f" with status {code}", backoff(failures))
            await asyncio.sleep(backoff(failures))
            failures += 1
            try:
                async with self._lock:
                    await self._spawn()
            except FcnetError as e:
                log.error("%s; trying again in %.1f s", e, backoff(failures))


def count_leases(lease_file: str) -> int:
    try:
        with open(lease_file) as f:
            return len(parse_leases(f.read()))
    except OSError:
        return 0


async def reap(directory: str, keep: set[str]) -> list[str]:
    """Stops fcnetd's dnsmasq processes of networks not in `keep` and
    removes their files, and any temp file a crash left; the network ids
    reaped."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    reaped = sorted({name.split(".", 1)[0] for name in names} - keep)
    for network_id in reaped:
        await reap_network(directory, network_id)
    for name in names:
        # A temp file of another process: a write a crash cut short.
        if ".tmp." in name and not name.endswith(f".tmp.{os.getpid()}"):
            _unlink(os.path.join(directory, name))
    return reaped


async def reap_network(directory: str, network_id: str) -> None:
    """Stops the dnsmasq of a network fcnetd does not supervise (one a
    killed daemon left) and removes the network's files."""
    found = owner_argv(path(directory, network_id, ".pid"), path(directory, network_id, ".leases"))
    if found is not None:
        await _kill(*found)
    remove_files(directory, network_id)


def remove_files(directory: str, network_id: str) -> None:
    """A network's dnsmasq files, however it ran."""
    for suffix in SUFFIXES:
        _unlink(path(directory, network_id, suffix))


def _unlink(file: str) -> None:
    try:
        os.unlink(file)
    except FileNotFoundError:
        pass


async def _kill(pid: int, argv: list[str]) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if cmdline(pid) == argv:  # else it exited and the pid went to another process meanwhile
            await _end(pidfd, f"dnsmasq (pid {pid}) of a deleted network")
    finally:
        os.close(pidfd)


async def _end(pidfd: int, what: str) -> None:
    """SIGTERM, and SIGKILL if it lingers; returns once it has exited."""
    for sig, wait in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, None)):
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            pass  # exited already; the pidfd still says so
        if await _exit_of(pidfd, wait):
            return
        log.warning("%s ignored SIGTERM for %.0f s; killing it", what, wait)


async def _exit_of(pidfd: int, timeout: float | None) -> bool:
    """Waits for a process to end (its pidfd turns readable); False on timeout."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
    try:
        await asyncio.wait_for(done, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)


def backoff(failures: int) -> float:
    """The wait before a start after `failures` deaths or failed starts in
    a row: none after the first, then 0.5 s doubling up to 30 s."""
    return min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** (failures - 1)) if failures else 0.0
