"""The fault tier's hands: several D-Bus connections sending calls (alone or
all at once), and a host (namespace, bus, config file, fcnetd) that can be
reloaded, restarted and killed, and read back from the daemon and the kernel."""

from __future__ import annotations

import asyncio
import os
import signal

from fcnetd.bus import DBusError, Variant, call, connect, unwrap
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH
from fcnetd.testbus import PrivateBus
from tests.system.harness import Daemon, Netns, wait_for

from .model import Op, Outcome

CALL_TIMEOUT = 30.0
START_TIMEOUT = 60.0  # READY=1 on a loaded shared machine can take far longer than usual
RELOADED = "config reloaded: bridges"  # fcnetd's log line at the end of every reload (the audit's "config reloaded: action=" comes before)


def _wire(op: Op) -> tuple[str, list]:
    """An Op's D-Bus signature and body (the model keeps arguments in its own order)."""
    a = op.args
    if op.method == "CreateNetwork":
        return "ssqa{sv}", [a[0], a[1], a[2], {}]
    if op.method == "AttachVm":
        return "ssqa{sv}", [a[0], a[2], a[3], {"nic": Variant("s", a[1])}]
    if op.method == "CreateTap":
        return "ssa{sv}", [a[0], a[1], {}]
    if op.method in ("DetachVm", "DeleteTap"):
        return "ss", list(a)
    if op.method == "DeleteNetwork":
        return "s", list(a)
    raise ValueError(op.method)


class Callers:
    """`count` client connections on one event loop of their own, so a test
    written as plain steps can still fire calls concurrently."""

    def __init__(self, address: str, count: int = 3):
        self.loop = asyncio.new_event_loop()
        self.conns = [self.run(connect(address)) for _ in range(count)]

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _call(self, conn: int, member: str, signature: str = "", body: list | None = None,
                    path: str = MANAGER_PATH, interface: str = MANAGER_IFACE):
        reply = call(self.conns[conn], BUS_NAME, path, interface, member, signature, body or [])
        return unwrap(await asyncio.wait_for(reply, CALL_TIMEOUT))

    async def _outcome(self, op: Op) -> Outcome:
        signature, body = _wire(op)
        try:
            reply = await self._call(op.conn % len(self.conns), op.method, signature, body)
        except DBusError as e:
            return Outcome(False, error=e.type, text=e.text or "")
        return Outcome(True, reply[0] if reply else None)

    def send(self, op: Op) -> Outcome:
        return self.run(self._outcome(op))

    def burst(self, ops: list[Op]) -> list[Outcome]:
        """All at once; the answers in the order of `ops`."""
        async def all_of():
            return await asyncio.gather(*(self._outcome(op) for op in ops))
        return self.run(all_of())

    def ask(self, member: str, signature: str = "", *body, conn: int = 0, **where):
        return self.run(self._call(conn, member, signature, list(body), **where))

    def daemon_view(self) -> dict:
        """What the daemon says: ListNetworks by name, each network's VMs and
        TAPs from GetNetwork, and the manager's TapCount."""
        listed = self.ask("ListNetworks", "a{sv}", {})[0]
        view = {"listed": {}, "vms": {}, "taps": {}}
        for n in listed:
            name = n["Name"]
            view["listed"][name] = (n["Bridge"], n["Vlan"], n["Origin"], n["VmCount"], n["Status"], n["Path"])
            detail = self.ask("GetNetwork", "s", name)[0]
            view["vms"][name] = {(v["VmId"], v["Nic"], v["Tap"], v["State"]) for v in detail["Vms"]}
            view["taps"][name] = sorted(detail["Taps"])
        props = self.ask("GetAll", "s", MANAGER_IFACE, interface="org.freedesktop.DBus.Properties")[0]
        view["tap_count"] = props["TapCount"]
        return view

    def close(self) -> None:
        for c in self.conns:
            c.disconnect()
        self.loop.run_until_complete(asyncio.sleep(0))  # let the disconnects run
        self.loop.close()


def config_text(allowed: set[str]) -> str:
    tables = "".join(f"[bridges.{b}]\ncreate = true\n\n" for b in sorted(allowed))
    return f'[daemon]\nhost = "node1"\n\n{tables}'


class Host:
    """A namespace with its own bus and one fcnetd, whose config file the test
    rewrites and whose process it reloads, restarts and kills."""

    def __init__(self, workdir: str, allowed: set[str], state_dir: str | None = None):
        self.ns = Netns()
        self.bus = PrivateBus().start()
        self.config = os.path.join(workdir, "fcnetd.toml")
        self.state_dir = state_dir or os.path.join(workdir, "state")
        self.daemon: Daemon | None = None
        self.write_config(allowed)

    def start(self) -> Daemon:
        self.daemon = Daemon(self.ns, self.bus, self.state_dir, self.config).start(timeout=START_TIMEOUT)
        return self.daemon

    def restart(self, kill: bool) -> Daemon:
        if kill:
            self.daemon.kill9()
        else:
            code = self.daemon.stop()
            assert code == 0, f"fcnetd exited with {code} on SIGTERM: {self.daemon.output()[-2000:]}"
        return self.start()

    def write_config(self, allowed: set[str]) -> None:
        """Replaces the file as an admin's tool would (write aside, rename)."""
        tmp = self.config + ".new"
        with open(tmp, "w") as f:
            f.write(config_text(allowed))
        os.rename(tmp, self.config)

    def reloads(self) -> int:
        return self.daemon.output().count(RELOADED)

    def reconfigure(self, allowed: set[str]) -> None:
        """Rewrites the config and waits until the daemon has reloaded it
        (it watches the file)."""
        before = self.reloads()
        self.write_config(allowed)
        wait_for(lambda: self.reloads() > before, timeout=15, what="the config change to be reloaded")

    def sighup(self, during=None):
        """Sends SIGHUP, runs during() (if given) while the reload may still
        be going on, and waits until the reload is done."""
        before = self.reloads()
        self.daemon.proc.send_signal(signal.SIGHUP)
        result = during() if during else None
        wait_for(lambda: self.reloads() > before, timeout=15, what="the reload after SIGHUP")
        return result

    def kernel_view(self) -> dict:
        """TUN/TAP devices (name -> ifalias, master, up) and bridges, from `ip -d -j link`."""
        taps, bridges = {}, set()
        for link in self.ns.links():
            kind = link.get("linkinfo", {}).get("info_kind")
            if kind == "tun" or link["ifname"].startswith("vmtap"):
                taps[link["ifname"]] = (link.get("ifalias", ""), link.get("master", ""), "UP" in link["flags"])
            elif kind == "bridge":
                bridges.add(link["ifname"])
        return {"taps": taps, "bridges": bridges}

    def close(self) -> None:
        try:
            if self.daemon is not None:
                self.daemon.stop()
        finally:
            self.bus.stop()
            self.ns.delete()
