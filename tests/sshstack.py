"""Several hosts for the web UI, two of them remote: node1 on a local bus (as
in tests/webstack.py); node2 and node3 each a network namespace with its own
dbus-daemon (the project's policy), fcnetd and a real OpenSSH sshd listening
on a veth address, reachable only through it. The web UI and fcnetctl run in
a "client" namespace joined to each remote host by a veth pair, as uid
nobody (the web UI) with a client key made for the test; the far side logs
in as a test user in group fcnet, whose key may run only
systemd-stdio-bridge on that host's bus (authorized_keys restrict,command=).

Nothing of the host's is touched: no interface of its own, not its /etc/ssh
nor its sshd. The test user exists only for the far side's sshd and
dbus-daemon, each in a private mount namespace whose /etc/passwd and
/etc/group are the test's (tests/system/polkitd.py, in_private_mounts)."""

from __future__ import annotations

import ctypes
import grp
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from fcnetd.testbus import PrivateBus
from tests.system.harness import REPO, Daemon, Netns, run, wait_for
from tests.system.polkitd import in_private_mounts, world_readable_dir
from tests.webstack import NOBODY, PASSWORDS, HttpUser, free_port, webui_command

SSHD = "/usr/sbin/sshd"
LOGIN = ("fcnt-ssh", 64020)  # the remote login: an ordinary user in group fcnet
CLONE_NEWNET = 0x40000000


def ssh_missing() -> list[str]:
    missing = [f"{p} (apt openssh-server / openssh-client)" for p in (SSHD, "/usr/bin/ssh", "/usr/bin/ssh-keygen")
               if not os.path.exists(p)]
    if not shutil.which("systemd-stdio-bridge"):
        missing.append("systemd-stdio-bridge (apt systemd)")
    return missing


class InNetns:
    """Calls on a thread that joined a network namespace (setns is per
    thread): the test's HTTP client reaches a web UI listening there."""

    def __init__(self, ns: str):
        self.ns = ns
        self.pool = ThreadPoolExecutor(1, initializer=self._enter)

    def _enter(self) -> None:
        fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.ns}")
        finally:
            os.close(fd)

    def __call__(self, fn, *args, **kw):
        return self.pool.submit(fn, *args, **kw).result()

    def close(self) -> None:
        self.pool.shutdown()


class NsHttpUser:
    """tests.webstack.HttpUser, signed in and calling from inside a namespace."""

    def __init__(self, where: InNetns, base: str, user: str):
        self.where = where
        self.user = where(HttpUser, base, user)

    def get(self, path: str):
        return self.where(self.user.get, path)

    def json(self, method: str, path: str, body=None):
        return self.where(self.user.json, method, path, body)


class Users:
    """The host's passwd and group plus LOGIN in group fcnet, with a shell
    (sshd runs the forced command through it) and the test's home."""

    def __init__(self, home: str):
        self.dir = world_readable_dir("fcnetd-sshusers-")
        self.passwd, self.group = os.path.join(self.dir, "passwd"), os.path.join(self.dir, "group")
        name, uid = LOGIN
        with open("/etc/passwd") as f:
            passwd = f.read() + f"{name}:*:{uid}:{uid}::{home}:/bin/sh\n"
        lines = []
        with open("/etc/group") as f:
            for line in f.read().splitlines():
                fields = line.split(":")
                if fields[0] == "fcnet":
                    fields[3] = ",".join(filter(None, [fields[3], name]))
                lines.append(":".join(fields))
        lines.append(f"{name}:x:{uid}:")
        for path, text in ((self.passwd, passwd), (self.group, "\n".join(lines) + "\n")):
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)

    def binds(self) -> dict[str, str]:
        return {"/etc/passwd": self.passwd, "/etc/group": self.group}


class UserBus(PrivateBus):
    """The private system-like bus, in a mount namespace where the test
    user exists (dbus-daemon refuses a connection whose uid it cannot look
    up, and reads group fcnet's members for the project's policy)."""

    def __init__(self, users: Users):
        super().__init__()
        self.users = users

    def start(self) -> "UserBus":
        cmd = ["dbus-daemon", f"--config-file={self.conf}", "--nofork", "--nopidfile", "--nosyslog"]
        self.proc = subprocess.Popen(in_private_mounts(self.users.binds(), cmd), stdin=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, what="dbus-daemon's socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"dbus-daemon exited with {self.proc.returncode}")
        os.chmod(self.socket, 0o666)
        return self


def seeded(state_dir: str, registry: dict | None) -> str:
    """A state directory holding `registry` as registry.json (if one is given)."""
    if registry is not None:
        os.makedirs(state_dir, mode=0o700)
        with open(os.path.join(state_dir, "registry.json"), "w") as f:
            json.dump(registry, f)
    return state_dir


def keygen(path: str, comment: str) -> str:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    with open(path + ".pub") as f:
        return f.read().strip()


def descendants(pid: int) -> list[int]:
    """pid's children, their children, and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class RemoteHost:
    """node2 or node3: a namespace with its bus, fcnetd and sshd, joined to
    the client namespace by a veth pair (198.51.100.0/30 steps)."""

    def __init__(self, name: str, index: int, client: Netns, users: Users, home: str, client_pub: str,
                 bridges: str = "fcbr0,fcbr1,fcbr2,fcbr3", registry: dict | None = None):
        self.name, self.home, self.users = name, home, users
        self.ns = Netns()
        self.address = f"198.51.100.{4 * index + 2}"
        client.ip("link", "add", f"to{name}", "type", "veth", "peer", "name", "uplink", "netns", self.ns.name)
        client.ip("addr", "add", f"198.51.100.{4 * index + 1}/30", "dev", f"to{name}")
        client.ip("link", "set", f"to{name}", "up")
        self.ns.ip("addr", "add", f"{self.address}/30", "dev", "uplink")
        self.ns.ip("link", "set", "uplink", "up")
        self.dir = os.path.join(home, name)
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o755)
        self.bus = UserBus(users).start()
        self.config = os.path.join(self.dir, "fcnetd.toml")
        with open(self.config, "w") as f:
            f.write(f'[daemon]\nhost = "{name}"\n' + "".join(f"[bridges.{b}]\ncreate = true\n"
                                                             for b in bridges.split(",")))
        self.daemon = Daemon(self.ns, self.bus, seeded(os.path.join(self.dir, "state"), registry),
                             self.config).start()
        self.host_pub = keygen(os.path.join(self.dir, "host_key"), f"{name}-host")
        keys = os.path.join(self.dir, "authorized_keys")
        with open(keys, "w") as f:
            # the login may run the bridge to this host's bus and nothing else
            f.write(f'restrict,command="systemd-stdio-bridge --bus-path={self.bus.address}" {client_pub}\n')
        os.chmod(keys, 0o644)
        self.sshd_config = os.path.join(self.dir, "sshd_config")
        with open(self.sshd_config, "w") as f:
            f.write(f"""ListenAddress {self.address}
Port 22
HostKey {self.dir}/host_key
PidFile none
UsePAM no
StrictModes no
PermitRootLogin no
AllowUsers {LOGIN[0]}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile {keys}
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
LogLevel VERBOSE
""")
        self.sshd_log = os.path.join(self.dir, "sshd.log")
        self.sshd: subprocess.Popen | None = None
        self.start_sshd()

    def known_hosts_line(self) -> str:
        return f"{self.address} {self.host_pub}"

    def start_sshd(self) -> None:
        # /run/sshd (the privilege separation directory) on a tmpfs of its own
        binds = self.users.binds()
        mounts = " && ".join(f"mount --bind {src} {dst}" for dst, src in binds.items())
        script = f'{mounts} && mount -t tmpfs -o mode=0755 sshd-run /run && mkdir -m 0755 /run/sshd && exec "$@"'
        log = open(self.sshd_log, "ab")
        self.sshd = subprocess.Popen(["ip", "netns", "exec", self.ns.name, "unshare", "--mount", "--propagation",
                                      "private", "sh", "-c", script, "sh", SSHD, "-D", "-e", "-f", self.sshd_config],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.listening() or self.sshd.poll() is not None, timeout=15, what=f"{self.name}'s sshd")
        if self.sshd.poll() is not None:
            raise AssertionError(f"sshd of {self.name} exited with {self.sshd.returncode}: {self.sshd_output()}")

    def listening(self) -> bool:
        return f"{self.address}:22" in self.ns.python(
            "import subprocess; print(subprocess.run(['ss', '-Hltn'], capture_output=True, text=True).stdout)")

    def stop_sshd(self) -> None:
        """sshd and every session it serves end at once, as when the host goes away."""
        if self.sshd is None or self.sshd.poll() is not None:
            return
        for pid in [self.sshd.pid, *descendants(self.sshd.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.sshd.wait(10)

    def sessions(self) -> int:
        """How many systemd-stdio-bridge processes serve logins here now."""
        if self.sshd is None or self.sshd.poll() is not None:
            return 0
        count = 0
        for pid in descendants(self.sshd.pid):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    count += f.read().strip() == "systemd-stdio-b"
            except OSError:
                pass
        return count

    def sshd_output(self) -> str:
        with open(self.sshd_log, errors="replace") as f:
            return f.read()

    def close(self) -> None:
        self.stop_sshd()
        self.daemon.stop()
        self.bus.stop()
        self.ns.delete()


class SshStack:
    """node1 local, node2 and node3 over ssh; the web UI (uid nobody, group
    fcnet) in the client namespace, signed in through `self.http`."""

    def __init__(self, registries: dict[str, dict] | None = None):
        """registries: a registry to start each named host with (the bench's)."""
        registries = registries or {}
        self.dir = tempfile.mkdtemp(prefix="fcnetd-ssh-")
        os.chmod(self.dir, 0o755)
        self.client = Netns()
        self.users = Users(self.dir)
        self.key = os.path.join(self.dir, "client_key")
        client_pub = keygen(self.key, "fcnetd-webui-test")
        os.chown(self.key, NOBODY, -1)  # ssh refuses a key its user does not own alone
        self.remotes: list[RemoteHost] = []
        self.procs: list[subprocess.Popen] = []
        try:
            self.ns1 = Netns()
            self.bus1 = PrivateBus().start()
            cfg1 = os.path.join(self.dir, "node1.toml")
            with open(cfg1, "w") as f:
                f.write('[daemon]\nhost = "node1"\n[bridges.fcbr0]\ncreate = true\n[bridges.fcbr1]\ncreate = true\n')
            self.daemon1 = Daemon(self.ns1, self.bus1, seeded(os.path.join(self.dir, "state1"),
                                                              registries.get("node1")), cfg1).start()
            for i, name in enumerate(("node2", "node3")):
                self.remotes.append(RemoteHost(name, i, self.client, self.users, self.dir, client_pub,
                                               registry=registries.get(name)))
            self.node2, self.node3 = self.remotes
            self.known_hosts = os.path.join(self.dir, "known_hosts")
            with open(self.known_hosts, "w") as f:
                f.write("".join(r.known_hosts_line() + "\n" for r in self.remotes))
            os.chmod(self.known_hosts, 0o644)
            self.users_file = os.path.join(self.dir, "webui-users.json")
            for user, role in (("admin", "admin"), ("viewer", "viewer")):
                subprocess.run(webui_command() + ["--users", self.users_file, "user", "add", user, "--role", role,
                                                  "--password-stdin"], input=PASSWORDS[user] + "\n", text=True,
                               check=True, capture_output=True, env={**os.environ, "PYTHONPATH": REPO})
            os.chown(self.users_file, NOBODY, -1)
            self.webcfg = self.write_webui_config()
            self.http_ns = InNetns(self.client.name)
            self.log = open(os.path.join(self.dir, "webui.log"), "wb")
            self.webui, self.url = self.start_webui(self.webcfg)
        except BaseException:
            self.close()
            raise

    def ssh_host(self, remote: RemoteHost, known_hosts: str | None = None) -> str:
        return (f'ssh = "{LOGIN[0]}@{remote.address}"\nidentity = "{self.key}"\n'
                f'known_hosts = "{known_hosts or self.known_hosts}"\n')

    def write_webui_config(self, extra: str = "", name: str = "webui.toml") -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(f'[hosts.node1]\nbus = "{self.bus1.address}"\n'
                    + "".join(f"[hosts.{r.name}]\n{self.ssh_host(r)}" for r in self.remotes) + extra)
        os.chmod(path, 0o644)
        return path

    def start_webui(self, config: str) -> tuple[subprocess.Popen, str]:
        """fcnetd-webui in the client namespace as uid nobody in group fcnet,
        once it answers: (process, base URL as seen from that namespace)."""
        port = free_port()
        cmd = ["ip", "netns", "exec", self.client.name, "setpriv", f"--reuid={NOBODY}",
               f"--regid={grp.getgrnam('fcnet').gr_gid}", "--clear-groups", *webui_command(),
               "--listen", f"127.0.0.1:{port}", "--users", self.users_file, "--config", config]
        proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": REPO})
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def answering() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"fcnetd-webui exited with {proc.returncode}: {self.webui_output()}")
            try:
                urllib.request.urlopen(url + "/login", timeout=2)
                return True
            except (urllib.error.URLError, ConnectionError):
                return False
        wait_for(lambda: self.http_ns(answering), timeout=30, interval=0.1, what="fcnetd-webui to answer")
        return proc, url

    def sign_in(self, user: str = "admin", url: str | None = None) -> NsHttpUser:
        return NsHttpUser(self.http_ns, url or self.url, user)

    def fcnetctl(self, remote: RemoteHost, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """fcnetctl --host from the client namespace (as root; the remote login is the test user)."""
        return run(["ip", "netns", "exec", self.client.name, sys.executable, "-m", "fcnetd.cli",
                    "--host", f"{LOGIN[0]}@{remote.address}", "--identity", self.key,
                    "--known-hosts", self.known_hosts, *args], check=check, env={**os.environ, "PYTHONPATH": REPO})

    def chromium(self) -> str:
        """An executable that runs Chromium in the client namespace (for Playwright)."""
        path = os.path.join(self.dir, "chromium-in-client-netns")
        with open(path, "w") as f:
            f.write(f'#!/bin/sh\nexec ip netns exec {self.client.name} /usr/bin/chromium "$@"\n')
        os.chmod(path, 0o755)
        return path

    def webui_output(self) -> str:
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if hasattr(self, "http_ns"):
            self.http_ns.close()
        for r in self.remotes:
            r.close()
        if hasattr(self, "daemon1"):
            self.daemon1.stop()
        if hasattr(self, "bus1"):
            self.bus1.stop()
            self.ns1.delete()
        self.client.delete()
        shutil.rmtree(self.users.dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
