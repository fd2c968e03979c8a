"""The data model and the validation of every value that comes from outside.

Rules live here once; the D-Bus layer, the registry loader and the web UI all
call these functions, so a rule cannot differ between entry points.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .errors import InvalidArgs

IFNAMSIZ = 16  # the kernel's limit, including the terminating NUL
VLAN_MAX = 4094  # 4095 is reserved by 802.1Q
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
TAP_PREFIX = "vmtap"
TAG_PREFIX = "fcnetd:"


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def check_ifname(value: object, field_name: str = "bridge") -> str:
    """A Linux interface name, as the kernel's dev_valid_name() accepts it,
    narrowed to printable ASCII so names stay safe in logs, paths and HTML."""
    if not isinstance(value, str) or value == "":
        raise InvalidArgs(field_name, "must be a non-empty interface name")
    if not value.isascii() or not value.isprintable():
        raise InvalidArgs(field_name, f"{value!r} must be printable ASCII")
    if len(value.encode()) >= IFNAMSIZ:
        raise InvalidArgs(field_name, f"{value!r} is longer than {IFNAMSIZ - 1} bytes")
    if value in (".", ".."):
        raise InvalidArgs(field_name, f"{value!r} is not a valid interface name")
    bad = set(value) & set("/: \t%")
    if bad:
        raise InvalidArgs(field_name, f"{value!r} must not contain {''.join(sorted(bad))!r}")
    return value


def check_vlan(value: object) -> int:
    """0 means untagged; 1-4094 is an 802.1Q VID; 4095 is reserved."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgs("vlan", "must be an integer")
    if not 0 <= value <= VLAN_MAX:
        raise InvalidArgs("vlan", f"{value} is out of range: 0 (untagged) or 1-{VLAN_MAX}")
    return value


def check_name(value: object, field_name: str = "name") -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidArgs(
            field_name,
            f"{value!r} must be 1-63 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    return value


def check_id(value: object, field_name: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise InvalidArgs(
            field_name,
            f"{value!r} must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, starting with a letter or digit",
        )
    return value


def check_nic(value: object) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$", value):
        raise InvalidArgs("nic", f"{value!r} must be 1-15 characters of A-Z a-z 0-9 . _ -")
    return value


def check_mac(value: object) -> str:
    if not isinstance(value, str) or not _MAC_RE.match(value.lower()):
        raise InvalidArgs("mac", f"{value!r} must look like 02:fc:00:00:00:01")
    return value.lower()


def check_description(value: object) -> str:
    if not isinstance(value, str) or len(value) > 256 or not value.isprintable():
        raise InvalidArgs("description", "must be printable text of at most 256 characters")
    return value


def check_uid(value: object, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32 - 1:
        raise InvalidArgs(field_name, "must be an integer from 0 to 4294967294")
    return value


def auto_name(bridge: str, vlan: int) -> str:
    return f"{bridge}-vlan-{vlan}" if vlan else bridge


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

    @property
    def kind(self) -> str:
        return "vlan" if self.vlan else "bridge"

    @classmethod
    def new(cls, name: str, bridge: str, vlan: int, host: str, origin: str,
            description: str = "") -> "Network":
        return cls(str(uuid.uuid4()), name or auto_name(bridge, vlan), bridge, vlan,
                   host, now_rfc3339(), origin, description)

    @classmethod
    def from_dict(cls, d: dict) -> "Network":
        try:
            net = cls(**{k: d[k] for k in ("id", "name", "bridge", "vlan", "host", "created", "origin")},
                      description=d.get("description", ""))
        except (KeyError, TypeError) as e:
            raise InvalidArgs("network", f"record is incomplete: {e}") from None
        uuid.UUID(net.id)
        check_name(net.name)
        check_ifname(net.bridge)
        check_vlan(net.vlan)
        if net.origin not in ("auto", "manual"):
            raise InvalidArgs("origin", "must be 'auto' or 'manual'")
        return net

    def to_dict(self) -> dict:
        # explicit, not dataclasses.asdict(): that deep-copies and is 5x slower
        return {"id": self.id, "name": self.name, "bridge": self.bridge, "vlan": self.vlan,
                "host": self.host, "created": self.created, "origin": self.origin,
                "description": self.description}


@dataclass(frozen=True)
class Attachment:
    vm_id: str
    nic: str
    network_id: str
    vm_name: str = ""
    mac: str = ""
    attached: str = field(default_factory=now_rfc3339)

    @property
    def key(self) -> tuple[str, str]:
        return (self.vm_id, self.nic)

    @classmethod
    def from_dict(cls, d: dict) -> "Attachment":
        try:
            att = cls(d["vm_id"], d["nic"], d["network_id"], d.get("vm_name", ""),
                      d.get("mac", ""), d["attached"])
        except (KeyError, TypeError) as e:
            raise InvalidArgs("attachment", f"record is incomplete: {e}") from None
        check_id(att.vm_id, "vm_id")
        check_nic(att.nic)
        return att

    def to_dict(self) -> dict:
        return {"vm_id": self.vm_id, "nic": self.nic, "network_id": self.network_id,
                "vm_name": self.vm_name, "mac": self.mac, "attached": self.attached}


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
