"""Every public D-Bus name, derived from one versioned root (contract)."""

ROOT = "org.fcnetd.Network1"

BUS_NAME = ROOT
MANAGER_PATH = "/org/fcnetd/Network1"
MANAGER_IFACE = ROOT + ".Manager"
NETWORK_IFACE = ROOT + ".Network"
NETWORK_PATH_PREFIX = MANAGER_PATH + "/network/"
ERROR_PREFIX = ROOT + ".Error."
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
NO_REPLY = "org.freedesktop.DBus.Error.NoReply"
OBJECT_MANAGER_IFACE = "org.freedesktop.DBus.ObjectManager"
PEER_IFACE = "org.freedesktop.DBus.Peer"

# Unix group whose members may call the API (root may always).
ACCESS_GROUP = "fcnet"


def escape_label(label: str) -> str:
    """sd_bus_path_encode: keep [A-Za-z0-9], hex-escape the rest as _xx."""
    if not label:
        return "_"
    out = []
    for i, ch in enumerate(label.encode()):
        c = chr(ch)
        if c.isascii() and (c.isalpha() or (c.isdigit() and i > 0)):
            out.append(c)
        else:
            out.append("_%02x" % ch)
    return "".join(out)


def unescape_label(text: str) -> str:
    if text == "_":
        return ""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "_":
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(text[i]))
            i += 1
    return out.decode()


def network_path(network_id: str) -> str:
    return NETWORK_PATH_PREFIX + escape_label(network_id)
