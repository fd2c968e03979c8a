"""What a network shows, written once: each field's D-Bus property name, its
D-Bus type, where it appears, and how to read it from the engine.

The Network object's properties, ListNetworks entries, GetNetwork, Describe,
the web UI's mirror and the metric labels are all derived from these tables,
so a new field is one line here. This module imports nothing of the engine
(the web UI uses it and must not pull in netlink): getters take any object
with the engine's read API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .names import network_path


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass(frozen=True)
class Field:
    prop: str  # the D-Bus name (contract): property and a{sv} key
    sig: str  # its D-Bus type
    get: Callable  # (engine, net) -> value
    listed: bool = True  # in ListNetworks entries (and so in the web UI's mirror)
    exported: bool = True  # a property of the Network object (and so in GetManagedObjects)
    label: str = ""  # the label of fcnetd_network_info, if it is one

    @property
    def key(self) -> str:
        """The field's name in Describe's JSON and in the web UI."""
        return _snake(self.prop)


def vm_count(engine, net) -> int:
    return len(engine.registry.by_network.get(net.id, ()))


NETWORK_FIELDS: tuple[Field, ...] = (
    Field("Id", "s", lambda e, n: n.id, label="id"),
    Field("Name", "s", lambda e, n: n.name, label="network"),
    Field("Bridge", "s", lambda e, n: n.bridge, label="bridge"),
    Field("Vlan", "q", lambda e, n: n.vlan, label="vlan"),
    Field("Type", "s", lambda e, n: n.kind),
    Field("Host", "s", lambda e, n: n.host, label="host"),
    Field("Created", "s", lambda e, n: n.created),
    Field("Origin", "s", lambda e, n: n.origin, label="origin"),
    Field("Description", "s", lambda e, n: n.description),
    Field("Mode", "s", lambda e, n: n.mode),
    Field("Subnet", "s", lambda e, n: n.subnet),
    Field("Gateway", "s", lambda e, n: n.gateway),
    Field("Dhcp", "b", lambda e, n: n.dhcp),
    Field("VmCount", "u", vm_count),
    Field("Status", "s", lambda e, n: e.status(n)),
    # Bytes per second over the newest traffic sample (traffic.py), 0 when
    # none. They move with traffic, every ten seconds: not properties, so no
    # PropertiesChanged for them; ListNetworks, GetNetwork and Describe show them.
    Field("ReceiveRate", "d", lambda e, n: e.traffic.rate(n.id)[0], exported=False),
    Field("TransmitRate", "d", lambda e, n: e.traffic.rate(n.id)[1], exported=False),
    Field("Vms", "aa{sv}", lambda e, n: vm_rows(e, n), listed=False),
    Field("Taps", "as", lambda e, n: [t.name for t in e.taps_of(n)], listed=False),
    Field("Path", "o", lambda e, n: network_path(n.id), exported=False),
)

# One VM NIC on a network: the entries of the Vms property.
VM_FIELDS: tuple[tuple[str, Callable], ...] = (
    ("VmId", lambda att, tap: att.vm_id),
    ("VmName", lambda att, tap: att.vm_name),
    ("Nic", lambda att, tap: att.nic),
    ("Mac", lambda att, tap: att.mac),
    ("Ip", lambda att, tap: att.ip),
    ("Attached", lambda att, tap: att.attached),
    ("Tap", lambda att, tap: tap.name if tap else ""),
    ("State", lambda att, tap: "running" if tap else "stopped"),
)

LISTED = tuple(f for f in NETWORK_FIELDS if f.listed)
EXPORTED = tuple(f for f in NETWORK_FIELDS if f.exported)
DESCRIBED = tuple(f for f in NETWORK_FIELDS if f.prop != "Path")  # Describe nests networks by position
LABELS = tuple(f for f in NETWORK_FIELDS if f.label)
BY_PROP = {f.prop: f for f in NETWORK_FIELDS}


def vm_rows(engine, net) -> list[dict]:
    """The VM NICs on a network as plain values keyed by D-Bus name."""
    rows = []
    for att in engine.registry.by_network.get(net.id, {}).values():
        tap = engine.taps.get(att.key)
        rows.append({name: get(att, tap) for name, get in VM_FIELDS})
    return rows


def _plain_value(f: Field, value):
    if f.prop == "Vms":
        return [{_snake(k): v for k, v in row.items()} for row in value]
    return value


def plain(engine, net, fields=DESCRIBED) -> dict:
    """A network as JSON-ready values keyed by snake_case name (Describe)."""
    return {f.key: _plain_value(f, f.get(engine, net)) for f in fields}


def from_dbus(props: dict, fields=NETWORK_FIELDS) -> dict:
    """A network's a{sv}, already unwrapped, the same way: for clients."""
    return {f.key: _plain_value(f, props[f.prop]) for f in fields if f.prop in props}
