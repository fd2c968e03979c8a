"""One fcnetd per host, seen over D-Bus: calls, plus a mirror of its network
list that the daemon's signals keep current, so a page of 4,094 networks is
filtered, sorted and sliced in memory instead of fetched whole per request.

Each host lives on its own task and never holds up another, nor the web
UI's start: it connects (a local bus, or a remote host's system bus over
ssh: fcnetd/sshbus.py), fills the mirror with a full list, then follows
signals. A network's current traffic rates are not signalled (they change
every few seconds): while a host is followed its list is read again every
RATES_SECONDS for them alone. When the connection drops, fcnetd leaves the bus or a list fails,
the host is marked unavailable with the reason and when it was last seen,
its mirror is emptied (a list that can no longer be vouched for is not
shown), calls to it fail at once, and the task tries again after a capped,
jittered backoff; a host that returns is listed in full again before its
signals are followed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time

from fcnetd import sshbus
from fcnetd.bus import DBusError, MessageType, call, connect, unwrap
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE
from fcnetd.schema import LISTED, from_dbus

log = logging.getLogger("fcnetd-webui.hosts")
RESYNC_SECONDS = 300  # a safety net; signals keep the mirror current
RATES_SECONDS = 10.0  # fcnetd's traffic history has one sample per 10 s
DRIFT_SHOWN_SECONDS = 3600  # how long a network shows the drift repaired on it
RATES = (("ReceiveRate", "receive_rate"), ("TransmitRate", "transmit_rate"))
CALL_SECONDS = 10.0  # a host slower than this is answered for: "did not answer"
CONNECT_SECONDS = sshbus.CONNECT_SECONDS
BACKOFF_FIRST, BACKOFF_CAP = 0.5, 8.0  # seconds between tries of a host that is down
FCNETD_GONE = "fcnetd is not running on this host's bus"
RULES = [f"type='signal',sender='{BUS_NAME}',path_namespace='{MANAGER_PATH}'",
         f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{BUS_NAME}'"]


def _entry(props: dict, host: str) -> dict:
    """A ListNetworks entry or a network's properties, as the mirror keeps it
    (rates only from an fcnetd that keeps traffic history)."""
    entry = {**from_dbus(props, LISTED), "host": host, "path": props.get("Path", "")}
    entry.update({key: props[prop] for prop, key in RATES if prop in props})
    return entry


def _names(text: str, name: str) -> bool:
    """Whether `text` names `name` as a whole interface or network name."""
    return bool(name) and re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", text) is not None


def drift_targets(networks: dict[str, dict], what: str, detail: str) -> list[str]:
    """The ids of the networks a DriftDetected is about. The signal names
    devices and networks in its words, not by id: the networks it names (by
    name or id) when it names any (a TAP put back names its VM's network),
    else every network on a bridge it names (a bridge set up again)."""
    text = f"{what} {detail}"
    named = [i for i, n in networks.items() if _names(text, n["name"]) or _names(text, i)]
    if named:
        return named
    return [i for i, n in networks.items() if _names(text, n["bridge"])]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Unavailable(Exception):
    """A call to a host that is down, or that did not answer in time. `code`
    is the D-Bus error's short name when fcnetd itself refused (AccessDenied)."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class Backoff:
    """Doubling waits from BACKOFF_FIRST up to BACKOFF_CAP, each drawn from
    its upper half, so that hosts lost together do not retry in step."""

    def __init__(self):
        self.delay = BACKOFF_FIRST

    def next(self) -> float:
        delay, self.delay = self.delay, min(BACKOFF_CAP, self.delay * 2)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class _LocalLink:
    """A bus on this machine, shaped like sshbus.SshBus."""

    def __init__(self, conn):
        self.conn = conn

    async def lost(self) -> str:
        try:
            await self.conn.wait_for_disconnect()
            return "the bus connection closed"
        except Exception as e:
            return f"the bus connection broke ({str(e) or type(e).__name__})"

    async def close(self) -> None:
        self.conn.disconnect()


class Host:
    def __init__(self, label: str, where, on_change):
        """where: a local bus ('system' or an address) or an sshbus.SshTarget."""
        self.label, self.where = label, where
        self.name = label
        self.conn = None
        self.networks: dict[str, dict] = {}
        self.by_path: dict[str, str] = {}
        self.available = False
        self.error = "not connected yet"
        self.code = ""
        self.last_seen = ""  # when it last answered, or was last known to be up
        self.since = ""  # when it became unavailable
        self._on_change = on_change
        self._wake = asyncio.Event()
        self._held: list | None = None  # signals that came while a full list was on its way
        self.tried = asyncio.Event()  # set once the first try has ended, either way
        self.drifts: dict[str, tuple[float, dict]] = {}  # network id -> (when, the last drift repaired on it)
        self.has_rates = False  # whether this host's fcnetd reports traffic rates

    @property
    def via(self) -> str:
        return f"ssh {self.where}" if isinstance(self.where, sshbus.SshTarget) else "local bus"

    def status(self) -> dict:
        return {"name": self.name, "available": self.available, "error": self.error, "via": self.via,
                "last_seen": self.last_seen, "since": self.since}

    def unavailable_text(self) -> str:
        seen = f"; last seen {self.last_seen}" if self.last_seen else "; not seen since the web UI started"
        return f"host {self.name} is unavailable: {self.error}{seen}"

    # -- the host's life --------------------------------------------------
    async def run(self) -> None:
        """Forever: connect, follow, and after a loss wait and connect again."""
        backoff = Backoff()
        while True:
            try:
                link = await self._open()
            except Exception as e:  # refused, timed out, a host key or login rejected, no bridge
                self._down(getattr(e, "text", None) or str(e) or type(e).__name__)
            else:
                try:
                    await self._follow(link, backoff)
                finally:
                    self.conn = None
                    with contextlib.suppress(Exception):
                        await link.close()
            self.tried.set()
            await asyncio.sleep(backoff.next())

    async def _open(self):
        if isinstance(self.where, sshbus.SshTarget):
            return await sshbus.connect(self.where)
        return _LocalLink(await asyncio.wait_for(connect(self.where), CONNECT_SECONDS))

    async def _follow(self, link, backoff: Backoff) -> None:
        """One connection: match rules, a full list, then signals, until it is lost.
        A list that fails leaves the host unavailable and is tried again
        after a backoff, or as soon as fcnetd takes its name."""
        self.conn = link.conn
        self.conn.add_message_handler(self._on_message)
        lost = asyncio.get_running_loop().create_task(link.lost())
        rates = asyncio.get_running_loop().create_task(self._follow_rates())
        try:
            for rule in RULES:
                await self._timed(call(self.conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                       "org.freedesktop.DBus", "AddMatch", "s", [rule]))
            while not lost.done():
                self._wake.clear()
                try:
                    await self._timed(self.resync())
                    backoff.reset()
                    pause = RESYNC_SECONDS
                except (DBusError, Unavailable) as e:
                    self._down(explain(e) if isinstance(e, DBusError) else str(e), _code(e))
                    pause = backoff.next()
                self.tried.set()
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait([lost, waker], timeout=pause, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
            self._down(lost.result())
        except Exception as e:  # the connection broke under a call: its own reason is the better one
            self._down(await lost if await _briefly(lost) else (str(e) or type(e).__name__))
        finally:
            lost.cancel()
            rates.cancel()

    async def _follow_rates(self) -> None:
        """The networks' current rates, every RATES_SECONDS, while an fcnetd
        that has them answers (the rest of each entry is the signals' to keep)."""
        while True:
            await asyncio.sleep(RATES_SECONDS)
            if not (self.available and self.has_rates):
                continue
            try:
                (items,) = unwrap(await self._timed(call(self.conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE,
                                                         "ListNetworks", "a{sv}", [{}])))
            except (DBusError, Unavailable):
                continue  # a host that is down is noticed by the main loop; old rates are kept meanwhile
            for props in items:
                entry = self.networks.get(props.get("Id"))
                if entry is not None:
                    entry.update({key: props[prop] for prop, key in RATES if prop in props})
            self._on_change({"host": self.name, "kind": "rates"})

    async def _timed(self, aw):
        try:
            return await asyncio.wait_for(aw, CALL_SECONDS)
        except asyncio.TimeoutError:
            raise Unavailable(f"no answer within {CALL_SECONDS:g} s") from None

    async def resync(self) -> None:
        """A full list replaces the mirror; signals that arrived meanwhile are
        applied after it, in order (each is true of a moment no earlier than
        the one before it, so the last word is the newest)."""
        self._held = []
        try:
            (host,) = await call(self.conn, BUS_NAME, MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
                                 "ss", [MANAGER_IFACE, "Host"])
            self.name = self.label or host.value
            (items,) = unwrap(await call(self.conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListNetworks",
                                         "a{sv}", [{}]))
            self.networks = {p["Id"]: _entry(p, self.name) for p in items}
            self.has_rates = any("ReceiveRate" in p for p in items)
            self.drifts = {i: d for i, d in self.drifts.items() if i in self.networks}
            self.by_path = {e["path"]: e["id"] for e in self.networks.values()}
            held, self._held = self._held, None
            self._up()
            for msg in held:
                self._take(msg)
        finally:
            self._held = None
        self._on_change({"host": self.name, "kind": "resync"})

    def _up(self) -> None:
        if not self.available:
            log.info("host %s: available (%s)", self.name, self.via)
        self.available, self.error, self.code, self.since = True, "", "", ""
        self.last_seen = _now()

    def _down(self, reason: str, code: str = "") -> None:
        if self.available:
            self.last_seen = _now()  # it was up until this moment
            self.since = _now()
        elif not self.since:
            self.since = _now()
        changed = self.available or reason != self.error
        self.available, self.error, self.code = False, reason, code
        self.networks, self.by_path = {}, {}
        if changed:
            log.warning("host %s (%s): unavailable: %s", self.name or self.label, self.via, reason)
            self._on_change({"host": self.name, "kind": "host"})

    # -- signals ------------------------------------------------------------
    def _on_message(self, msg):
        if msg.message_type == MessageType.SIGNAL:
            if self._held is not None:
                self._held.append(msg)
            else:
                self._take(msg)
        return None

    def _take(self, msg) -> None:
        try:
            self._apply(msg)
        except Exception:  # a signal not as expected: the mirror is in doubt, so list again
            log.exception("host %s: a signal could not be applied; listing again", self.name)
            self._wake.set()

    def _apply(self, msg) -> None:
        if msg.member == "NameOwnerChanged":
            if msg.body[2]:  # fcnetd (re)started: list it all again
                self._wake.set()
            else:
                self._down(FCNETD_GONE, "ServiceUnknown")
            return
        if not self.available:  # nothing is shown; the next full list brings it all
            return
        self.last_seen = _now()
        if msg.member == "InterfacesAdded":
            path, ifaces = msg.body
            if NETWORK_IFACE in ifaces:
                props = unwrap(ifaces[NETWORK_IFACE])
                props["Path"] = path
                entry = _entry(props, self.name)
                self.networks[entry["id"]] = entry
                self.by_path[path] = entry["id"]
                self._on_change({"host": self.name, "kind": "added", "id": entry["id"]})
        elif msg.member == "InterfacesRemoved":
            path, ifaces = msg.body
            net_id = self.by_path.pop(path, None)
            if net_id and NETWORK_IFACE in ifaces:
                self.networks.pop(net_id, None)
                self._on_change({"host": self.name, "kind": "removed", "id": net_id})
        elif msg.member == "PropertiesChanged" and msg.path in self.by_path:
            iface, changed, _invalidated = msg.body
            entry = self.networks.get(self.by_path[msg.path])
            if entry is not None and iface == NETWORK_IFACE:
                changed = unwrap(changed)
                for prop, key in (("VmCount", "vm_count"), ("Status", "status"), *RATES):
                    if prop in changed:
                        entry[key] = changed[prop]
                self._on_change({"host": self.name, "kind": "changed", "id": entry["id"]})
        elif msg.member == "DriftDetected" and msg.interface == MANAGER_IFACE:
            what, detail = msg.body
            drift = {"what": what, "detail": detail, "time": _now()}
            ids = drift_targets(self.networks, what, detail)
            for net_id in ids:
                self.drifts[net_id] = (time.monotonic(), drift)
            self._on_change({"host": self.name, "kind": "drift", "ids": ids, **drift})

    def drift_of(self, net_id: str) -> dict | None:
        """The last drift repaired on a network, while it is recent enough to show."""
        at, drift = self.drifts.get(net_id, (0.0, None))
        return drift if drift is not None and time.monotonic() - at < DRIFT_SHOWN_SECONDS else None

    # -- calls ----------------------------------------------------------------
    async def m(self, member: str, signature: str = "", *body):
        """A manager call; Unavailable at once when the host is down, or when
        it does not answer within CALL_SECONDS; DBusError as fcnetd answers."""
        if not self.available or self.conn is None:
            raise Unavailable(self.unavailable_text(), self.code)
        reply = await self._timed(call(self.conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, signature,
                                       list(body)))
        self.last_seen = _now()
        return unwrap(reply)


async def _briefly(task) -> bool:
    """Whether `task` ends within a second (a call failing as its connection breaks)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 1)
    return task.done()


def _code(e: Exception) -> str:
    return (getattr(e, "type", "") or "").rsplit(".", 1)[-1] if isinstance(e, DBusError) else ""


def explain(e: DBusError) -> str:
    """A D-Bus error as a person should read it."""
    if (e.type or "").endswith(".AccessDenied"):
        return ("access denied by fcnetd (its bus policy or polkit): the web UI's user must be in group fcnet "
                "or hold polkit action org.fcnetd.network1.manage")
    if (e.type or "") in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return FCNETD_GONE
    return e.text


__all__ = ["Host", "DBusError", "Unavailable", "explain"]
