"""Domain errors. Each carries its public D-Bus error name; the D-Bus layer
turns them into replies in one place (service.py)."""

from .names import ERROR_PREFIX, INVALID_ARGS

EXCERPT_CHARS = 40


def excerpt(value: object) -> str:
    """How a message shows a value it refuses: the repr of at most
    EXCERPT_CHARS characters, so a 1 MB argument cannot become a 1 MB reply
    or log line and a control character shows escaped (it cannot forge a
    line). Containers show only their type. (Here, beside the errors, so
    that every module that words one can use it: model.py re-exports it.)"""
    if isinstance(value, str):
        if len(value) <= EXCERPT_CHARS:
            return repr(value)
        return f"{value[:EXCERPT_CHARS]!r}… ({len(value):,} characters)"
    if isinstance(value, int) and not isinstance(value, bool):
        return repr(value) if abs(value) < 10 ** EXCERPT_CHARS else f"an integer of {value.bit_length():,} bits"
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, (bytes, bytearray)):
        return "a bytes value"
    return f"a {type(value).__name__}"


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
SubnetConflict = _named("SubnetConflict", "The subnet overlaps another network, or a host address or route.")
AddressUnavailable = _named("AddressUnavailable",
                            "The address is taken or outside the subnet, or none is free.")
ConfigInvalid = _named("ConfigInvalid", "The config file is not valid; the config in force stays.")
AccessDenied = _named("AccessDenied", "The caller may not use the API.")
Internal = _named("Internal", "Unexpected failure; details are in the daemon's log.")
