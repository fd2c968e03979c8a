"""The daemon's own access check, independent of the bus policy file.

dbus-fast does not tell method handlers who called, so this gate sits in
front of dispatch as a message handler and sees every method call, whatever
its path: the standard interfaces (Properties, ObjectManager) expose the same
networks and VMs as the API, on any path the library serves them. It asks the
bus for the caller's credentials once per connection
(GetConnectionCredentials), caches the verdict, and only then lets the call
through. Root may call everything, members of group `fcnet` may call the API,
everyone else is refused. A lookup that fails refuses the calls waiting on it
and is not cached: the connection's next call asks again.

It also answers calls with a wrong signature with InvalidArgs naming the
expected one, which dbus-fast alone would report as an unknown method.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
from collections import OrderedDict

from .bus import DBusError, Message, MessageType, call, redispatch, wants_reply
from .caller import CallerBook
from .names import (ACCESS_GROUP, ERROR_PREFIX, INVALID_ARGS, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE,
                    NETWORK_PATH_PREFIX)

log = logging.getLogger("fcnetd.access")
PEER = "org.freedesktop.DBus.Peer"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
NETWORK_SUBTREE = NETWORK_PATH_PREFIX.rstrip("/")
ACCESS_DENIED = ERROR_PREFIX + "AccessDenied"
CACHE_SIZE = 4096


def group_id(name: str = ACCESS_GROUP) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def allowed(uid: int, gids: list[int] | None, access_gid: int | None) -> bool:
    if uid == 0:
        return True
    if access_gid is None:
        return False
    if gids is None:  # an old bus without UnixGroupIDs: ask the user database
        try:
            user = pwd.getpwuid(uid)
            gids = os.getgrouplist(user.pw_name, user.pw_gid)
        except KeyError:
            return False
    return access_gid in gids


def is_open(msg: Message) -> bool:
    """Calls anyone may make. Peer (Ping, GetMachineId) tells nothing about
    fcnetd. Introspection is the API in dbus/, public anyway, except in the
    network subtree, where its child nodes and its answer for a path tell
    which network ids exist."""
    if msg.interface == PEER:
        return True
    if msg.interface == INTROSPECTABLE:
        return not (msg.path == NETWORK_SUBTREE or msg.path.startswith(NETWORK_PATH_PREFIX))
    return False


def served_interface(path: str) -> str | None:
    """The fcnetd interface a call that names none reaches at this path."""
    if path == MANAGER_PATH:
        return MANAGER_IFACE
    if path.startswith(NETWORK_PATH_PREFIX):
        return NETWORK_IFACE
    return None


class AccessGate:
    def __init__(self, conn, signatures: dict[tuple[str, str], str]):
        self.conn = conn
        self.access_gid = group_id()
        self.signatures = signatures  # (interface, member) -> in-signature
        self._verdicts: OrderedDict[str, bool] = OrderedDict()
        self.callers = CallerBook(CACHE_SIZE)  # audit: who each connection is (caller.py)
        self._pending: dict[str, list] = {}
        self._tasks: set = set()
        self.denied = 0

    def install(self) -> None:
        self.conn.add_message_handler(self._on_message)

    def reload(self) -> None:
        self.access_gid = group_id()
        self._verdicts.clear()

    def _on_message(self, msg):
        if msg.message_type != MessageType.METHOD_CALL or is_open(msg):
            return None
        verdict = self._verdicts.get(msg.sender)
        if verdict is None:
            queue = self._pending.setdefault(msg.sender, [])
            queue.append(msg)
            if len(queue) == 1:
                task = asyncio.get_running_loop().create_task(self._resolve(msg.sender))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return True
        if not verdict:
            self.denied += 1
            return Message.new_error(
                msg, ACCESS_DENIED, f"access denied: only root and members of group {ACCESS_GROUP} may call fcnetd")
        interface = msg.interface if msg.interface is not None else served_interface(msg.path)
        expected = self.signatures.get((interface, msg.member))
        if expected is not None and msg.signature != expected:
            return Message.new_error(
                msg, INVALID_ARGS,
                f"{msg.member} takes arguments of signature '{expected}', got '{msg.signature}'")
        self.callers.enter(msg.sender)  # audit: dispatch (next) runs the call in a task that copies this
        return None

    async def _resolve(self, sender: str) -> None:
        try:
            (creds,) = await call(self.conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                  "org.freedesktop.DBus", "GetConnectionCredentials", "s", [sender])
            uid = creds["UnixUserID"].value
            gids = creds["UnixGroupIDs"].value if "UnixGroupIDs" in creds else None
        except Exception as e:  # a caller that vanished or a bus that will not say
            reason = e.type if isinstance(e, DBusError) else type(e).__name__
            log.warning("cannot get credentials of %s (%s): its waiting calls are refused", sender, reason)
            self._refuse_pending(sender, reason)
            return
        self.callers.remember(sender, creds)  # audit: uid, pid and unit of the connection
        verdict = allowed(uid, gids, self.access_gid)
        if not verdict:
            log.info("denied %s", sender)
        self._verdicts[sender] = verdict
        if len(self._verdicts) > CACHE_SIZE:
            self._verdicts.popitem(last=False)
        for msg in self._pending.pop(sender, []):
            redispatch(self.conn, msg)  # through the gate again, now with a verdict

    def _refuse_pending(self, sender: str, reason: str) -> None:
        for msg in self._pending.pop(sender, []):
            self.denied += 1
            if wants_reply(msg):
                self.conn.send(Message.new_error(
                    msg, ACCESS_DENIED, f"access check failed: fcnetd could not read the caller's credentials "
                                        f"from the bus ({reason}); the call was not run and may be retried"))
