"""The daemon's own access check, independent of the bus policy file.

dbus-fast does not tell method handlers who called, so this gate sits in
front of dispatch as a message handler and sees every method call, whatever
its path: the standard interfaces (Properties, ObjectManager) expose the same
networks and VMs as the API, on any path the library serves them.

Each call needs one of two polkit actions: `read` (the read-only methods in
READ_CALLS) or `manage` (everything else). The gate asks the bus for the
caller's credentials once per connection (GetConnectionCredentials; they
cannot change while it is connected), then decides per (connection, action):
- root may call everything, without asking anyone;
- where a polkit authority is on the bus (running, or activatable), polkit
  decides (polkit.py);
- where none is (the demo, the private test bus), the built-in rule decides:
  members of group `fcnet` hold both actions, everyone else neither.
polkit's verdicts hold VERDICT_SECONDS, so a rule change reaches an open
connection within that time; the others hold until a reload or a change of
authority. Calls waiting on one lookup share it. A lookup
that fails (the bus will not say who called, polkit gives no answer) refuses
the calls waiting on it and is not remembered: the next call asks again.

The gate watches the authority's name (NameOwnerChanged) rather than
checking once at start: polkitd may be started, restarted or removed while
fcnetd runs (and on a systemd host it is activatable, so it counts as there
even while it is not running).

It also answers calls with a wrong signature with InvalidArgs naming the
expected one, which dbus-fast alone would report as an unknown method.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import math
import os
import pwd
import time
from collections import OrderedDict

from . import polkit
from .bus import DBusError, Message, MessageType, call, redispatch, wants_reply
from . import caller as caller_module
from .caller import Caller
from .names import (ACCESS_GROUP, ERROR_PREFIX, INVALID_ARGS, MANAGER_IFACE, MANAGER_PATH, NETWORK_IFACE,
                    NETWORK_PATH_PREFIX, OBJECT_MANAGER_IFACE, PEER_IFACE)

log = logging.getLogger("fcnetd.access")
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PROPERTIES = "org.freedesktop.DBus.Properties"
NETWORK_SUBTREE = NETWORK_PATH_PREFIX.rstrip("/")
ACCESS_DENIED = ERROR_PREFIX + "AccessDenied"
CACHE_SIZE = 4096
# CheckAuthorization calls in flight at once; the rest queue. The bus lets
# one connection await at most 128 replies (Debian's system.conf,
# max_replies_per_connection), fcnetd's own included: unbounded, a burst
# of new connections from anyone would make the bus refuse fcnetd's next
# checks, and other callers' calls with them.
POLKIT_CHECKS = 32
VERDICT_SECONDS = 10.0  # how long polkit's verdict holds for one connection and action (README, "Access")

# The polkit actions (contract: admins name them in rules; polkit/*.policy).
READ = "org.fcnetd.network1.read"
MANAGE = "org.fcnetd.network1.manage"

READ_CALLS = frozenset({
    (MANAGER_IFACE, "GetNetwork"), (MANAGER_IFACE, "ListNetworks"), (MANAGER_IFACE, "CountNetworks"),
    (MANAGER_IFACE, "Describe"), (MANAGER_IFACE, "ListBridges"), (MANAGER_IFACE, "GetTraffic"),
    (PROPERTIES, "Get"), (PROPERTIES, "GetAll"),
    (OBJECT_MANAGER_IFACE, "GetManagedObjects"),
    (INTROSPECTABLE, "Introspect"),  # in the network subtree, where it lists network ids (is_open)
})
MANAGE_CALLS = frozenset({
    (MANAGER_IFACE, "CreateNetwork"), (MANAGER_IFACE, "EnsureNetwork"), (MANAGER_IFACE, "DeleteNetwork"),
    (MANAGER_IFACE, "DeleteNetworkWithOptions"), (MANAGER_IFACE, "Reload"),
    (MANAGER_IFACE, "AttachVm"), (MANAGER_IFACE, "MoveVm"), (MANAGER_IFACE, "DetachVm"),
    (MANAGER_IFACE, "CreateTap"), (MANAGER_IFACE, "DeleteTap"), (NETWORK_IFACE, "Delete"),
    # They read, but the probes plug ports into a bridge for a moment, and
    # all five answer with the kernel's and the firewall's state.
    (MANAGER_IFACE, "Diagnose"), (MANAGER_IFACE, "ProbeDhcp"), (MANAGER_IFACE, "ProbeIsolation"),
    (MANAGER_IFACE, "DiagnoseVm"),
    (MANAGER_IFACE, "DiagnosePath"),
    (PROPERTIES, "Set"),
})

POLKIT_MODE = "polkit"
BUILTIN_MODE = "built-in"
BUILTIN_REFUSAL = f"access denied: only root and members of group {ACCESS_GROUP} may call fcnetd"


def group_id(name: str = ACCESS_GROUP) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def allowed(uid: int, gids: list[int] | None, access_gid: int | None) -> bool:
    """The built-in rule."""
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
    if msg.interface == PEER_IFACE:
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


def action_for(msg: Message) -> str:
    """The action a call needs. Anything not known to be a read, unknown
    methods included, needs `manage`: a method added without a mapping is
    never open to readers by mistake (tests/unit/test_access_actions.py
    fails until it is mapped)."""
    interface = msg.interface if msg.interface is not None else served_interface(msg.path)
    return READ if (interface, msg.member) in READ_CALLS else MANAGE


class AccessCheckFailed(Exception):
    """No verdict could be had; the message says why, for the caller."""


class AccessGate:
    def __init__(self, conn, signatures: dict[tuple[str, str], str], clock=time.monotonic):
        self.conn = conn
        self.access_gid = group_id()
        self.signatures = signatures  # (interface, member) -> in-signature
        self.clock = clock
        # Credentials per connection (unique name): kept while the name is in
        # the cache, since the bus never reuses a unique name.
        self.callers: OrderedDict[str, Caller] = OrderedDict()
        # (sender, action) -> (expires, refusal message or None when allowed)
        self._verdicts: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        self._pending: dict[tuple[str, str], list] = {}
        self._lookups: dict[str, asyncio.Task] = {}  # credential lookups in flight, shared per sender
        self._tasks: set = set()
        # Method calls that came before the objects were exported (open()):
        # answered then, never with UnknownObject for an object that exists.
        self._held: list | None = None
        self._polkit_slots = asyncio.Semaphore(POLKIT_CHECKS)
        self.mode: str | None = None  # POLKIT_MODE or BUILTIN_MODE once known
        self._mode_known = asyncio.Event()
        self._detecting = asyncio.Lock()
        self.denied = 0

    def install(self, hold: bool = False) -> None:
        """hold: installed before the daemon exports its objects, method
        calls wait until open()."""
        if hold:
            self._held = []
        self.conn.add_message_handler(self._on_message)
        self._spawn(self._watch_authority())

    async def settled(self) -> None:
        """Returns once it knows who decides (polkit or the built-in rule)
        and has said so in the log: the daemon says READY=1 only then."""
        await self._mode_known.wait()

    def open(self) -> None:
        """The objects are exported: the calls held meanwhile go on."""
        held, self._held = self._held, None
        for msg in held or ():
            redispatch(self.conn, msg)

    def reload(self) -> None:
        self.access_gid = group_id()
        self._verdicts.clear()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- which authority decides --------------------------------------------
    async def _watch_authority(self) -> None:
        try:
            await call(self.conn, *polkit.DBUS, "AddMatch", "s", [polkit.OWNER_CHANGES])
        except DBusError as e:
            log.warning("cannot watch %s on the bus (%s): the authorization mode found now stays",
                        polkit.AUTHORITY, e.type)
        await self._detect("at start")

    async def _detect(self, why: str) -> None:
        async with self._detecting:  # owner changes in order: the last one wins
            try:
                present = await polkit.authority_present(self.conn)
                reason = f"{polkit.AUTHORITY} is {'on' if present else 'not on'} the bus"
            except DBusError as e:
                present, reason = False, f"the bus did not say whether {polkit.AUTHORITY} is there ({e.type})"
            mode = POLKIT_MODE if present else BUILTIN_MODE
            if mode != self.mode:
                self.mode = mode
                self._verdicts.clear()  # given by the other authority
                how = ("polkit decides (actions org.fcnetd.network1.read and .manage)" if present else
                       f"built-in rule: root and group {ACCESS_GROUP} may call, everyone else is refused")
                log.info("authorization %s: %s; %s", why, how, reason)
            self._mode_known.set()

    # -- per call ------------------------------------------------------------
    def _on_message(self, msg):
        if msg.message_type == MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == polkit.DBUS[0] and \
                    msg.body and msg.body[0] == polkit.AUTHORITY:
                self._spawn(self._detect("after polkit appeared" if msg.body[2] else "after polkit left"))
            return None
        if msg.message_type != MessageType.METHOD_CALL:
            return None
        if self._held is not None:
            self._held.append(msg)
            return True
        if is_open(msg):
            return None
        key = (msg.sender, action_for(msg))
        caller = self.callers.get(msg.sender)
        verdict = self._verdicts.get(key)
        if caller is None or verdict is None or verdict[0] <= self.clock():
            queue = self._pending.setdefault(key, [])
            queue.append(msg)
            if len(queue) == 1:
                self._spawn(self._resolve(key))
            return True
        refusal = verdict[1]
        if refusal is not None:
            self.denied += 1
            return Message.new_error(msg, ACCESS_DENIED, refusal)
        interface = msg.interface if msg.interface is not None else served_interface(msg.path)
        expected = self.signatures.get((interface, msg.member))
        if expected is not None and msg.signature != expected:
            return Message.new_error(
                msg, INVALID_ARGS,
                f"{msg.member} takes arguments of signature '{expected}', got '{msg.signature}'")
        # Let through to dispatch; dbus-fast runs the call in a task made
        # next, which starts with a copy of this context: the engine's
        # audit entries name this caller (caller.py).
        caller_module.current.set(caller)
        return None

    async def _resolve(self, key: tuple[str, str]) -> None:
        sender, action = key
        try:
            caller = await self._caller(sender)
            refusal, lifetime = await self._decide(caller, action)
        except AccessCheckFailed as e:
            self._refuse_pending(key, str(e))
            return
        if refusal is not None:
            log.info("denied %s (uid %d, pid %s): %s", sender, caller.uid, caller.pid, action)
        self._verdicts[key] = (self.clock() + lifetime, refusal)
        self._verdicts.move_to_end(key)
        if len(self._verdicts) > 2 * CACHE_SIZE:
            self._verdicts.popitem(last=False)
        for msg in self._pending.pop(key, []):
            redispatch(self.conn, msg)  # through the gate again, now with a verdict

    async def _caller(self, sender: str) -> Caller:
        if (caller := self.callers.get(sender)) is not None:
            return caller
        lookup = self._lookups.get(sender)
        if lookup is None:
            lookup = self._lookups[sender] = asyncio.get_running_loop().create_task(self._credentials(sender))
            lookup.add_done_callback(lambda _: self._lookups.pop(sender, None))
        return await lookup

    async def _credentials(self, sender: str) -> Caller:
        try:
            (creds,) = await call(self.conn, *polkit.DBUS, "GetConnectionCredentials", "s", [sender])
            caller = caller_module.from_credentials(sender, creds)
        except Exception as e:  # a caller that vanished or a bus that will not say
            reason = e.type if isinstance(e, DBusError) else type(e).__name__
            log.warning("cannot get credentials of %s (%s): its waiting calls are refused", sender, reason)
            raise AccessCheckFailed(f"access check failed: fcnetd could not read the caller's credentials "
                                    f"from the bus ({reason}); the call was not run and may be retried") from None
        self.callers[sender] = caller
        if len(self.callers) > CACHE_SIZE:
            self.callers.popitem(last=False)
        return caller

    async def _decide(self, caller: Caller, action: str) -> tuple[str | None, float]:
        """(None if the caller holds the action, else the refusal to answer;
        how long that holds). Only polkit's answers can change while the
        connection lives (a rule edited); the rest depends on the
        credentials and the config, and a reload or a change of authority
        forgets it."""
        if caller.uid == 0:
            return None, math.inf
        await self._mode_known.wait()
        if self.mode == BUILTIN_MODE:
            return (None if allowed(caller.uid, caller.gids, self.access_gid) else BUILTIN_REFUSAL), math.inf
        try:
            async with self._polkit_slots:
                granted = await polkit.is_authorized(self.conn, caller.sender, action)
            if granted:
                return None, VERDICT_SECONDS
        except polkit.PolkitUnavailable as e:
            log.warning("polkit gave no verdict on %s for %s (uid %d): %s; its waiting calls are refused",
                        action, caller.sender, caller.uid, e)
            raise AccessCheckFailed(f"access check failed: polkit gave no verdict on {action} ({e}); "
                                    "the call was not run and may be retried") from None
        return f"access denied: polkit does not grant {action} to uid {caller.uid}", VERDICT_SECONDS

    def _refuse_pending(self, key: tuple[str, str], reason: str) -> None:
        for msg in self._pending.pop(key, []):
            self.denied += 1
            if wants_reply(msg):
                self.conn.send(Message.new_error(msg, ACCESS_DENIED, reason))
