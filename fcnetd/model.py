"""The data model and the validation of every value that comes from outside.

Rules live here once; the D-Bus layer, the config loader, the registry loader
and the web UI all call these functions, so a rule cannot differ between
entry points. Every rule is a full match (a trailing newline is not a
character the rule allows), and every message names the field and the rule
and shows at most a short excerpt of the value (see excerpt()).
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import NamedTuple

from . import ipam
from .errors import AddressUnavailable, InvalidArgs, excerpt  # excerpt is used from here across fcnetd

IFNAMSIZ = 16  # the kernel's limit, including the terminating NUL
VLAN_MAX = 4094  # 4095 is reserved by 802.1Q
# Interface names fcnetd manages (bridges, uplinks, TAPs) use the same
# characters as network names, because a bridge's name *is* the name of its
# untagged auto network and the stem of its VLAN networks: anything the
# kernel would take beyond these (`+ @ < > & ' "` ...) would make a network
# name the registry loader refuses. The name rule is the narrow one, not the
# kernel's, because names end up in log lines, file paths, shell commands,
# metric labels and HTML; so the interface rule is narrowed to it.
_CHARS = "A-Za-z0-9._-"
CHARS_TEXT = "A-Z a-z 0-9 . _ -"
IFNAME_RULE = f"1-{IFNAMSIZ - 1} characters of {CHARS_TEXT}, starting with a letter or digit"
NAME_RULE = f"1-63 characters of {CHARS_TEXT}, starting with a letter or digit"
ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit"
NIC_RULE = f"1-15 characters of {CHARS_TEXT}, starting with a letter or digit"
HOST_RULE = f"a host name: 1-253 characters of {CHARS_TEXT}, starting with a letter or digit"
_NAME_RE = re.compile(f"[A-Za-z0-9][{_CHARS}]{{0,62}}")
_IFNAME_RE = re.compile(f"[A-Za-z0-9][{_CHARS}]{{0,{IFNAMSIZ - 2}}}")
_IFNAME_CHAR_RE = re.compile(f"[^{_CHARS}]")
_NIC_RE = re.compile(f"[A-Za-z0-9][{_CHARS}]{{0,14}}")
_HOST_RE = re.compile(f"[A-Za-z0-9][{_CHARS}]{{0,252}}")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
# The form str(uuid.uuid4()) writes: ids are compared as strings, so
# "ABC…" and "{abc…}" would be a second id for the same UUID.
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# What now_rfc3339() writes, fraction optional for hand edits.
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")
TIME_RULE = "an RFC 3339 UTC timestamp like 2026-01-02T03:04:05.123456Z"
# fcnetd's own bridges are fcbr + digits (fcbr0 is the default): a TAP taking
# such a name would block the bridge from ever being made.
_FCNETD_BRIDGE_RE = re.compile(r"fcbr[0-9]+")
TAP_PREFIX = "vmtap"
TAG_PREFIX = "fcnetd:"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_ifname(value: object, field_name: str = "bridge") -> str:
    """An interface name fcnetd manages (bridge, uplink, TAP): the kernel's
    dev_valid_name() narrowed to IFNAME_RULE. The message says which part of
    the rule the value breaks, then the whole rule."""
    if not isinstance(value, str) or value == "":
        raise InvalidArgs(field_name, f"must be a non-empty interface name: {IFNAME_RULE}; got {excerpt(value)}")
    if _IFNAME_RE.fullmatch(value):
        return value
    shown = excerpt(value)
    if not value.isascii() or not value.isprintable():
        why = "must be printable ASCII"
    elif len(value) >= IFNAMSIZ:
        why = f"is longer than {IFNAMSIZ - 1} bytes"
    elif value in (".", ".."):
        why = "is not a valid interface name"
    elif bad := _IFNAME_CHAR_RE.search(value):
        why = f"must not contain {bad.group()!r}"
    else:
        why = "must start with a letter or digit"
    raise InvalidArgs(field_name, f"{shown} {why}: an interface name fcnetd manages is {IFNAME_RULE}")


def check_tap_name(value: object, reserved: Collection[str], field_name: str = "tap_name") -> str:
    """A caller-chosen TAP name: an interface name that is not one of
    `reserved` (the config's bridges and uplinks, which fcnetd may have to
    create or enslave later) and does not look like an fcnetd bridge."""
    name = check_ifname(value, field_name)
    if name in reserved:
        raise InvalidArgs(field_name, f"{name!r} names a bridge or uplink in fcnetd's config; "
                                      "a TAP may not take it")
    if _FCNETD_BRIDGE_RE.fullmatch(name):
        raise InvalidArgs(field_name, f"{name!r} looks like an fcnetd bridge (fcbr + digits); "
                                      "a TAP may not take such a name")
    return name


def check_vlan(value: object, field_name: str = "vlan") -> int:
    """0 means untagged; 1-4094 is an 802.1Q VID; 4095 is reserved."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgs(field_name, f"must be an integer: 0 (untagged) or 1-{VLAN_MAX}; got {excerpt(value)}")
    if not 0 <= value <= VLAN_MAX:
        raise InvalidArgs(field_name, f"{excerpt(value)} is out of range: 0 (untagged) or 1-{VLAN_MAX}")
    return value


def _check_pattern(value: object, pattern: re.Pattern, field_name: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidArgs(field_name, f"{excerpt(value)} must be {rule}")
    return value


def check_name(value: object, field_name: str = "name") -> str:
    return _check_pattern(value, _NAME_RE, field_name, NAME_RULE)


def check_id(value: object, field_name: str) -> str:
    return _check_pattern(value, _ID_RE, field_name, ID_RULE)


def check_nic(value: object, field_name: str = "nic") -> str:
    return _check_pattern(value, _NIC_RE, field_name, NIC_RULE)


def check_host(value: object, field_name: str = "host") -> str:
    return _check_pattern(value, _HOST_RE, field_name, HOST_RULE)


def check_uuid(value: object, field_name: str) -> str:
    return _check_pattern(value, _UUID_RE, field_name,
                          "a UUID like 8cb5529a-e8fd-4454-9510-213fde016647 (lower case, with hyphens)")


def check_mac(value: object, field_name: str = "mac") -> str:
    """Returns the MAC in lower case, as it is stored and shown."""
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value.lower()):
        raise InvalidArgs(field_name, f"{excerpt(value)} must look like 02:fc:00:00:00:01")
    return value.lower()


def check_timestamp(value: object, field_name: str) -> str:
    if isinstance(value, str) and _TIME_RE.fullmatch(value):
        try:
            datetime.fromisoformat(value[:19])  # the calendar; strptime costs 10x more per record
            return value
        except ValueError:
            pass  # month 13, February 30th: the same message as any other bad value
    raise InvalidArgs(field_name, f"{excerpt(value)} must be {TIME_RULE}")


def check_description(value: object, field_name: str = "description") -> str:
    if not isinstance(value, str) or len(value) > 256 or not value.isprintable():
        raise InvalidArgs(field_name, f"must be printable text of at most 256 characters; got {excerpt(value)}")
    return value


def check_origin(value: object, field_name: str = "origin") -> str:
    if not isinstance(value, str) or value not in ("auto", "manual"):
        raise InvalidArgs(field_name, f"{excerpt(value)} must be 'auto' or 'manual'")
    return value


def check_uid(value: object, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32 - 1:
        raise InvalidArgs(field_name, f"must be an integer from 0 to 4294967294; got {excerpt(value)}")
    return value


MODES = ("bridge", "nat")


def check_mode(value: object, field_name: str = "mode") -> str:
    if not isinstance(value, str) or value not in MODES:
        raise InvalidArgs(field_name, f"{excerpt(value)} must be 'bridge' (layer 2 only) or 'nat' "
                                      "(fcnetd is the gateway: DHCP, DNS and masquerade)")
    return value


def check_dhcp(value: object, mode: str, field_name: str = "dhcp") -> bool:
    if not isinstance(value, bool):
        raise InvalidArgs(field_name, f"must be true or false; got {excerpt(value)}")
    if value and mode != "nat":
        raise InvalidArgs(field_name, "only a nat network has fcnetd's DHCP server")
    return value


def check_attachment_address(att: "Attachment", net: "Network", others, where: str = "attachment") -> None:
    """An attachment read from the registry, against its network: on a nat
    network it has a MAC and an address that may be had (ipam.allocate's
    rules) and that no other NIC of `others` has; elsewhere no address.
    Errors name `where`.field."""
    try:
        _check_attachment_address(att, net, others)
    except InvalidArgs as e:
        raise _within(where, e) from None


def _check_attachment_address(att: "Attachment", net: "Network", others) -> None:
    if net.mode != "nat":
        if att.ip:
            raise InvalidArgs("ip", f"{att.ip} is set, but network {net.name} is a {net.mode} network; "
                                    "only a nat network has addresses")
        return
    if not att.mac:
        raise InvalidArgs("mac", f"missing: VM NICs on nat network {net.name} have a MAC (their lease's key)")
    if not att.ip:
        raise InvalidArgs("ip", f"missing: VM NICs on nat network {net.name} have an address")
    for other in others:  # canonical strings: equal text is an equal address
        if other.mac == att.mac:
            raise InvalidArgs("mac", f"{att.mac} is also the MAC of VM {other.vm_id} NIC {other.nic} "
                                     f"on network {net.name}")
        if other.ip == att.ip:
            raise InvalidArgs("ip", f"{att.ip} is also the address of VM {other.vm_id} NIC {other.nic} "
                                    f"on network {net.name}")
    try:
        ipam.allocate(net.network, set(), ipam.IPv4Address(att.ip))
    except AddressUnavailable as e:  # the same words, as a record's bad field
        raise InvalidArgs("ip", str(e).removeprefix("ip: ")) from None


def auto_name(bridge: str, vlan: int) -> str:
    return f"{bridge}-vlan-{vlan}" if vlan else bridge


def _fields(d: object, where: str, required: frozenset[str], known: frozenset[str]) -> dict:
    """A record's keys checked against its schema. Unknown keys are refused,
    not ignored: to_dict() would drop them at the next write."""
    if not isinstance(d, dict):
        raise InvalidArgs(where, f"must be a JSON object, got {excerpt(d)}")
    if required <= d.keys() <= known:
        return d
    fields = ", ".join(sorted(known))
    if missing := sorted(required - d.keys()):
        raise InvalidArgs(where, f"missing field {missing[0]!r}; a record has {fields}")
    unknown = [k for k in d if k not in known]
    more = f" … and {len(unknown) - 1} more" if len(unknown) > 1 else ""
    raise InvalidArgs(where, f"unknown field {excerpt(unknown[0])}{more}; a record has {fields}")


def _within(where: str, e: InvalidArgs) -> InvalidArgs:
    """e, its field named inside a record ("networks[3]" + "created"). Built
    only on failure: a field name string per check costs as much as the check
    on a 100,000-record start-up."""
    return InvalidArgs(f"{where}.{e.field}", str(e)[len(e.field) + 2:])


_NETWORK_REQUIRED = frozenset({"id", "name", "bridge", "vlan", "host", "created", "origin"})
_NETWORK_FIELDS = _NETWORK_REQUIRED | {"description", "mode", "subnet", "dhcp"}
_ATTACHMENT_REQUIRED = frozenset({"vm_id", "nic", "network_id", "attached"})
_ATTACHMENT_FIELDS = _ATTACHMENT_REQUIRED | {"vm_name", "mac", "ip"}


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    bridge: str
    vlan: int
    host: str
    created: str
    origin: str  # "auto" | "manual"
    description: str = ""
    # The defaults are a bridge network's, and a record writes these fields
    # only when they differ (to_dict), so a bridge-only registry reads and
    # writes as it did before nat mode.
    mode: str = "bridge"  # "bridge" | "nat"
    subnet: str = ""  # canonical CIDR or ""; a nat network always has one
    dhcp: bool = False  # fcnetd's DHCP server: only on a nat network

    @property
    def kind(self) -> str:
        return "vlan" if self.vlan else "bridge"

    @functools.cached_property
    def network(self) -> ipam.IPv4Network | None:
        return ipam.IPv4Network(self.subnet) if self.subnet else None

    @property
    def gateway(self) -> str:
        """fcnetd's address on a nat network (the subnet's first), else ""."""
        return str(ipam.gateway(self.network)) if self.mode == "nat" else ""

    @classmethod
    def new(cls, name: str, bridge: str, vlan: int, host: str, origin: str,
            description: str = "", mode: str = "bridge", subnet: str = "", dhcp: bool = False) -> "Network":
        return cls(str(uuid.uuid4()), name or auto_name(bridge, vlan), bridge, vlan,
                   host, now_rfc3339(), origin, description, mode, subnet, dhcp)

    @classmethod
    def from_dict(cls, d: object, where: str = "network") -> "Network":
        """A record from the registry (or journal), every field checked by the
        rule the API applies; errors name `where`.field (e.g.
        "networks[3].created") and the rule."""
        d = _fields(d, where, _NETWORK_REQUIRED, _NETWORK_FIELDS)
        try:
            mode = check_mode(d.get("mode", "bridge"))
            subnet = d.get("subnet", "")
            if subnet != "":
                ipam.check_subnet(subnet)
            elif mode == "nat":
                raise InvalidArgs("subnet", "missing: a nat network has a subnet")
            return cls(check_uuid(d["id"], "id"), check_name(d["name"]), check_ifname(d["bridge"]),
                       check_vlan(d["vlan"]), check_host(d["host"]), check_timestamp(d["created"], "created"),
                       check_origin(d["origin"]), check_description(d.get("description", "")),
                       mode, subnet, check_dhcp(d.get("dhcp", False), mode))
        except InvalidArgs as e:
            raise _within(where, e) from None

    def to_dict(self) -> dict:
        # explicit, not dataclasses.asdict(): that deep-copies and is 5x slower
        d = {"id": self.id, "name": self.name, "bridge": self.bridge, "vlan": self.vlan,
             "host": self.host, "created": self.created, "origin": self.origin,
             "description": self.description}
        if self.mode != "bridge":
            d["mode"] = self.mode
        if self.subnet:
            d["subnet"] = self.subnet
        if self.dhcp:
            d["dhcp"] = True
        return d


@dataclass(frozen=True)
class Attachment:
    vm_id: str
    nic: str
    network_id: str
    vm_name: str = ""
    mac: str = ""
    attached: str = field(default_factory=now_rfc3339)
    ip: str = ""  # on a nat network: the VM NIC's address (its static lease); else ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.vm_id, self.nic)

    @classmethod
    def from_dict(cls, d: object, where: str = "attachment") -> "Attachment":
        """As Network.from_dict; vm_name, mac and ip may be empty (not
        given, or not on a nat network). Whether the address fits its
        network is check_attachment_address's to say."""
        d = _fields(d, where, _ATTACHMENT_REQUIRED, _ATTACHMENT_FIELDS)
        vm_name, mac, ip = d.get("vm_name", ""), d.get("mac", ""), d.get("ip", "")
        try:
            return cls(check_id(d["vm_id"], "vm_id"), check_nic(d["nic"]), check_uuid(d["network_id"], "network_id"),
                       check_name(vm_name, "vm_name") if vm_name != "" else "",
                       check_mac(mac) if mac != "" else "",
                       check_timestamp(d["attached"], "attached"),
                       str(ipam.check_ip(ip)) if ip != "" else "")
        except InvalidArgs as e:
            raise _within(where, e) from None

    def to_dict(self) -> dict:
        d = {"vm_id": self.vm_id, "nic": self.nic, "network_id": self.network_id,
             "vm_name": self.vm_name, "mac": self.mac, "attached": self.attached}
        if self.ip:
            d["ip"] = self.ip
        return d


def load_json(text: str | bytes, what: str) -> object:
    """json.loads for files fcnetd reads at start (registry, journal lines):
    malformed text, text that is not UTF-8, NaN and Infinity, integers past
    Python's digit limit and nesting too deep for the parser (RecursionError)
    all become InvalidArgs(what, ...), never a traceback."""
    try:
        # bytes are decoded here: json.loads would also take UTF-16 and UTF-32
        return json.loads(text.decode() if isinstance(text, bytes) else text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InvalidArgs(what, "is nested too deeply to parse (no fcnetd file nests more than three levels)") from None
    except UnicodeDecodeError:
        raise InvalidArgs(what, "is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InvalidArgs(what, f"is not valid JSON ({e})") from None
    except ValueError as e:  # _refuse_constant, or Python's limit on digits in an int
        raise InvalidArgs(what, f"is not valid JSON ({e.args[0].split(':')[0]})") from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def load_json_object(text: str | bytes, what: str) -> dict:
    """load_json() for text whose top level must be a JSON object."""
    data = load_json(text, what)
    if not isinstance(data, dict):
        raise InvalidArgs(what, f"must be a JSON object, got {excerpt(data)}")
    return data


class RegistryDocument(NamedTuple):
    schema: int
    networks: list  # of dicts, for Network.from_dict
    attachments: list  # of dicts, for Attachment.from_dict


def check_registry_document(data: object, newest_schema: int,
                            extra_keys: Collection[str] = ()) -> RegistryDocument:
    """The top level of a registry snapshot: {"schema": int >= 1 (not a
    bool), "networks": [objects], "attachments": [objects]}; the two lists may
    be missing (empty). Keys other than those and `extra_keys` are refused,
    as they would be lost at the next write. The records themselves are left
    to Network.from_dict / Attachment.from_dict."""
    if not isinstance(data, dict):
        raise InvalidArgs("schema", f"no schema version: the top level must be a JSON object, got {excerpt(data)}")
    if "schema" not in data:
        raise InvalidArgs("schema", "missing: the file has no schema version (an integer >= 1)")
    schema = data["schema"]
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise InvalidArgs("schema", f"{excerpt(schema)} must be an integer >= 1 (the registry format version)")
    if schema > newest_schema:
        raise InvalidArgs("schema", f"{schema} is newer than this fcnetd understands ({newest_schema}); "
                                    "run a newer fcnetd")
    known = {"schema", "networks", "attachments", *extra_keys}
    if unknown := [k for k in data if k not in known]:
        raise InvalidArgs(excerpt(unknown[0]), f"unknown top-level key; a registry has {', '.join(sorted(known))}")
    lists = []
    for key in ("networks", "attachments"):
        records = data.get(key, [])
        if not isinstance(records, list):
            raise InvalidArgs(key, f"must be a list of JSON objects, got {excerpt(records)}")
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                raise InvalidArgs(f"{key}[{i}]", f"must be a JSON object, got {excerpt(record)}")
        lists.append(records)
    return RegistryDocument(schema, *lists)


def matches_search(needle: str, name: str, bridge: str, vlan: int, description: str) -> bool:
    """The guide's network search: `needle` (lower case) in the name, bridge
    or description, or exactly the VLAN ID."""
    return (not needle or needle in name.lower() or needle in bridge.lower() or needle == str(vlan)
            or needle in description.lower())


def tap_tag(vm_id: str, nic: str) -> str:
    """The ifalias that marks a TAP as fcnetd's and names its owner."""
    return f"{TAG_PREFIX}{vm_id}:{nic}"


def parse_tap_tag(alias: str | None) -> tuple[str, str] | None:
    if not alias or not alias.startswith(TAG_PREFIX):
        return None
    vm_id, sep, nic = alias[len(TAG_PREFIX):].rpartition(":")
    return (vm_id, nic) if sep and vm_id and nic else None
