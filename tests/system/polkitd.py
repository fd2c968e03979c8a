"""A real polkitd (Debian's /usr/lib/polkit-1/polkitd) on the test's private
bus, with the project's actions and rules plus the test's own, and test users
that exist only for the bus and polkitd.

Nothing of the host's polkit or user database is touched: dbus-daemon and
polkitd each run in a private mount namespace (`unshare -m`, private
propagation) where bind mounts put the test's files over /etc/passwd,
/etc/group, /usr/share/polkit-1/actions, /usr/share/polkit-1/rules.d and
/etc/polkit-1/rules.d. Both need the test users by name: dbus-daemon refuses
a connection whose uid it cannot look up, and polkit rules see a user's name
and the groups the user database gives it (not the process's supplementary
groups, measured with polkit 122)."""

from __future__ import annotations

import asyncio
import grp
import os
import shlex
import shutil
import subprocess
import tempfile

from fcnetd import polkit
from fcnetd.bus import call, connect
from fcnetd.testbus import POLICY, TEMPLATE, PrivateBus

from .harness import REPO, wait_for

POLKITD = "/usr/lib/polkit-1/polkitd"
POLKIT_BUS_POLICY = "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
ACTIONS = "/usr/share/polkit-1/actions"
VENDOR_RULES = "/usr/share/polkit-1/rules.d"
ADMIN_RULES = "/etc/polkit-1/rules.d"


def world_readable_dir(prefix: str) -> str:
    """polkitd reads its files as user polkitd; pytest's directories are 0700."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def in_private_mounts(binds: dict[str, str], cmd: list[str]) -> list[str]:
    """cmd in a new mount namespace where each target in `binds` shows its source."""
    mounts = " && ".join(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}" for dst, src in binds.items())
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$@"', "sh", *cmd]


class UserDb:
    """The host's passwd and group plus the test users. `member` is in group
    fcnet by the user database (what polkit sees); `monitor` and `outsider`
    are in no group of the project's; `webui` carries the name systemd gives
    the web UI's DynamicUser."""

    USERS = {"member": ("fcnt-member", 64011), "monitor": ("fcnt-monitor", 64010),
             "outsider": ("fcnt-outsider", 64012), "webui": ("fcnetd-webui", 64013)}

    def __init__(self):
        self.dir = world_readable_dir("fcnetd-users-")
        self.passwd, self.group = os.path.join(self.dir, "passwd"), os.path.join(self.dir, "group")
        self.fcnet_gid = grp.getgrnam("fcnet").gr_gid
        member = self.USERS["member"][0]
        with open("/etc/passwd") as f:
            passwd = f.read()
        with open("/etc/group") as f:
            groups = []
            for line in f.read().splitlines():
                fields = line.split(":")
                if fields[0] == "fcnet":
                    fields[3] = ",".join(filter(None, [fields[3], member]))
                groups.append(":".join(fields))
        for name, uid in self.USERS.values():
            passwd += f"{name}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
            groups.append(f"{name}:x:{uid}:")
        with open(self.passwd, "w") as f:
            f.write(passwd)
        with open(self.group, "w") as f:
            f.write("\n".join(groups) + "\n")
        os.chmod(self.passwd, 0o644)
        os.chmod(self.group, 0o644)

    def uid(self, who: str) -> int:
        return self.USERS[who][1]

    def binds(self) -> dict[str, str]:
        return {"/etc/passwd": self.passwd, "/etc/group": self.group}

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class AuthorityBus(PrivateBus):
    """The private system-like bus (fcnetd/testbus.py: Debian's defaults and
    the project's policy) plus Debian's policy for polkitd's name, as
    Debian's system.conf includes every file in system.d/, and with the
    test users."""

    def __init__(self, users: UserDb):
        super().__init__()
        self.users = users
        with open(self.conf, "w") as f:
            f.write(TEMPLATE.format(socket=self.socket,
                                    include=f"<include>{POLICY}</include><include>{POLKIT_BUS_POLICY}</include>"))

    def start(self) -> "AuthorityBus":
        cmd = ["dbus-daemon", f"--config-file={self.conf}", "--nofork", "--nopidfile", "--nosyslog"]
        self.proc = subprocess.Popen(in_private_mounts(self.users.binds(), cmd), stdin=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, timeout=10,
                 what="dbus-daemon's socket")
        if self.proc.poll() is not None:
            raise AssertionError(f"dbus-daemon exited with {self.proc.returncode} (config {self.conf})")
        os.chmod(self.socket, 0o666)
        return self


class Polkitd:
    """polkitd serving the project's actions and rules (polkit/) and the
    test's rules in /etc/polkit-1/rules.d, as an admin's would be."""

    def __init__(self, bus: AuthorityBus, users: UserDb, rules: dict[str, str] | None = None,
                 actions: bool = True):
        self.bus, self.users = bus, users
        self.dir = world_readable_dir("fcnetd-polkit-")
        self.actions, self.vendor, self.admin = (os.path.join(self.dir, d) for d in ("actions", "vendor", "admin"))
        for d in (self.actions, self.vendor, self.admin):
            os.mkdir(d)
            os.chmod(d, 0o755)
        if actions:
            self.install_actions()
        shutil.copy(os.path.join(REPO, "polkit", "50-fcnetd.rules"), self.vendor)
        for name, text in (rules or {}).items():
            self.set_rule(name, text)
        self.log = os.path.join(self.dir, "polkitd.log")
        self.proc: subprocess.Popen | None = None

    def install_actions(self) -> None:
        """Copies the project's .policy in (polkitd watches the directory)."""
        src = os.path.join(REPO, "polkit", "org.fcnetd.network1.policy")
        tmp = os.path.join(self.actions, ".new")
        shutil.copy(src, tmp)
        os.chmod(tmp, 0o644)
        os.rename(tmp, os.path.join(self.actions, os.path.basename(src)))

    def set_rule(self, name: str, text: str) -> None:
        """Writes (or replaces, atomically) an admin's rules file."""
        tmp = os.path.join(self.admin, f".{name}.new")
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.rename(tmp, os.path.join(self.admin, name))

    def start(self) -> "Polkitd":
        binds = {**self.users.binds(), ACTIONS: self.actions, VENDOR_RULES: self.vendor, ADMIN_RULES: self.admin}
        # polkitd starts as root and changes to user polkitd itself (Debian's
        # unit has no User=); it finds the bus through this variable.
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(in_private_mounts(binds, [POLKITD]), stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=subprocess.STDOUT,
                                     env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address})
        wait_for(lambda: self.on_bus() or self.proc.poll() is not None, timeout=20,
                 what="polkitd to own org.freedesktop.PolicyKit1")
        if self.proc.poll() is not None:
            raise AssertionError(f"polkitd exited with {self.proc.returncode}: {self.output()}")
        return self

    def on_bus(self) -> bool:
        async def go():
            conn = await connect(self.bus.address)
            try:
                return await polkit.authority_present(conn)
            finally:
                conn.disconnect()
        return asyncio.run(go())

    def check(self, bus_name: str, action: str) -> bool:
        """Asks polkit directly (as root) whether the connection `bus_name` holds `action`."""
        async def go():
            conn = await connect(self.bus.address)
            try:
                return await polkit.is_authorized(conn, bus_name, action)
            finally:
                conn.disconnect()
        return asyncio.run(go())

    def knows(self, action: str) -> bool:
        async def go():
            conn = await connect(self.bus.address)
            try:
                (actions,) = await call(conn, polkit.AUTHORITY, polkit.AUTHORITY_PATH, polkit.AUTHORITY_IFACE,
                                        "EnumerateActions", "s", [""])
                return any(a[0] == action for a in actions)
            finally:
                conn.disconnect()
        return asyncio.run(go())

    def output(self) -> str:
        self.logf.flush()
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        wait_for(lambda: not self.on_bus(), timeout=10, what="polkitd's name to leave the bus")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
