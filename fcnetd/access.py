"""The daemon's own access check, independent of the bus policy file.

dbus-fast does not tell method handlers who called, so this gate sits in
front of dispatch as a message handler: it asks the bus for the caller's
credentials once per connection (GetConnectionCredentials), caches the
verdict, and only then lets the call through. Root may call everything,
members of group `fcnet` may call the API, everyone else is refused.
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

from .bus import Message, MessageType, call
from .names import ACCESS_GROUP, ERROR_PREFIX, INVALID_ARGS, MANAGER_PATH

log = logging.getLogger("fcnetd.access")
OPEN_INTERFACES = {"org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer"}
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


class AccessGate:
    def __init__(self, conn, signatures: dict[tuple[str, str], str]):
        self.conn = conn
        self.access_gid = group_id()
        self.signatures = signatures  # (interface, member) -> in-signature
        self._verdicts: OrderedDict[str, bool] = OrderedDict()
        self._pending: dict[str, list] = {}
        self._tasks: set = set()
        self.denied = 0

    def install(self) -> None:
        self.conn.add_message_handler(self._on_message)

    def reload(self) -> None:
        self.access_gid = group_id()
        self._verdicts.clear()

    def _on_message(self, msg):
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if not msg.path or not (msg.path == MANAGER_PATH or msg.path.startswith(MANAGER_PATH + "/")):
            return None
        if msg.interface in OPEN_INTERFACES:
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
                msg, ERROR_PREFIX + "AccessDenied",
                f"access denied: only root and members of group {ACCESS_GROUP} may call fcnetd")
        expected = self.signatures.get((msg.interface, msg.member))
        if expected is not None and msg.signature != expected:
            return Message.new_error(
                msg, INVALID_ARGS,
                f"{msg.member} takes arguments of signature '{expected}', got '{msg.signature}'")
        return None

    async def _resolve(self, sender: str) -> None:
        try:
            (creds,) = await call(self.conn, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                  "org.freedesktop.DBus", "GetConnectionCredentials", "s", [sender])
            uid = creds["UnixUserID"].value
            gids = creds["UnixGroupIDs"].value if "UnixGroupIDs" in creds else None
            verdict = allowed(uid, gids, self.access_gid)
        except Exception as e:  # a caller that vanished or a bus that will not say: deny
            log.warning("cannot get credentials of %s: %s", sender, e)
            verdict = False
        if not verdict:
            log.info("denied %s", sender)
        self._verdicts[sender] = verdict
        if len(self._verdicts) > CACHE_SIZE:
            self._verdicts.popitem(last=False)
        for msg in self._pending.pop(sender, []):
            self.conn._process_message(msg)  # dispatch again, now with a verdict
