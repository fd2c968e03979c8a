"""The engine: networks, attachments and TAPs. Knows nothing of D-Bus.

Every entry point runs in the same order: validate input, check the state,
change the kernel if needed, change memory, persist, then tell observers.
What may interleave with what is the README's "What may interleave":
per-object work shares `gate` and holds the lock of its VM NIC for its whole
run; reconcile and a hand edit hold `gate` alone. A registry check and the
change it guards run with no await between them, so they are atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import NamedTuple

from . import errors as E
from . import faultpoint, ipam, probeport
from .config import Config
from .model import (MODES, Attachment, Network, TAP_PREFIX, auto_name, check_description, check_dhcp, check_id,
                    check_ifname, check_mac, check_mode, check_name, check_nic, check_tap_name, check_uid,
                    check_vlan, excerpt, matches_search)
from .locks import Coalesced, Gate, KeyedLocks
from .netlink import BridgeState, Device, Netlink, TapState
from .registry import Move, Registry, Snapshot
from .traffic import History

log = logging.getLogger("fcnetd.engine")
TAP_NAME_TRIES = 8
ENSURE_TRIES = 3  # a network created and deleted under an AttachVm this often: the caller is told
BRIDGE_PORTS = 1023  # the kernel's limit (BR_MAX_PORTS - 1)
# A TAP event that disagrees with what fcnetd keeps (another master, set
# down) is looked at again this much later, and only then reconciled: a
# move or a start of fcnetd's own passes through such states for a moment.
TAP_SETTLE_SECONDS = 0.25
# A tagged network's TAP is a member of its VLAN alone, which is its PVID
# and leaves it untagged: a port's VLANs as the kernel reports them.
PVID_UNTAGGED = frozenset({"pvid", "untagged"})
# Each repair of a TAP reconcile makes: its DriftDetected id and what was done.
TAP_REPAIRS = {"master": ("tap.bridge", "was not on bridge {bridge} (moved to another bridge or none); put back"),
               "up": ("tap.up", "was set down; set up again"),
               "vlan": ("tap.vlan", "was not in VLAN {vlan} alone; put back in it")}


@dataclass
class Stats:
    """Counters the metrics collector reads; plain ints, cheap to bump."""
    reconcile: dict = field(default_factory=lambda: defaultdict(int))  # result -> count
    registry_writes: dict = field(default_factory=lambda: defaultdict(int))  # ok/error -> count
    registry_write_count: int = 0
    registry_write_sum: float = 0.0

    def observe_write(self, seconds: float, ok: bool) -> None:
        self.registry_writes["ok" if ok else "error"] += 1
        self.registry_write_count += 1
        self.registry_write_sum += seconds


class Addressing(NamedTuple):
    """A network's mode, subnet and DHCP as a caller asked for them; None
    where the caller said nothing (AttachVm then takes what an existing
    network has)."""
    mode: str | None = None
    subnet: str | None = None  # canonical, checked
    dhcp: bool | None = None

    @classmethod
    def checked(cls, mode: str | None = None, subnet: str | None = None, dhcp: bool | None = None) -> "Addressing":
        if mode is not None:
            check_mode(mode)
        # "" asks for no subnet in particular: the same as not giving one
        subnet = str(ipam.check_subnet(subnet)) if subnet else None
        if dhcp is not None:
            # without a mode, an existing network's decides (check_matches)
            check_dhcp(dhcp, mode or "nat")
        return cls(mode, subnet, dhcp)

    def for_new(self) -> tuple[str, str, bool]:
        """(mode, subnet, dhcp) of a network made now: bridge by default;
        DHCP on by default for nat. The subnet may still be "" (picked later)."""
        mode = self.mode or "bridge"
        return mode, self.subnet or "", check_dhcp(self.dhcp if self.dhcp is not None else mode == "nat", mode)

    def check_matches(self, net: Network) -> None:
        """An existing network asked for with other values: the caller is
        told what it has; networks are never edited."""
        for name, given, has in (("mode", self.mode, net.mode), ("subnet", self.subnet, net.subnet),
                                 ("dhcp", self.dhcp, net.dhcp)):
            if given is not None and given != has:
                shown = repr(has) if name != "dhcp" else str(has).lower()
                raise E.InvalidArgs(name, f"network {net.name} exists with {name} {shown}; "
                                          "delete and create it to change that")


def _shown(state: BridgeState | None | bool) -> tuple | None:
    """What of a bridge's state its networks' Status shows."""
    return (state.up, state.vlan_filtering) if state else None


class Engine:
    def __init__(self, config: Config, registry: Registry, netlink: Netlink, *, nat=None):
        self._version = 0
        self.config = config
        self.registry = registry
        self.netlink = netlink
        # The kernel-and-process side of nat networks (fcnetd/nat.py's
        # NatPlane); None: no nat network can be made.
        self.nat = nat
        if nat is not None:  # its repairs are audit entries and drift signals too
            nat.report = self._nat_report
        self.taps: dict[tuple[str, str], TapState] = {}
        self.tap_keys: dict[str, tuple[str, str]] = {}  # TAP name -> (vm_id, nic)
        self.tap_generation = 0  # moves with every change of `taps`, which engine.version does not follow
        self._bridges: dict[str, BridgeState | None] = {}
        self.gate = Gate()
        self._nic_locks = KeyedLocks()  # (vm_id, nic) -> lock, held for a VM NIC's whole call
        self._uplink_lock = asyncio.Lock()
        # Network creations and deletions one at a time: a creation checks the
        # name and (bridge, VLAN) before it prepares the bridge and again
        # after; two racing for one name would leave a bridge made for the
        # refused one. They are rare and quick; VM work does not take it.
        self._network_lock = asyncio.Lock()
        # AttachVm calls in flight by (bridge, vlan): their network counts as
        # in use, so a DeleteNetwork cannot take the network an AttachVm just
        # auto-created before its attachment is added.
        self._attaching: dict[tuple[str, int], int] = {}
        self._uplink_claims: set[tuple[str, int]] = set()  # (bridge, vlan) of networks being created
        self._preparing: dict[tuple[str, bool], asyncio.Future] = {}
        # Bridges carrying networks that vanished (a reboot, an admin's
        # `ip link del`): when one is there again, whoever made it, a
        # reconcile puts back what fcnetd keeps on it (TAPs, gateways).
        self._lost_bridges: set[str] = set()
        self._creating: dict[tuple[str, int], asyncio.Future] = {}
        # Reconcile holds the gate alone; a resync after lost link events
        # only shares it. Each is coalesced.
        self.reconcile = Coalesced(self.gate.exclusive, self.reconcile_exclusive)
        self._resync_read = Coalesced(self.gate.shared, self._resync)
        self.stats = Stats()
        registry.observer = self.stats.observe_write
        self.traffic = History()  # fed by the metrics snapshot (metrics.Refresher)
        self._suspect_taps: set[tuple[str, str]] = set()
        # Ports whose VLANs' newest notice disagreed with what fcnetd keeps:
        # port name -> (master, VLANs) as the kernel said them.
        self._vlan_suspects: dict[str, tuple[int, dict[int, frozenset[str]]]] = {}
        self._tap_check: asyncio.Task | None = None
        # Observers are told after a change is on disk (or in the kernel).
        self.on_network_added = lambda net: None
        self.on_network_removed = lambda net: None
        self.on_network_changed = lambda net: None
        # Each change once it is made, for the audit trail (audit.Audit.record):
        # the action, what it touched, and by_daemon=True for the daemon's own.
        self.on_change = lambda action, **about: None
        # Each repair of a change made behind fcnetd's back, once made: a
        # stable id (what) and a sentence (detail), for DriftDetected.
        self.on_drift = lambda what, detail: None

    @property
    def host(self) -> str:
        return self.config.host

    # -- what summaries show: networks, VM counts, status ----------------------
    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        self._config = config
        self._version += 1  # the allow-list decides a network's status

    @property
    def bridges(self) -> dict[str, BridgeState | None]:
        return self._bridges  # read-only use; set_bridge() changes it

    def set_bridge(self, name: str, state: BridgeState | None) -> None:
        was = self._bridges.get(name, False)  # False: never read
        self._bridges[name] = state
        if was == state:
            return
        self._version += 1
        # Its networks' Status follows (present, up, VLAN filtering); not at
        # the first read, at start, where nothing was shown yet.
        if was is not False and _shown(was) != _shown(state):
            for net in [n for n in self.registry.networks.values() if n.bridge == name]:
                self.on_network_changed(net)

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever a network's summary (fields, VM count, status)
        may have changed, so a cached list can tell it is still good."""
        return (self.registry.version, self._version)

    # -- lookups -----------------------------------------------------------
    def find_network(self, ref: str) -> Network:
        if not isinstance(ref, str) or not ref:
            raise E.InvalidArgs("network", "must be a network id or name")
        net = self.registry.networks.get(ref) or self.registry.by_name.get(ref)
        if net is None:
            raise E.NoSuchNetwork(f"no network with id or name {excerpt(ref)}")
        return net

    def attachments_of(self, net: Network) -> list[Attachment]:
        return list(self.registry.by_network.get(net.id, {}).values())

    def taps_of(self, net: Network) -> list[TapState]:
        return [self.taps[k] for k in self.registry.by_network.get(net.id, {}) if k in self.taps]

    def status(self, net: Network) -> str:
        state = self.bridges.get(net.bridge)
        if net.bridge not in self.config.bridges:
            return "bridge-not-allowed"
        if state is None:
            return "bridge-missing"
        if not state.up:
            return "bridge-down"
        if net.vlan and not state.vlan_filtering:
            return "vlan-filtering-off"
        return "active"

    def list_networks(self, search: str = "", kind: str = "", bridge: str = "", mode: str = "",
                      unused: bool = False) -> list[Network]:
        """Newest first; unused: only networks without a VM attached."""
        if kind not in ("", "bridge", "vlan"):
            raise E.InvalidArgs("type", f"{excerpt(kind)} must be 'bridge' or 'vlan'")
        if mode not in ("", *MODES):
            raise E.InvalidArgs("mode", f"{excerpt(mode)} must be 'bridge' or 'nat'")
        if not isinstance(search, str) or len(search) > 128:
            raise E.InvalidArgs("search", "must be text of at most 128 characters")
        needle = search.lower()
        out = []
        for net in reversed(self.registry.networks.values()):  # newest first
            if kind and net.kind != kind:
                continue
            if bridge and net.bridge != bridge:
                continue
            if mode and net.mode != mode:
                continue
            if unused and self.registry.by_network.get(net.id):
                continue
            if not matches_search(needle, net.name, net.bridge, net.vlan, net.description):
                continue
            out.append(net)
        return out

    # -- bridges -----------------------------------------------------------
    def _allowed(self, bridge: str):
        check_ifname(bridge)
        cfg = self.config.bridge(bridge)
        if cfg is None:
            allowed = ", ".join(sorted(self.config.bridges)) or "none"
            raise E.BridgeNotAllowed(
                f"bridge {bridge!r} is not in fcnetd's allow-list (allowed: {allowed}); "
                f"an admin adds it as [bridges.{bridge}] in the config")
        return cfg

    async def _prepare_bridge(self, bridge: str, vlan: int) -> BridgeState:
        """The bridge, ready for a network of this VLAN. The state is cached
        and kept current by link events, so a VM start costs no lookup."""
        cfg = self._allowed(bridge)
        state = self.bridges.get(bridge)
        if state is not None and state.up and (state.vlan_filtering or not vlan):
            return state
        # One preparation per bridge at a time; a burst of first VM starts shares it.
        key = (bridge, bool(vlan))
        if (pending := self._preparing.get(key)) is not None:
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(
            self.netlink.ensure_bridge(bridge, cfg.create, cfg.mtu, vlan_filtering=bool(vlan)))
        self._preparing[key] = task
        try:
            state = await asyncio.shield(task)
        finally:
            del self._preparing[key]
        self.set_bridge(bridge, state)
        return state

    def bridge_changed(self, bridge: str, state: BridgeState | None) -> Callable[[], Awaitable] | None:
        """A link event for an allowed bridge, with its state as the kernel
        tells it. Returns the repair the caller must run, if any:
        - a bridge carrying networks vanished, or came back after that: a
          reconcile makes it again (`create = true`) and puts its TAPs and
          nat gateways back on it;
        - VLAN filtering turned off behind our back on a bridge that carries
          tagged networks: turn it on again. Until then the cached state
          says it is off, so no tagged TAP is plugged: create_tap turns it
          on first."""
        was = self.bridges.get(bridge)
        self.set_bridge(bridge, state)
        if state is None:
            if was is None or not self._carries(bridge):
                return None
            self._lost_bridges.add(bridge)
            self.stats.reconcile["drift"] += 1
            log.warning("bridge %s, which carries networks, was deleted behind fcnetd's back; %s", bridge,
                        "making it again" if self.config.bridges[bridge].create else "waiting for it to return")
            return self.reconcile_drift
        # A delete and a make that reached us as one event: a new index.
        remade = was is not None and was.index != state.index and self._carries(bridge)
        if bridge in self._lost_bridges or remade:
            self._lost_bridges.discard(bridge)
            log.info("bridge %s is back; putting fcnetd's ports and addresses on it again", bridge)
            return self.reconcile_drift
        if not state.up and was is not None and was.up and self._owns_bridge(bridge):
            log.warning("bridge %s, which carries networks, was set down behind fcnetd's back", bridge)
            return self.reconcile_drift
        if state.vlan_filtering is not False or not self._carries_tagged(bridge):
            return None
        self.stats.reconcile["drift"] += 1
        log.warning("VLAN filtering on bridge %s was turned off behind fcnetd's back; turning it on again", bridge)
        return partial(self.restore_vlan_filtering, bridge)

    async def reconcile_drift(self) -> None:
        """A reconcile (coalesced), as a coroutine a link event's handler
        can run as a task."""
        await self.reconcile()

    def _drift(self, what: str, detail: str) -> None:
        log.warning("drift repaired (%s): %s", what, detail)
        self.on_drift(what, detail)

    def _nat_report(self, action: str, **about) -> None:
        self.on_change(action, **about)
        if action == "drift-repaired":
            net = about.get("network")
            where = f"nat network {net.name}" if net is not None else "the nat networks"
            self._drift(f"nat.{about['repaired']}", f"{where}: the {about['repaired']} was missing or "
                                                    "not as fcnetd keeps it; put back")

    def _carries(self, bridge: str) -> bool:
        return any(n.bridge == bridge for n in self.registry.networks.values())

    def _owns_bridge(self, bridge: str) -> bool:
        """A bridge fcnetd may make (`create = true`) and that carries
        networks is fcnetd's to keep up; one an admin manages
        (`create = false`) set down stays down, its networks' Status
        `bridge-down` (Diagnose names the fix), as a missing one is waited for."""
        return self.config.bridges[bridge].create and self._carries(bridge)

    def _carries_tagged(self, bridge: str) -> bool:
        return any(n.bridge == bridge and n.vlan for n in self.registry.networks.values())

    async def restore_vlan_filtering(self, bridge: str) -> None:
        try:
            await self._prepare_bridge(bridge, 1)
        except E.FcnetError as e:
            log.error("cannot turn VLAN filtering on again on bridge %s: %s", bridge, e)
            return
        self.on_change("drift-repaired", by_daemon=True, bridge=bridge, repaired="vlan-filtering")
        self._drift("bridge.vlan-filtering", f"VLAN filtering on bridge {bridge}, which carries tagged networks, "
                                             "was turned off; turned on again")

    async def refresh_bridge(self, bridge: str) -> None:
        try:
            state = await self.netlink.bridge(bridge)
        except E.FcnetError:
            state = None
        self.set_bridge(bridge, state)

    async def sync_uplinks(self) -> None:
        """Keeps each uplink a tagged member of exactly the VLANs in use,
        and of those of networks being created (claimed before their commit)."""
        async with self._uplink_lock:
            for cfg in self.config.bridges.values():
                if not cfg.uplink:
                    continue
                state = self.bridges.get(cfg.name) or await self.netlink.bridge(cfg.name)
                if state is None or not state.vlan_filtering:
                    continue
                index = await self.netlink.link_index(cfg.uplink)
                if index is None:
                    log.warning("uplink %s of bridge %s does not exist", cfg.uplink, cfg.name)
                    continue
                await self.netlink.set_master(index, state.index, f"uplink {cfg.uplink}")
                wanted = {state.default_pvid: {"pvid", "untagged"}}
                kept = self._trunk_vlans(cfg.name) - {state.default_pvid}  # the networks' VLANs, stored
                for vlan in kept:
                    wanted[vlan] = set()
                for bridge, vlan in self._uplink_claims:
                    if bridge == cfg.name:
                        wanted.setdefault(vlan, set())
                current = await self.netlink.port_vlans(index)
                await self.netlink.set_port_vlans(index, wanted, f"uplink {cfg.uplink}", current)
                if lost := sorted(kept - current.keys()):
                    self.stats.reconcile["drift"] += 1
                    self.on_change("drift-repaired", by_daemon=True, bridge=cfg.name, uplink=cfg.uplink,
                                   repaired="uplink-vlans", vlans=",".join(map(str, lost)))
                    self._drift("uplink.vlan", f"uplink {cfg.uplink} of bridge {cfg.name} was no longer a tagged "
                                               f"member of VLAN{'s' if len(lost) > 1 else ''} "
                                               f"{', '.join(map(str, lost))}; added again")

    def _trunk_vlans(self, bridge: str) -> set[int]:
        """The VLANs of the networks stored on `bridge` that its uplink carries
        tagged. A nat network is fcnetd's alone: its VLAN stays off the trunk,
        or its gateway and DHCP server would serve the LAN."""
        return {net.vlan for net in self.registry.networks.values()
                if net.bridge == bridge and net.vlan and net.host == self.host and net.mode != "nat"}

    async def _converge_uplinks(self, why: str) -> None:
        """Uplink sync after a change that is already stored: a failure is
        logged and counted, never answered, and the next reconcile retries."""
        try:
            await self.sync_uplinks()
        except E.FcnetError as e:
            self.stats.reconcile["error"] += 1
            log.warning("uplink sync after %s failed (retried at the next reconcile): %s", why, e)

    # -- networks ----------------------------------------------------------
    async def create_network(self, name: str, bridge: str, vlan: int, description: str = "",
                             origin: str = "manual", mode: str = "bridge", subnet: str = "",
                             dhcp: bool | None = None) -> Network:
        check_ifname(bridge)
        check_vlan(vlan)
        name = check_name(name) if name else auto_name(bridge, vlan)
        if description:
            check_description(description)
        addressing = Addressing.checked(mode, subnet, dhcp)
        addressing.for_new()  # refused before any lock is taken
        async with self.gate.shared():
            return await self._create_network(name, bridge, vlan, description, origin, addressing)

    async def _create_network(self, name: str, bridge: str, vlan: int, description: str,
                              origin: str, addressing: Addressing = Addressing()) -> Network:
        async with self._network_lock:
            return await self._create_network_locked(name, bridge, vlan, description, origin, addressing)

    async def _create_network_locked(self, name: str, bridge: str, vlan: int, description: str,
                                     origin: str, addressing: Addressing) -> Network:
        self._allowed(bridge)
        self._check_free(name, bridge, vlan)
        mode, subnet, dhcp = addressing.for_new()
        if mode == "nat":
            self._nat_plane()
            uplink = self.config.bridges[bridge].uplink
            if uplink and not vlan:
                raise E.InvalidArgs(
                    "mode", f"an untagged nat network on bridge {bridge} would share the LAN beyond its uplink "
                            f"{uplink}, and fcnetd's gateway and DHCP server with it; give it a VLAN (a nat "
                            "network's VLAN stays off the trunk) or use a bridge without an uplink")
        # Only network creations add subnets, and they hold the lock: what
        # this finds free stays free until the commit below.
        if mode == "nat" or subnet:
            subnet = await self._choose_subnet(mode, subnet)
        port = await self._prepare_bridge(bridge, vlan)
        claim = (bridge, vlan)
        stored = False
        net = Network.new(name, bridge, vlan, self.host, origin, description, mode, subnet, dhcp)
        try:
            if vlan and mode != "nat":  # the trunk carries the VLAN before anyone is told it exists
                self._uplink_claims.add(claim)
                await self.sync_uplinks()
            if mode == "nat":
                # Gateway, firewall and DHCP server before the network
                # exists: a crash between here and the commit leaves what
                # the next reconcile reaps (NatPlane.converge).
                await self.nat.network_added(net, port, [*self.registry.networks.values(), net])
                faultpoint.reached("create.nat-ready")
            try:
                await self.registry.commit(self.registry.change("add_network", net))
            except BaseException:
                if mode == "nat":
                    await self.nat.network_removed(net, list(self.registry.networks.values()))
                raise
            stored = True
            if mode != "nat" and subnet and self.nat is not None:
                await self.nat.fence_changed(list(self.registry.networks.values()))
        finally:
            self._uplink_claims.discard(claim)
            if vlan and not stored:
                asyncio.ensure_future(self._converge_uplinks(f"a failed creation of {name}"))
        log.info("network %s created (%s, bridge %s, vlan %s, %s%s)", net.name, origin, bridge, vlan or "none",
                 mode, f" {subnet}" if subnet else "")
        self.on_change("network-created", network=net, origin=origin, mode=mode, subnet=subnet or None)
        self.on_network_added(net)
        return net

    def _nat_plane(self):
        if self.nat is None:
            raise E.InvalidArgs("mode", "'nat' is not available: this fcnetd runs without its NAT plane")
        return self.nat

    async def _choose_subnet(self, mode: str, subnet: str) -> str:
        """A nat network's subnet, given or picked from the pool, overlapping
        no other network's subnet and (nat only) no address or route of the
        host; a bridge network's given subnet, overlapping no other
        network's (it describes the LAN beyond the uplink, where the host
        itself may well have an address)."""
        taken = [(n.network, f"network {n.name} ({n.subnet})") for n in self.registry.networks.values() if n.subnet]
        if mode == "nat":
            taken += await self.nat.host_prefixes()
        if not subnet:
            return str(ipam.pick_subnet(self.config.nat_pool, [t for t, _ in taken]))
        if mode == "nat":
            ipam.check_nat_subnet(ipam.IPv4Network(subnet), self.config.nat_pool)
        if (what := ipam.conflict(ipam.IPv4Network(subnet), taken)) is not None:
            raise E.SubnetConflict(f"subnet: {subnet} overlaps {what}")
        return subnet

    def _check_free(self, name: str, bridge: str, vlan: int) -> None:
        if (existing := self.registry.by_key.get((self.host, bridge, vlan))) is not None:
            raise E.NetworkExists(
                f"network {existing.name} already uses bridge {bridge}"
                + (f" VLAN {vlan}" if vlan else " untagged") + f" on {self.host}")
        if name in self.registry.by_name:
            raise E.NetworkExists(f"a network named {name!r} already exists")

    async def ensure_network(self, bridge: str, vlan: int) -> tuple[Network, bool]:
        check_ifname(bridge)
        check_vlan(vlan)
        async with self.gate.shared():
            return await self._ensure_network(bridge, vlan)

    async def _ensure_network(self, bridge: str, vlan: int,
                              addressing: Addressing = Addressing()) -> tuple[Network, bool]:
        # A creation can lose to a CreateNetwork of the same (bridge, VLAN)
        # whose network a DeleteNetwork then removes: try again, as a call
        # made after both would.
        for _ in range(ENSURE_TRIES):
            existing = self.registry.by_key.get((self.host, bridge, vlan))
            if existing is not None:
                return existing, False
            # Concurrent first attachments wait for one creation instead of racing.
            creation = self._creating.get((bridge, vlan))
            leader = creation is None
            if leader:
                creation = asyncio.ensure_future(
                    self._create_network(auto_name(bridge, vlan), bridge, vlan, "", "auto", addressing))
                self._creating[(bridge, vlan)] = creation
                creation.add_done_callback(lambda _: self._creating.pop((bridge, vlan), None))
            try:
                return await asyncio.shield(creation), leader
            except E.NetworkExists:
                existing = self.registry.by_key.get((self.host, bridge, vlan))
                if existing is not None:
                    return existing, False  # a manual network took the (host, bridge, vlan) meanwhile
                if auto_name(bridge, vlan) in self.registry.by_name:
                    raise  # the auto name belongs to another network
        raise E.NetworkExists(f"bridge {bridge} VLAN {vlan or 'untagged'}: its network was created and deleted "
                              f"{ENSURE_TRIES} times while this call waited; try again")

    async def delete_network(self, ref: str) -> None:
        async with self.gate.shared(), self._network_lock:
            net = self.find_network(ref)
            count = len(self.registry.by_network.get(net.id, {})) + self._attaching.get((net.bridge, net.vlan), 0)
            if count:
                raise E.NetworkInUse(
                    f"Network has {count} attached VM{'s' if count != 1 else ''}. Remove VMs first.")
            await self.registry.commit(self.registry.change("remove_network", net))
            if net.mode == "nat" and self.nat is not None:
                # Still under the lock: a creation's firewall, built from
                # the registry, cannot interleave with this one's.
                faultpoint.reached("delete.committed")
                await self.nat.network_removed(net, list(self.registry.networks.values()))
            elif net.subnet and self.nat is not None:
                await self.nat.fence_changed(list(self.registry.networks.values()))
        self.traffic.forget_network(net.id)
        log.info("network %s deleted; bridge %s left in place", net.name, net.bridge)
        self.on_change("network-deleted", network=net)
        self.on_network_removed(net)
        if net.vlan:
            await self._converge_uplinks(f"deleting {net.name}")

    # -- attachments -------------------------------------------------------
    async def attach_vm(self, vm_id: str, bridge: str, vlan: int, vm_name: str = "",
                        nic: str = "eth0", mac: str = "", ip: str = "", mode: str | None = None,
                        subnet: str | None = None, dhcp: bool | None = None) -> Network:
        """Records a VM NIC on the (bridge, VLAN) network, made if missing
        with `mode`, `subnet` and `dhcp`; given for an existing network,
        they must be what it has. On a nat network the NIC gets an address
        (`ip`, else the lowest free) and a MAC (`mac`, else generated)."""
        mac, wanted, addressing = _checked_join(vm_id, nic, bridge, vlan, mac, ip, mode, subnet, dhcp)
        if vm_name:
            check_name(vm_name, "vm_name")
        async with self.gate.shared(), self._nic_locks.hold((vm_id, nic)):
            self._check_unattached(vm_id, nic)
            self._allowed(bridge)
            self._check_room(bridge)
            self._check_address_fits(bridge, vlan, addressing, wanted)
            with self._joining(bridge, vlan) as settle:
                net = await self._network_to_join(bridge, vlan, addressing, "attaching")
                self._check_room(bridge)
                # From here to the change: no await, so the address and MAC
                # are still free when the change takes them.
                mac, ip = self._addresses_on(net, mac, wanted)
                att = Attachment(vm_id, nic, net.id, vm_name, mac, ip=ip)
                change = self.registry.change("add_attachment", att)
                settle()
                await self.registry.commit(change)
            self.on_change("vm-attached", network=net, vm=vm_id, nic=nic, vm_name=vm_name or None,
                           mac=mac or None, ip=ip or None)
            if net.mode == "nat":
                faultpoint.reached("attach.committed")
                await self.nat.leases_changed(net, self.attachments_of(net))
        self.on_network_changed(net)
        return net

    async def move_vm(self, vm_id: str, nic: str, bridge: str, vlan: int, mac: str = "", ip: str = "",
                      mode: str | None = None, subnet: str | None = None, dhcp: bool | None = None) -> Network:
        """Moves an attached VM NIC to the (bridge, VLAN) network, made if
        missing as AttachVm makes it. Its TAP, if it has one, is re-plugged
        (master, VLAN), never made anew, so a running VMM keeps its fd.

        The kernel first, then the registry (one journal line, Move): a
        failure of either puts the TAP back, and the VM stays where it was;
        a crash in between leaves the registry's old network, where the next
        reconcile puts the TAP back. On a nat network the NIC keeps its MAC
        (the guest's, fixed at boot) unless `mac` is given, and gets an
        address (`ip`, else the lowest free)."""
        mac, wanted, addressing = _checked_join(vm_id, nic, bridge, vlan, mac, ip, mode, subnet, dhcp)
        async with self.gate.shared(), self._nic_locks.hold((vm_id, nic)):
            old = self._attachment(vm_id, nic)
            source = self.registry.networks[old.network_id]
            self._allowed(bridge)
            if (source.bridge, source.vlan) == (bridge, vlan):
                addressing.check_matches(source)
                return source  # already there: nothing to do, as a retried call expects
            if bridge != source.bridge:
                self._check_room(bridge)
            self._check_address_fits(bridge, vlan, addressing, wanted)
            with self._joining(bridge, vlan) as settle:
                net = await self._network_to_join(bridge, vlan, addressing, "moving")
                self._moved_attachment(old, net, mac, wanted)  # refused now, before the kernel changes
                tap = self.taps.get(old.key)
                if tap is not None:
                    back = self.bridges.get(source.bridge)
                    port = await self._prepare_bridge(net.bridge, net.vlan)
                    await self._replug(old.key, port, net.vlan, back, source.vlan)
                faultpoint.reached("move.replugged")
                try:
                    # No await from here to the change: the address and MAC are still free.
                    new = self._moved_attachment(old, net, mac, wanted)
                    change = self.registry.change("move_attachment", Move(old, new))
                    settle()
                    await self.registry.commit(change)
                except BaseException:
                    if tap is not None:
                        await self._replug_back(old.key, self.bridges.get(source.bridge), source.vlan)
                        self._set_tap(old.key, tap)
                    raise
            log.info("VM %s NIC %s moved from %s to %s", vm_id, nic, source.name, net.name)
            self.on_change("vm-moved", network=net, vm=vm_id, nic=nic, from_network=source.name,
                           tap=tap.name if tap is not None else None, mac=new.mac or None, ip=new.ip or None)
            if source.mode == "nat" and self.nat is not None:
                await self.nat.leases_changed(source, self.attachments_of(source), released=[old])
            if net.mode == "nat":
                await self.nat.leases_changed(net, self.attachments_of(net))
        self.on_network_changed(source)
        self.on_network_changed(net)
        return net

    async def _network_to_join(self, bridge: str, vlan: int, addressing: Addressing, doing: str) -> Network:
        """The (bridge, VLAN) network a VM NIC joins, made if missing. The
        caller holds `_joining`, so no DeleteNetwork takes it once found; one
        may win the await here, and then it is made again."""
        for _ in range(ENSURE_TRIES):
            net, _ = await self._ensure_network(bridge, vlan, addressing)
            if net.id in self.registry.networks:
                addressing.check_matches(net)  # found, or made by a concurrent call with other values
                return net
        raise E.NoSuchNetwork(f"network {net.name} was deleted while {doing}; try again")

    def _addresses_on(self, net: Network, mac: str, wanted: ipam.IPv4Address | None,
                      leaving: tuple[str, str] | None = None) -> tuple[str, str]:
        """(MAC, address) a VM NIC gets on `net`: on a nat network the MAC
        asked for (else a new one) and the address asked for (else the lowest
        free), neither held by another NIC (`leaving`: the NIC itself, moving
        in, holds nothing there); elsewhere the MAC as given and no address.
        Raises if they cannot be had. Takes nothing: the caller's change does,
        with no await in between."""
        if net.mode != "nat":
            if wanted is not None:
                raise E.InvalidArgs("ip", f"network {net.name} is a {net.mode} network; "
                                          "fcnetd gives addresses only on a nat network")
            return mac, ""
        self._nat_plane()
        taken = [a for a in self.attachments_of(net) if a.key != leaving]
        mac = ipam.claim_mac({a.mac for a in taken}, mac)
        return mac, str(ipam.allocate(net.network, {ipam.IPv4Address(a.ip) for a in taken}, wanted))

    def _moved_attachment(self, old: Attachment, net: Network, mac: str,
                          wanted: ipam.IPv4Address | None) -> Attachment:
        """The attachment `old` becomes on `net` (it keeps its MAC, the
        guest's, unless `mac` is given)."""
        mac, ip = self._addresses_on(net, mac or old.mac, wanted, leaving=old.key)
        return replace(old, network_id=net.id, mac=mac, ip=ip)

    async def _replug(self, key: tuple[str, str], port: BridgeState, vlan: int,
                      back: BridgeState | None = None, back_vlan: int = 0) -> None:
        """Puts the VM NIC's TAP on bridge `port` in exactly `vlan` (the
        bridge's default one when 0), never on a segment it does not belong
        to on the way. If a step fails, it is put back on `back` in
        `back_vlan`, best effort (else reconcile does)."""
        tap = self.taps[key]
        try:
            await self._plug(tap, port, vlan, moving=tap.master != port.index)
        except BaseException:
            if back is not None:
                await self._replug_back(key, back, back_vlan)
            raise
        self._set_tap(key, replace(tap, master=port.index))

    async def _plug(self, tap: TapState, port: BridgeState, vlan: int, moving: bool) -> None:
        """Moved to another bridge (or from where a failure left it), the TAP
        is set down first: enslaved, it would forward in that bridge's
        default VLAN before its own. VLANs are left before others are joined."""
        dev = Device("tap", tap.name)
        if moving:
            if tap.up:
                await self.netlink.set_down(tap.index, dev)
            await self.netlink.set_master(tap.index, port.index, dev, port.name)
            faultpoint.reached("move.enslaved")
        if port.vlan_filtering:
            await self.netlink.set_port_vlans(tap.index, {vlan or port.default_pvid: {"pvid", "untagged"}}, dev)
        if moving and tap.up:
            await self.netlink.set_up(tap.index, dev)

    async def _replug_back(self, key: tuple[str, str], port: BridgeState | None, vlan: int) -> None:
        """Best effort, with the TAP's state as fcnetd knew it before the
        move: a failure is logged, and the next reconcile repairs."""
        tap = self.taps.get(key)
        if port is None or tap is None:
            return
        try:
            await self._plug(tap, port, vlan, moving=True)  # where a failure left it is unknown
        except Exception:
            log.exception("could not put tap %s back on %s; the next reconcile will", tap.name, port.name)

    def _check_address_fits(self, bridge: str, vlan: int, addressing: Addressing,
                            wanted: ipam.IPv4Address | None) -> None:
        """A static address the network will refuse, refused before an
        AttachVm auto-creates the network (which would then be left behind)."""
        if wanted is None:
            return
        existing = self.registry.by_key.get((self.host, bridge, vlan))
        mode = existing.mode if existing is not None else addressing.for_new()[0]
        if mode != "nat":
            which = (f"network {existing.name}" if existing is not None
                     else f"the network this call would create on bridge {bridge}")
            raise E.InvalidArgs("ip", f"{which} is a {mode} network; fcnetd gives addresses only on a nat network")
        subnet = existing.subnet if existing is not None else addressing.subnet
        if subnet and wanted not in ipam.IPv4Network(subnet):
            raise E.AddressUnavailable(f"ip: {wanted} is outside the network's subnet {subnet}")

    @contextlib.contextmanager
    def _joining(self, bridge: str, vlan: int):
        """While an AttachVm or MoveVm joins the (bridge, VLAN) network, it
        counts as in use: a DeleteNetwork cannot take a network the call has
        just found or made. Yields settle(), to call once the call's own
        registry change counts the VM (counted twice, a DeleteNetwork
        meanwhile would say one VM too many); it is called at the end anyway."""
        key = (bridge, vlan)
        self._attaching[key] = self._attaching.get(key, 0) + 1
        counted = True

        def settle() -> None:
            nonlocal counted
            if counted:
                counted = False
                if self._attaching[key] == 1:
                    del self._attaching[key]
                else:
                    self._attaching[key] -= 1
        try:
            yield settle
        finally:
            settle()

    def _check_room(self, bridge: str) -> None:
        """Every attached VM NIC must be able to start: a bridge holds 1,023
        ports, one of them the uplink if it has one."""
        room = BRIDGE_PORTS - (1 if self.config.bridges[bridge].uplink else 0)
        if self.registry.bridge_load.get(bridge, 0) >= room:
            raise E.BridgeFull(
                f"bridge {bridge} has {room:,} attached VM NICs, all the ports a Linux bridge has "
                f"(1,023{', one of them the uplink' if room < BRIDGE_PORTS else ''}); "
                "attach the VM to a network on another bridge")

    def _check_unattached(self, vm_id: str, nic: str) -> None:
        if (att := self.registry.attachments.get((vm_id, nic))) is not None:
            net = self.registry.networks[att.network_id]
            raise E.NicAttached(f"VM {vm_id} NIC {nic} is already attached to network {net.name}")

    def _attachment(self, vm_id: str, nic: str) -> Attachment:
        att = self.registry.attachments.get((vm_id, nic))
        if att is None:
            raise E.NoSuchVm(f"VM {vm_id} has no NIC {nic} attached (call AttachVm first)")
        return att

    async def detach_vm(self, vm_id: str, nic: str) -> None:
        check_id(vm_id, "vm_id")
        check_nic(nic)
        async with self.gate.shared(), self._nic_locks.hold((vm_id, nic)):
            att = self._attachment(vm_id, nic)
            await self._delete_tap(att.key)
            faultpoint.reached("detach.tap-deleted")
            await self.registry.commit(self.registry.change("remove_attachment", att))
            net = self.registry.networks.get(att.network_id)
            self.on_change("vm-detached", network=net, vm=vm_id, nic=nic)
            if net is not None and net.mode == "nat" and self.nat is not None:
                faultpoint.reached("detach.committed")
                await self.nat.leases_changed(net, self.attachments_of(net), released=[att])
        if net is not None:
            self.on_network_changed(net)

    # -- TAPs --------------------------------------------------------------
    async def create_tap(self, vm_id: str, nic: str, uid: int | None = None, gid: int | None = None,
                         name: str = "") -> str:
        check_id(vm_id, "vm_id")
        check_nic(nic)
        if uid is not None:
            check_uid(uid, "owner_uid")
        if gid is not None:
            check_uid(gid, "owner_gid")
        if name:
            check_tap_name(name, self.config.reserved_ifnames)
        async with self.gate.shared(), self._nic_locks.hold((vm_id, nic)):
            att = self._attachment(vm_id, nic)
            if (tap := self.taps.get(att.key)) is not None:
                return tap.name  # VM start retried: same TAP
            net = self.registry.networks[att.network_id]
            bridge = await self._prepare_bridge(net.bridge, net.vlan)
            mtu = self.config.bridges[net.bridge].mtu
            for attempt in range(1 if name else TAP_NAME_TRIES):
                candidate = name or f"{TAP_PREFIX}{random.randrange(10**6):06d}"
                try:
                    tap = await self.netlink.create_tap(candidate, vm_id, nic, bridge, net.vlan,
                                                        uid, gid, mtu)
                    break
                except E.TapExists:
                    if name or attempt == TAP_NAME_TRIES - 1:
                        raise
            self._set_tap(att.key, tap)
        log.info("tap %s created for VM %s NIC %s on %s", tap.name, vm_id, nic, net.name)
        self.on_change("tap-created", network=net, vm=vm_id, nic=nic, tap=tap.name, owner_uid=uid, owner_gid=gid)
        self.on_network_changed(net)
        return tap.name

    async def delete_tap(self, vm_id: str, nic: str) -> None:
        check_id(vm_id, "vm_id")
        check_nic(nic)
        key = (vm_id, nic)
        async with self.gate.shared(), self._nic_locks.hold(key):
            if not await self._delete_tap(key):
                return
        att = self.registry.attachments.get(key)
        if att is not None and att.network_id in self.registry.networks:
            self.on_network_changed(self.registry.networks[att.network_id])

    async def _delete_tap(self, key: tuple[str, str]) -> bool:
        """Destroys the VM NIC's TAP, if it has one; its lock is held."""
        # Forget it first, so the kernel's delete event is not taken for drift.
        tap = self._drop_tap(key)
        if tap is None:
            return False
        try:
            await self.netlink.delete_link(tap.name)
        except BaseException:
            self._set_tap(key, tap)
            raise
        att = self.registry.attachments.get(key)
        self.on_change("tap-deleted", network=self.registry.networks.get(att.network_id) if att else None,
                       vm=key[0], nic=key[1], tap=tap.name)
        return True

    # -- reconcile -----------------------------------------------------------
    async def resync(self) -> None:
        """After lost link events: the state read again (_resync), then the
        repairs what it read asks for, run once the gate is released (one
        is a reconcile, which holds the gate alone), and the uplinks synced
        (their VLAN notices may be among the lost)."""
        for repair in await self._resync_read():
            await repair()
        await self._converge_uplinks("lost link events")

    async def _resync(self) -> list[Callable[[], Awaitable]]:
        """The bridges' and the TAPs' state read again, with the gate
        shared, so VM starts and stops go on. Nothing is adopted or reaped
        (that is reconcile's work, with the gate held alone); merged per
        TAP: only a TAP the engine held before the read and still holds
        unchanged after it is compared, so one created or deleted meanwhile
        is left to the call that did it. Returns the bridges' repairs."""
        repairs = []
        for bridge in self.config.bridges:
            try:
                state = await self.netlink.bridge(bridge)
            except E.FcnetError:
                state = None
            if (repair := self.bridge_changed(bridge, state)) is not None:
                repairs.append(repair)
        before = dict(self.taps)
        kernel = await self.netlink.taps()
        filtering = any(s is not None and s.vlan_filtering for s in self.bridges.values())
        port_vlans = await self.netlink.all_port_vlans() if filtering and before else {}
        for key, tap in before.items():
            if self.taps.get(key) is not tap:
                continue
            now = kernel.get(key)
            if now is None or now.name != tap.name:
                self.tap_vanished(tap.name)
            else:
                self.tap_changed(tap.name, now.up, now.carrier)
                if now.index in port_vlans:
                    self.port_vlans_changed(tap.name, now.master, port_vlans[now.index])
        return repairs

    async def reconcile_exclusive(self) -> dict[str, int]:
        """The reconcile itself, for a caller that holds the gate alone:
        adopts our TAPs, reaps tagged TAPs whose attachment is gone, repairs
        drift. Devices without fcnetd's tag are never touched."""
        assert self.gate.held_exclusive, "reconcile runs with the gate held alone"
        result = defaultdict(int)
        for bridge, cfg in self.config.bridges.items():
            await self.refresh_bridge(bridge)
            state = self.bridges.get(bridge)
            if state is None and self._carries(bridge):
                # Its networks had it when they were made (CreateNetwork
                # prepares the bridge): after a reboot, or a delete behind
                # fcnetd's back, it is made again where fcnetd may.
                if cfg.create:
                    log.warning("bridge %s, which carries networks, is missing; making it again", bridge)
                    try:
                        state = await self._prepare_bridge(bridge, int(self._carries_tagged(bridge)))
                        result["drift"] += 1
                        self.on_change("drift-repaired", by_daemon=True, bridge=bridge, repaired="bridge")
                        self._drift("bridge.missing", f"bridge {bridge}, which carries networks, was missing; "
                                                      "made again")
                    except E.FcnetError as e:
                        log.error("cannot make bridge %s again: %s", bridge, e)
                        result["error"] += 1
                else:
                    log.warning("bridge %s, which carries networks, is missing (create = false: "
                                "fcnetd waits for it)", bridge)
                    self._lost_bridges.add(bridge)
            if state is not None:
                self._lost_bridges.discard(bridge)
            if state is not None and not state.up and self._owns_bridge(bridge):
                log.warning("bridge %s, which carries networks, is down; setting it up again", bridge)
                try:
                    state = await self._prepare_bridge(bridge, int(self._carries_tagged(bridge)))
                    result["drift"] += 1
                    self.on_change("drift-repaired", by_daemon=True, bridge=bridge, repaired="bridge-up")
                    self._drift("bridge.down", f"bridge {bridge}, which carries networks, was set down; set up again")
                except E.FcnetError as e:
                    log.error("cannot set bridge %s up again: %s", bridge, e)
                    result["error"] += 1
            if state is not None and state.vlan_filtering is False and self._carries_tagged(bridge):
                log.warning("VLAN filtering on bridge %s is off though it carries tagged networks; "
                            "turning it on again", bridge)
                await self._prepare_bridge(bridge, 1)
                result["drift"] += 1
                self.on_change("drift-repaired", by_daemon=True, bridge=bridge, repaired="vlan-filtering")
                self._drift("bridge.vlan-filtering", f"VLAN filtering on bridge {bridge}, which carries tagged "
                                                     "networks, was off; turned on again")
        kernel = await self.netlink.taps()
        filtering = any(s is not None and s.vlan_filtering for s in self.bridges.values())
        port_vlans = await self.netlink.all_port_vlans() if filtering and kernel else {}
        faultpoint.reached("reconcile.dumped")
        adopted = {}
        for key, tap in kernel.items():
            att = self.registry.attachments.get(key)
            if att is None:
                await self.netlink.delete_link(tap.name)
                log.info("reaped tap %s: VM %s NIC %s is not attached", tap.name, *key)
                result["reaped"] += 1
                self.on_change("tap-deleted", by_daemon=True, vm=key[0], nic=key[1], tap=tap.name,
                               reason="VM NIC not attached")
                continue
            net = self.registry.networks[att.network_id]
            bridge = self.bridges.get(net.bridge)
            if bridge is not None:
                repaired = []  # one audit entry per TAP, with what it took, even if a later step fails
                try:
                    if tap.master != bridge.index:
                        await self.netlink.set_master(tap.index, bridge.index, Device("tap", tap.name), net.bridge)
                        repaired.append("master")
                    if not tap.up:  # set down by hand, or made by an fcnetd that raised TAPs last
                        await self.netlink.set_up(tap.index, Device("tap", tap.name))
                        repaired.append("up")
                    if net.vlan and bridge.vlan_filtering:
                        want = {net.vlan: {"pvid", "untagged"}}
                        current = port_vlans.get(tap.index, {})
                        if current != want:
                            await self.netlink.set_port_vlans(tap.index, want, Device("tap", tap.name), current)
                            repaired.append("vlan")
                finally:
                    if repaired:
                        result["drift"] += len(repaired)
                        self.on_change("drift-repaired", by_daemon=True, network=net, vm=key[0], nic=key[1],
                                       tap=tap.name, repaired=",".join(repaired))
                    for step in repaired:
                        what, done = TAP_REPAIRS[step]
                        self._drift(what, f"TAP {tap.name} of VM {key[0]} NIC {key[1]} (network {net.name}) "
                                          + done.format(bridge=net.bridge, vlan=net.vlan))
            adopted[key] = tap
            result["adopted"] += 1
        self.taps, self.tap_keys = {}, {}
        self.tap_generation += 1
        for key, tap in adopted.items():
            self._set_tap(key, tap)
        try:
            await self.sync_uplinks()
        except E.FcnetError as e:
            result["error"] += 1
            log.warning("uplink sync failed: %s", e)
        # Probe ports (probeport.py) a daemon killed during a probe left;
        # the gate is held alone, so no probe is running.
        for name in await probeport.reap(self.netlink):
            log.info("reaped probe port %s: a probe's, left by a daemon that was killed", name)
            result["reaped"] += 1
        if self.nat is not None:
            by_network = {net_id: list(atts.values()) for net_id, atts in self.registry.by_network.items()}
            counts = await self.nat.converge(list(self.registry.networks.values()), by_network, self.bridges)
            for k, v in counts.items():
                result[k] += v
        for k, v in result.items():
            self.stats.reconcile[k] += v
        return dict(result)

    async def load_snapshot(self, snap: Snapshot) -> list[str]:
        """A valid hand edit of the registry: taken with nothing in flight
        (the gate held alone), the journal's later changes applied on top,
        then reconciled. A record edited in place is announced as removed
        and added again. Returns the journal lines that no longer fit."""
        async with self.gate.exclusive():
            old = dict(self.registry.networks)
            skipped = self.registry.take_edit(snap)
            new = self.registry.networks
            for net_id, net in old.items():
                if new.get(net_id) != net:
                    self.on_network_removed(net)
            for net_id, net in new.items():
                if old.get(net_id) != net:
                    self.on_network_added(net)
            await self.reconcile_exclusive()
        for net in self.registry.networks.values():
            self.on_network_changed(net)
        return skipped

    def _set_tap(self, key: tuple[str, str], tap: TapState) -> None:
        self.taps[key] = tap
        self.tap_keys[tap.name] = key
        self.tap_generation += 1

    def _drop_tap(self, key: tuple[str, str]) -> TapState | None:
        tap = self.taps.pop(key, None)
        if tap is not None:
            self.tap_keys.pop(tap.name, None)
            self.tap_generation += 1
        return tap

    def tap_changed(self, name: str, up: bool, carrier: bool, master: int | None = None) -> None:
        """A link event for one of our TAPs: keep its state current (master:
        None where the caller does not know it). A TAP set down or on
        another master than its network's bridge is looked at again a
        moment later (TAP_SETTLE_SECONDS) and, still so, reconciled."""
        key = self.tap_keys.get(name)
        tap = self.taps.get(key) if key else None
        if tap is None:
            return
        now = replace(tap, up=up, carrier=carrier, master=tap.master if master is None else master)
        if now != tap:
            self.taps[key] = now
            self.tap_generation += 1
        if master is not None and self._tap_drifted(key):
            self._suspect_taps.add(key)
            self._check_suspects_soon()

    def port_vlans_changed(self, name: str, master: int, vlans: dict[int, frozenset[str]]) -> None:
        """A bridge port's VLANs as its AF_BRIDGE link event tells them (all
        of them). One of our TAPs not in exactly its tagged network's VLAN,
        or an uplink no longer in a VLAN in use, is looked at again a moment
        later (TAP_SETTLE_SECONDS), as tap_changed does, and, the newest
        notice still so, reconciled: fcnetd's own changes (CreateTap, MoveVm,
        an uplink sync) pass through such states for a moment, and the
        reconcile, with the gate held alone, reads the kernel only once they
        are done."""
        if self._vlans_drifted(name, master, vlans):
            self._vlan_suspects[name] = (master, vlans)
            self._check_suspects_soon()
        else:
            self._vlan_suspects.pop(name, None)

    def _vlans_drifted(self, name: str, master: int, vlans: dict[int, frozenset[str]]) -> bool:
        """Whether a port's VLANs, as a notice said them, disagree with what
        fcnetd keeps now. Only a port on its own bridge, and that bridge
        filtering VLANs, is judged: another master is tap.bridge's case, and
        filtering off bridge.vlan-filtering's."""
        if (key := self.tap_keys.get(name)) is not None:
            att = self.registry.attachments.get(key)
            net = self.registry.networks.get(att.network_id) if att is not None else None
            if net is None or not net.vlan:
                return False
            bridge = self.bridges.get(net.bridge)
            return (bridge is not None and bool(bridge.vlan_filtering) and master == bridge.index
                    and vlans != {net.vlan: PVID_UNTAGGED})
        for cfg in self.config.bridges.values():
            if cfg.uplink == name:
                bridge = self.bridges.get(cfg.name)
                return (bridge is not None and bool(bridge.vlan_filtering) and master == bridge.index
                        and not self._trunk_vlans(cfg.name) <= vlans.keys())
        return False

    def _check_suspects_soon(self) -> None:
        if self._tap_check is None:
            self._tap_check = asyncio.get_running_loop().create_task(self._check_suspects())

    def _tap_drifted(self, key: tuple[str, str]) -> bool:
        tap, att = self.taps.get(key), self.registry.attachments.get(key)
        if tap is None or att is None or att.network_id not in self.registry.networks:
            return False
        bridge = self.bridges.get(self.registry.networks[att.network_id].bridge)
        return bridge is not None and (tap.master != bridge.index or not tap.up)

    async def _check_suspects(self) -> None:
        try:
            await asyncio.sleep(TAP_SETTLE_SECONDS)
        finally:
            self._tap_check = None
            suspects, self._suspect_taps = self._suspect_taps, set()
            ports, self._vlan_suspects = self._vlan_suspects, {}
        if any(self._tap_drifted(key) for key in suspects):
            log.warning("a TAP was moved or set down behind fcnetd's back; reconciling")
            await self.reconcile()
        elif any(self._vlans_drifted(name, *seen) for name, seen in ports.items()):
            log.warning("a TAP's or an uplink's VLANs were changed behind fcnetd's back; reconciling")
            await self.reconcile()

    def tap_vanished(self, name: str) -> None:
        """Someone else deleted one of our TAPs: forget it (the VM is stopped)."""
        key = self.tap_keys.get(name)
        if key is None or self._drop_tap(key) is None:
            return
        self.stats.reconcile["drift"] += 1
        log.warning("tap %s of VM %s NIC %s vanished from the kernel", name, *key)
        att = self.registry.attachments.get(key)
        if att is not None and att.network_id in self.registry.networks:
            self.on_network_changed(self.registry.networks[att.network_id])


def _checked_join(vm_id: str, nic: str, bridge: str, vlan: int, mac: str, ip: str, mode: str | None,
                  subnet: str | None, dhcp: bool | None) -> tuple[str, ipam.IPv4Address | None, Addressing]:
    """AttachVm's and MoveVm's arguments, checked before their first await:
    (the MAC in its checked form or "", the static address or None, the
    addressing asked for a network they would make)."""
    check_id(vm_id, "vm_id")
    check_nic(nic)
    if mac:
        mac = ipam.check_unicast_mac(check_mac(mac))
    wanted = ipam.check_ip(ip) if ip else None
    check_ifname(bridge)
    check_vlan(vlan)
    return mac, wanted, Addressing.checked(mode, subnet, dhcp)
