"""One fcnetd per host, seen over D-Bus: calls, plus a mirror of its network
list that the daemon's signals keep current, so a page of 4,094 networks is
filtered, sorted and sliced in memory instead of fetched whole per request."""

from __future__ import annotations

import asyncio
import logging

from fcnetd.bus import DBusError, MessageType, call, connect, unwrap
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE
from fcnetd.schema import LISTED, from_dbus

log = logging.getLogger("fcnetd-webui.hosts")
RESYNC_SECONDS = 300  # a safety net; signals keep the mirror current


def _entry(props: dict, host: str) -> dict:
    """A ListNetworks entry or a network's properties, as the mirror keeps it."""
    return {**from_dbus(props, LISTED), "host": host, "path": props.get("Path", "")}


class Host:
    def __init__(self, label: str, bus: str, on_change):
        self.label, self.bus_address = label, bus
        self.name = label
        self.conn = None
        self.networks: dict[str, dict] = {}
        self.by_path: dict[str, str] = {}
        self.error = ""
        self._on_change = on_change
        self._task = None

    async def start(self) -> None:
        self.conn = await connect(self.bus_address)
        self.conn.add_message_handler(self._on_message)
        rules = [f"type='signal',sender='{BUS_NAME}',path_namespace='{MANAGER_PATH}'",
                 f"type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',arg0='{BUS_NAME}'"]
        for rule in rules:
            await call(self.conn, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                       "AddMatch", "s", [rule])
        await self.resync()
        self._task = asyncio.get_running_loop().create_task(self._resync_forever())

    async def m(self, member: str, signature: str = "", *body):
        return unwrap(await call(self.conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, member, signature, list(body)))

    async def resync(self) -> None:
        try:
            (host,) = await call(self.conn, BUS_NAME, MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
                                 "ss", [MANAGER_IFACE, "Host"])
            self.name = self.label or host.value
            (items,) = await self.m("ListNetworks", "a{sv}", {})
            self.networks = {p["Id"]: _entry(p, self.name) for p in items}
            self.by_path = {e["path"]: e["id"] for e in self.networks.values()}
            self.error = ""
        except DBusError as e:
            self.error = explain(e)
            log.warning("host %s: %s", self.label or self.bus_address, e.text)
        self._on_change({"host": self.name, "kind": "resync"})

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            await self.resync()

    def _on_message(self, msg):
        if msg.message_type != MessageType.SIGNAL:
            return None
        if msg.member == "NameOwnerChanged":
            asyncio.get_running_loop().create_task(self.resync())  # fcnetd restarted
        elif msg.member == "InterfacesAdded":
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
                for prop, key in (("VmCount", "vm_count"), ("Status", "status")):
                    if prop in changed:
                        entry[key] = changed[prop]
                self._on_change({"host": self.name, "kind": "changed", "id": entry["id"]})
        return None

    def close(self) -> None:
        if self._task:
            self._task.cancel()
        if self.conn:
            self.conn.disconnect()


def explain(e: DBusError) -> str:
    """A D-Bus error as a person should read it."""
    if (e.type or "").endswith(".AccessDenied"):
        return ("access denied by fcnetd (its bus policy or polkit): the web UI's user must be in group fcnet "
                "or hold polkit action org.fcnetd.network1.manage")
    if (e.type or "") in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return "fcnetd is not running on this host's bus"
    return e.text


__all__ = ["Host", "DBusError", "explain"]
