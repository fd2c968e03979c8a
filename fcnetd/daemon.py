"""fcnetd: the privileged daemon. Start-up order matters: the registry lock
and the bus name are held before anything in the kernel is read for changes
or touched (a second daemon started by mistake leaves every device as it
found it), and READY=1 is sent only once the kernel is reconciled."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
import time
from dataclasses import replace

from . import __version__, config as configmod
from .access import AccessGate
from .audit import Audit
from .bus import connect, request_name
from .engine import Engine
from .errors import ConfigInvalid, FcnetError
from .names import BUS_NAME
from .nat import NatPlane
from .netlink import LinkEvent, LinkMonitor, Netlink, PortVlans, bridge_state_of
from .notify import Notifier
from .registry import Lock, Registry, RegistryError, parse as parse_registry
from .service import Manager
from .watch import FileWatcher

log = logging.getLogger("fcnetd")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fcnetd", description="Host networking daemon for Firecracker microVMs")
    p.add_argument("--config", help=f"config file (default {configmod.DEFAULT_PATH}, optional)")
    p.add_argument("--bus", default="system", help="system, session or a D-Bus address (default system)")
    p.add_argument("--state-dir", help="where the registry lives (overrides the config)")
    p.add_argument("--metrics", help="HOST:PORT for Prometheus metrics, or off (overrides the config)")
    p.add_argument("--version", action="version", version=f"fcnetd {__version__}")
    return p.parse_args(argv)


class Daemon:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        self.config = self._load_config()
        self.lock = Lock(self.config.state_dir)
        self.registry = Registry(self.config.state_dir)
        self.netlink = Netlink()
        self.engine = Engine(self.config, self.registry, self.netlink,
                             nat=NatPlane(self.netlink, self.config.state_dir))
        self.audit = Audit()
        self.engine.on_change = self.audit.record
        self.conn = None
        self.gate = None
        self.metrics = None
        self.refresher = None
        self._tasks: set[asyncio.Task] = set()
        self._reload_lock = asyncio.Lock()
        self.exit_code = 0

    def _load_config(self):
        cfg = configmod.load(self.args.config)
        overrides = {}
        if self.args.state_dir:
            overrides["state_dir"] = self.args.state_dir
        if self.args.metrics:
            if self.args.metrics != "off":
                configmod.parse_listen(self.args.metrics, "--metrics")
            overrides["metrics"] = self.args.metrics
        if overrides:
            cfg = replace(cfg, **overrides)
        return cfg

    def status_line(self) -> str:
        return (f"{len(self.registry.networks)} networks, {len(self.registry.attachments)} attachments, "
                f"{len(self.engine.taps)} TAPs")

    async def start(self) -> None:
        os.makedirs(self.config.state_dir, mode=0o700, exist_ok=True)
        self.lock.acquire()
        for skipped in self.registry.load():
            log.warning("registry: skipped %s", skipped)
        if not os.path.exists(self.registry.path):
            self.registry.save_now()
        self.registry.last_write = os.stat(self.registry.path)
        self.conn = await connect(self.args.bus)
        manager = Manager(self.engine, self.conn)
        self.gate = AccessGate(self.conn, manager.method_signatures())
        self.gate.install(hold=True)  # until the objects are exported
        manager.install_fast_paths()  # after the gate: it checks callers first
        self.manager = manager
        self.engine.on_drift = manager.drift_detected
        manager.reload_config = self.reload
        await self.netlink.open()
        await self.engine.nat.use_systemd(self.conn)
        # Subscribed before the kernel is read, so no change made meanwhile is lost.
        monitor = LinkMonitor().open()
        # Calls that arrive once the name is ours wait at the engine's gate
        # until the kernel is reconciled.
        async with self.engine.gate.exclusive():
            if not await request_name(self.conn, BUS_NAME):
                raise SystemExit(f"fcnetd: the bus name {BUS_NAME} is owned by another process")
            # Exported only once the name is ours: dbus-fast broadcasts
            # InterfacesAdded (every network's properties) for each export,
            # and the bus policy keeps fcnetd's signals from outsiders by
            # that name, which it matches only once owned. Calls that came
            # meanwhile were held by the access gate.
            manager.export_all()
            self.gate.open()
            began = time.monotonic()
            result = await self.engine.reconcile_exclusive()
            took = time.monotonic() - began
        # Its time, for admins with many TAPs (and the kernel tier's linearity check).
        log.info("reconciled in %.2f s: %s", took, result or "nothing to do")
        self._start_metrics()
        loop = asyncio.get_running_loop()
        self.watcher = FileWatcher(loop, self._file_changed)
        self.watcher.watch(self.registry.path)
        if self.config.path:
            self.watcher.watch(self.config.path)
        self._spawn(monitor.run(self._link_event))
        self._spawn(self._bus_lost())
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_quietly("SIGHUP")))
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        await self.gate.settled()  # the log has said who authorizes before it says ready
        self.notifier.ready(self.status_line())
        self.notifier.start_watchdog()
        log.info("fcnetd %s ready on %s: %s", __version__, self.args.bus, self.status_line())

    def _start_metrics(self) -> None:
        """The once-a-second snapshot always runs (it feeds the traffic
        history); the HTTP side only where metrics are configured."""
        from .metrics import MetricsServer, Refresher
        if self.config.metrics != "off":
            host, port = configmod.parse_listen(self.config.metrics, "metrics")
            if os.environ.get("INVOCATION_ID") and not _loopback(host):
                # The shipped unit's IPAddressDeny= would drop a scraper's packets without a word.
                log.warning("metrics listen on %s: fcnetd.service allows IP only with localhost and private "
                            "ranges (IPAddressAllow=); a scraper elsewhere needs a drop-in allowing it", host)
            self.metrics = MetricsServer(host, port)
            self.metrics.start()
        self.refresher = Refresher(self, self.metrics.exposition if self.metrics else None)
        self.refresher.start()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- reload and watching ----------------------------------------------------
    async def reload(self, trigger: str = "SIGHUP") -> None:
        """SIGHUP, a config write or the Reload call. Serialized, and always
        ends in READY=1 with a STATUS= line, whatever happened; then raises
        ConfigInvalid if the config file was not taken (the old one stays)
        or what else failed, for the Reload call to answer with."""
        async with self._reload_lock:
            self.notifier.reloading()
            status = ""
            try:
                await self._reload(trigger)
            except ConfigInvalid as e:
                status = f"config not reloaded ({e}); "
                raise
            except Exception as e:
                log.exception("reload failed")
                status = f"reload failed ({e}); "
                raise
            finally:
                self.notifier.reloaded(status + self.status_line())

    async def _reload_quietly(self, trigger: str) -> None:
        """reload() where nobody is there to answer: the log and STATUS= said it."""
        try:
            await self.reload(trigger)
        except Exception:
            pass

    async def _reload(self, trigger: str) -> None:
        try:
            new = self._load_config()
        except configmod.ConfigError as e:
            log.error("config not reloaded, keeping the old one: %s", e)
            raise ConfigInvalid(f"{e}; the config in force stays") from None
        if new.state_dir != self.config.state_dir:
            log.warning("state_dir changes need a restart; keeping %s", self.config.state_dir)
            new = replace(new, state_dir=self.config.state_dir)
        self.config = self.engine.config = new
        self.gate.reload()
        # Recorded once the new config is in force; the drift its reconcile repairs follows.
        self.audit.record("config-reloaded", by_daemon=True, trigger=trigger, config=new.path or None,
                          bridges=",".join(sorted(new.bridges)))
        await self.engine.reconcile()
        log.info("config reloaded: bridges %s", ", ".join(sorted(new.bridges)) or "none")

    def _file_changed(self, path: str) -> None:
        if path == self.registry.path:
            self._spawn(self._registry_changed())
        elif path == self.config.path:
            self._spawn(self._reload_quietly("config file changed"))

    async def _registry_changed(self) -> None:
        # Under the snapshot lock: a write of our own may have renamed the
        # file but not yet recorded its identity, and a hand edit must not
        # land between a write and its bookkeeping.
        async with self.registry.snapshot_lock:
            await self._registry_changed_locked()

    async def _registry_changed_locked(self) -> None:
        path = self.registry.path
        if self.registry.is_own_file():
            return
        if not os.path.exists(path):
            log.warning("%s was deleted; writing it again from memory", path)
            await self._write_back()
            return
        try:
            with open(path, "rb") as f:
                snap = parse_registry(f.read(), path)
        except RegistryError as e:
            aside = f"{path}.bad-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}"
            os.link(path, aside)  # not a rename: registry.json never goes missing, it is replaced below
            log.error("hand edit rejected (%s); kept it as %s and wrote the daemon's state back", e, aside)
            await self._write_back()
            return
        log.info("registry edited by hand; loading it")
        for skipped in await self.engine.load_snapshot(snap):
            log.warning("hand edit: skipped %s", skipped)

    async def _write_back(self) -> None:
        """registry.json again from what is durable, with nothing in flight."""
        async with self.engine.gate.exclusive():
            self.registry.save_now()

    async def _bus_lost(self) -> None:
        """Without its bus the daemon is useless: exit so systemd restarts it."""
        try:
            await self.conn.wait_for_disconnect()
        except Exception:  # disconnected with an error: the same for us
            pass
        if not self.stopping.is_set():
            log.error("lost the D-Bus connection; exiting")
            self.exit_code = 1
            self.stopping.set()

    def _link_event(self, ev: LinkEvent | PortVlans | None) -> None:
        if ev is None:  # the kernel dropped events: read the state again
            log.warning("link events were lost; reading the bridges and TAPs again")
            self._spawn(self.engine.resync())
        elif isinstance(ev, PortVlans):
            self.engine.port_vlans_changed(ev.ifname, ev.master, ev.vlans)
        elif ev.ifname in self.config.bridges:
            repair = self.engine.bridge_changed(ev.ifname, bridge_state_of(ev))
            if repair is not None:
                self._spawn(repair())
        elif ev.event == "RTM_DELLINK":
            self.engine.tap_vanished(ev.ifname)
        else:
            self.engine.tap_changed(ev.ifname, ev.up, ev.carrier, ev.master)

    async def run(self) -> None:
        await self.start()
        await self.stopping.wait()
        self.notifier.stopping()
        # Calls in flight finish and are saved, a hand edit being read is taken.
        async with self.registry.snapshot_lock, self.engine.gate.exclusive():
            try:
                self.registry.save_now()  # a stopped daemon leaves registry.json current
            except OSError as e:
                log.warning("registry journal not folded at stop (%s); it is replayed at the next start", e)
            # Its dnsmasq processes end with the daemon (their leases stay on
            # disk); gateways and the nft table stay, so VMs keep their
            # internet until the next start adopts them.
            await self.engine.nat.close()
        log.info("stopping; TAPs stay in the kernel and will be adopted at the next start")

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.refresher is not None:
            self.refresher.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.conn is not None:
            self.conn.disconnect()
        self.netlink.close()
        self.registry.close()
        self.audit.close()
        self.lock.release()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"  # any other name may resolve anywhere


def main(argv=None) -> int:
    logging.basicConfig(level=os.environ.get("FCNETD_LOG", "INFO"),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        daemon = Daemon(args)
    except configmod.ConfigError as e:
        print(f"fcnetd: {e}", file=sys.stderr)
        return 1

    async def runner():
        try:
            await daemon.run()
        finally:
            daemon.close()

    try:
        asyncio.run(runner())
    except (RegistryError, FcnetError) as e:
        print(f"fcnetd: {e}", file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"fcnetd: {e}", file=sys.stderr)
        return 1
    return daemon.exit_code


if __name__ == "__main__":
    sys.exit(main())
