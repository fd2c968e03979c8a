"""Asking the polkit authority on the bus: is there one, and does a bus
caller hold an action. No caching and no policy here (access.py decides
what to ask and how long an answer holds)."""

from __future__ import annotations

import asyncio

from .bus import DBusError, Variant, call

AUTHORITY = "org.freedesktop.PolicyKit1"
AUTHORITY_PATH = "/org/freedesktop/PolicyKit1/Authority"
AUTHORITY_IFACE = "org.freedesktop.PolicyKit1.Authority"
DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")
# A verdict normally takes milliseconds (rules are evaluated in polkitd's own
# JavaScript engine); a hung or restarting polkitd must not hold the caller's
# call longer than its own bus timeout (25 s in sd-bus and dbus-fast).
ANSWER_SECONDS = 10.0
# Where the authority appears and leaves (access.py watches it).
OWNER_CHANGES = ("type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                 f"member='NameOwnerChanged',arg0='{AUTHORITY}'")


class PolkitUnavailable(Exception):
    """polkit gave no verdict (an error reply, no reply in time): neither a
    yes nor a no."""


async def authority_present(conn) -> bool:
    """An authority runs now, or the bus would start one on the first call
    (D-Bus activation: a systemd host where polkitd exits when idle)."""
    (owned,) = await call(conn, *DBUS, "NameHasOwner", "s", [AUTHORITY])
    if owned:
        return True
    (activatable,) = await call(conn, *DBUS, "ListActivatableNames")
    return AUTHORITY in activatable


async def is_authorized(conn, sender: str, action: str) -> bool:
    """CheckAuthorization for the bus connection `sender`, without details
    and without interaction (flags 0): fcnetd has no one to show a password
    prompt to, so an answer that would need one is a no."""
    subject = ["system-bus-name", {"name": Variant("s", sender)}]
    try:
        ((authorized, _challenge, _details),) = await asyncio.wait_for(
            call(conn, AUTHORITY, AUTHORITY_PATH, AUTHORITY_IFACE, "CheckAuthorization", "(sa{sv})sa{ss}us",
                 [subject, action, {}, 0, ""]),
            ANSWER_SECONDS)
    except asyncio.TimeoutError:
        raise PolkitUnavailable(f"no answer from {AUTHORITY} in {ANSWER_SECONDS:g} s") from None
    except DBusError as e:
        raise PolkitUnavailable(f"{e.type}: {e.text[:200]}") from None
    return bool(authorized)
