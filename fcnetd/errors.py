"""Domain errors. Each carries its public D-Bus error name; the D-Bus layer
turns them into replies in one place (service.py)."""

from .names import ERROR_PREFIX, INVALID_ARGS


class FcnetError(Exception):
    """Base class: an expected failure with a message fit for the caller."""

    name = "Internal"

    @property
    def dbus_name(self) -> str:
        return ERROR_PREFIX + self.name


class InvalidArgs(FcnetError):
    """Malformed input. The message names the field and the rule."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field

    @property
    def dbus_name(self) -> str:
        return INVALID_ARGS


def _named(name: str, doc: str) -> type:
    return type(name, (FcnetError,), {"name": name, "__doc__": doc})


NoSuchNetwork = _named("NoSuchNetwork", "No network with that id or name.")
NetworkExists = _named("NetworkExists", "The name or (host, bridge, vlan) is taken.")
NetworkInUse = _named("NetworkInUse", "VMs are attached to the network.")
NoSuchVm = _named("NoSuchVm", "No attachment for that VM (and NIC).")
NicAttached = _named("NicAttached", "That VM NIC is already attached.")
BridgeNotAllowed = _named("BridgeNotAllowed", "The bridge is not in the allow-list.")
BridgeNotFound = _named("BridgeNotFound", "The bridge is missing and may not be created.")
VlanUnsupported = _named("VlanUnsupported", "The kernel lacks bridge VLAN filtering.")
BridgeFull = _named("BridgeFull", "The bridge has no free port (a Linux bridge holds 1,023).")
TapExists = _named("TapExists", "A device with that name exists and is not ours.")
AccessDenied = _named("AccessDenied", "The caller may not use the API.")
Internal = _named("Internal", "Unexpected failure; details are in the daemon's log.")
