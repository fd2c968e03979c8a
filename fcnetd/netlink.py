"""Every netlink operation of fcnetd. pyroute2 (imported here only) builds
each message and carries all but three kinds: the VM-start path's link
change, the link events and the dump of every bridge port's VLANs, which go
through rawnetlink's leaner byte-level code.

Creates are idempotent, deletes tolerate a device that is already gone, and
kernel errors become domain errors in one place (translate), by errno name
and by what was being done to which kind of device.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network

from pyroute2 import AsyncIPRoute, IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from . import faultpoint, tundev
from .errors import BridgeFull, BridgeNotFound, FcnetError, Internal, TapExists, VlanUnsupported
from .model import parse_tap_tag, tap_tag
from .rawnetlink import (AF_BRIDGE, IFF_UP, RTEXT_FILTER_BRVLAN, RTM_GETLINK, RTM_NEWLINK, SO_RCVBUFFORCE,
                         LinkEvent, PortVlans, RequestSocket, latest_link_events, parse_link_events,
                         parse_port_vlans)

VLAN_UNSUPPORTED_HINT = (
    "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); "
    "tagged networks need it, and fcnetd will not put them on a shared segment. "
    "Boot a kernel with bridge VLAN filtering (Debian's linux-image-amd64 has it) "
    "or use an untagged network")
NO_8021Q_HINT = (
    "this kernel has no 802.1Q VLAN devices (the 8021q module); a tagged nat network's "
    "gateway lives on one. Load 8021q (Debian's linux-image-amd64 has it) or use an untagged network")

# IFA_PROTO of every address fcnetd adds (0xfc: "fcnetd"), so reconcile tells
# its gateway addresses from an admin's, whatever their prefix.
FCNETD_ADDRESS_PROTO = 0xFC
BRIDGE_FLAGS_SELF = 2  # IFLA_BRIDGE_FLAGS: the request is for the bridge device itself
RTN_UNICAST = 1


@dataclass(frozen=True)
class BridgeState:
    name: str
    index: int
    up: bool
    vlan_filtering: bool | None  # None: the kernel cannot filter VLANs
    default_pvid: int


@dataclass(frozen=True)
class TapState:
    name: str
    index: int
    vm_id: str
    nic: str
    master: int
    up: bool
    carrier: bool


@dataclass(frozen=True)
class Address:
    """One IPv4 address of the host."""
    index: int
    ifname: str
    interface: IPv4Interface
    proto: int  # IFA_PROTO; FCNETD_ADDRESS_PROTO for fcnetd's own


@dataclass(frozen=True)
class Route:
    """One unicast IPv4 route of the host (any table), the default route excepted."""
    network: IPv4Network
    index: int  # its output device; 0 for a multipath route
    ifname: str
    gateway: str  # "" for a route on the link


@dataclass(frozen=True)
class Device:
    """What an operation acts on: its kind decides what an errno means (ENODEV
    on a bridge is BridgeNotFound, on a TAP it means the TAP vanished)."""
    kind: str  # one of KINDS
    name: str

    @classmethod
    def of(cls, what: Device | str) -> Device:
        """A Device, or the "<kind> <name>" text the engine has always passed."""
        if isinstance(what, Device):
            return what
        kind, _, name = what.partition(" ")
        return cls(kind, name) if name and kind in KINDS else cls("device", what)

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


KINDS = ("bridge", "tap", "uplink", "device")

# What each action was doing, as error messages say it ({bridge}: the bridge involved).
DOING = {
    "read": "reading its state",
    "create": "creating it",
    "up": "bringing it up",
    "down": "setting it down",
    "vlan_filtering": "turning on VLAN filtering",
    "plug": "adding it to bridge {bridge} and tagging it",
    "enslave": "adding it to bridge {bridge}",
    "vlans": "setting its VLANs",
    "persist": "making it persistent",
    "delete": "deleting it",
    "vlan_port": "creating it as a VLAN device on bridge {bridge}",
    "bridge_vlan": "making bridge {bridge} itself a tagged member of the VLAN",
    "bridge_unvlan": "taking bridge {bridge} itself out of the VLAN",
    "alias": "setting its alias",
    "address": "adding an address",
    "unaddress": "removing an address",
}

ANY = None
_TAKEN = "a device of that name already exists and was not created by fcnetd"
# (errno name, kinds, actions, error, reason): the first matching row wins;
# ANY matches every kind or action. Anything unmatched is Internal with the
# errno's name. Each reason completes "<kind> <name>: <doing>: ".
RULES = (
    ("EOPNOTSUPP", ANY, ("vlan_filtering", "vlans", "bridge_vlan"), VlanUnsupported, VLAN_UNSUPPORTED_HINT),
    ("EOPNOTSUPP", ANY, ("vlan_port",), VlanUnsupported, NO_8021Q_HINT),
    ("EEXIST", ("tap",), ("create",), TapExists, _TAKEN),
    ("EBUSY", ("tap",), ("create",), TapExists, _TAKEN),
    ("EBUSY", ANY, ("enslave", "plug"), Internal,
     "it is held by another master device (a port of another bridge, a bond...): the kernel said EBUSY"),
    ("ENODEV", ("bridge",), ANY, BridgeNotFound, "the bridge does not exist (deleted meanwhile?)"),
    ("ENODEV", ("tap",), ANY, Internal, "the TAP vanished: something else deleted it meanwhile"),
    ("ENODEV", ("uplink",), ANY, Internal, "no such device: check the uplink in fcnetd's config"),
    ("ENODEV", ANY, ANY, Internal, "no such device"),
    ("EXFULL", ANY, ("enslave", "plug"), BridgeFull,
     "bridge {bridge} is full (a Linux bridge holds at most 1,023 ports); spread the VMs over more bridges"),
    ("EPERM", ANY, ANY, Internal, "the daemon lacks CAP_NET_ADMIN"),
    ("ENOENT", ("tap",), ("create",), Internal, f"{tundev.TUN_DEVICE} is missing (is the tun module loaded?)"),
)


def translate(e: Exception, device: Device | str, action: str, bridge: str = "") -> FcnetError:
    """The domain error for a kernel refusal of `action` (a key of DOING) on
    `device`; `bridge` names the bridge involved, if any."""
    device = Device.of(device)
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    context = f"{device}: {DOING[action].format(bridge=bridge or 'unknown')}"
    for err, kinds, actions, error, reason in RULES:
        if (getattr(errno, err) == code and (kinds is ANY or device.kind in kinds)
                and (actions is ANY or action in actions)):
            return error(f"{context}: {reason.format(bridge=bridge or 'unknown')}")
    name = errno.errorcode.get(code, str(code))
    detail = f" ({os.strerror(code)})" if isinstance(code, int) else ""
    return Internal(f"{context}: the kernel said {name}{detail}")


def _ifname(index: int) -> str:
    """A device's name by index (one ioctl; a dump of every link costs
    ~0.4 ms per device); "#N" if it vanished meanwhile."""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"#{index}"


def _bridge_state(msg) -> BridgeState:
    data = msg.get(("linkinfo", "data")) or {}
    filtering = data.get("IFLA_BR_VLAN_FILTERING") if hasattr(data, "get") else None
    pvid = data.get("IFLA_BR_VLAN_DEFAULT_PVID") if hasattr(data, "get") else None
    return BridgeState(
        name=msg.get("ifname"), index=msg["index"], up=bool(msg["flags"] & IFF_UP),
        vlan_filtering=None if filtering is None else bool(filtering),
        default_pvid=pvid if pvid is not None else 1)


def _tap_state(msg) -> TapState | None:
    owner = parse_tap_tag(msg.get("ifalias"))
    if owner is None:
        return None
    return TapState(
        name=msg.get("ifname"), index=msg["index"], vm_id=owner[0], nic=owner[1],
        master=msg.get("master") or 0, up=bool(msg["flags"] & IFF_UP),
        carrier=msg.get("operstate") == "UP")


def bridge_state_of(event: LinkEvent) -> BridgeState | None:
    """A bridge's state as its link event tells it (None: the event is not a
    bridge's, or says it is gone). Same meaning as Netlink.bridge(): the
    kernel's word, no request needed."""
    if event.kind != "bridge" or event.event != "RTM_NEWLINK":
        return None
    return BridgeState(name=event.ifname, index=event.index, up=event.up, vlan_filtering=event.vlan_filtering,
                       default_pvid=event.default_pvid if event.default_pvid is not None else 1)


class Netlink:
    """One AsyncIPRoute for requests in the event loop, plus a small pool of
    synchronous sockets for link deletion: the kernel holds a deleting task
    for ~16 ms (an RCU grace period) inside sendmsg(), which would stall the
    loop and serialise every delete behind the previous one."""

    DELETE_WORKERS = 32

    def __init__(self):
        self.ipr: AsyncIPRoute | None = None
        self._pool = ThreadPoolExecutor(self.DELETE_WORKERS, thread_name_prefix="fcnetd-del")
        self._local = threading.local()
        self._sync_sockets: list[IPRoute] = []
        self._sockets_lock = threading.Lock()

    MAX_IN_FLIGHT = 32  # requests on the async socket at once; more overran its buffer

    async def open(self) -> None:
        self.ipr = AsyncIPRoute()
        self._requests = RequestSocket()
        self._slots = asyncio.Semaphore(self.MAX_IN_FLIGHT)

    def _reopen(self, failed: AsyncIPRoute) -> None:
        """Replaces the socket the kernel overran (pyroute2 marks it failed
        for good). Only that one: requests in flight on it all see the
        overrun, and the second must not close the first one's replacement."""
        if self.ipr is failed:
            failed.close()
            self.ipr = AsyncIPRoute()

    async def _rt(self, method: str, *args, **kwargs):
        """One request, bounded in flight; after an overrun (ENOBUFS) the
        socket is replaced and the request tried once more."""
        async with self._slots:
            for attempt in (1, 2):
                ipr = self.ipr
                try:
                    return await getattr(ipr, method)(*args, **kwargs)
                except OSError as e:
                    if e.errno != errno.ENOBUFS or attempt == 2:
                        raise
                    self._reopen(ipr)

    async def _set_link(self, index: int, master: int | None = None, ifalias: str | None = None,
                        mtu: int = 0, up: bool | None = None) -> None:
        """RTM_NEWLINK on an existing device, the VM-start path's request: an
        ifinfmsg built here (pyroute2's keyword front end, link("set", ...),
        took a quarter of the request's time preparing it), sent on the
        RequestSocket (its async transport took a third)."""
        msg = ifinfmsg()
        msg["index"] = index
        if up is not None:  # else its up flag is left as it is
            msg["flags"], msg["change"] = (IFF_UP if up else 0), IFF_UP
        attrs = []
        if master is not None:
            attrs.append(("IFLA_MASTER", master))
        if ifalias is not None:
            attrs.append(("IFLA_IFALIAS", ifalias))
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
        msg["attrs"] = attrs

        def encode(seq: int) -> bytes:
            msg["header"]["type"] = RTM_NEWLINK
            msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
            msg["header"]["sequence_number"] = seq
            msg.encode()
            return msg.data
        try:
            await self._requests.request(encode)
        except OSError as e:  # a refusal, like every other request's
            raise NetlinkError(e.errno, e.strerror) from None

    async def _dump(self, method: str, *args, **kwargs) -> list:
        async with self._slots:
            return [msg async for msg in await getattr(self.ipr, method)(*args, **kwargs)]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for s in self._sync_sockets:
            s.close()
        if self.ipr is not None:
            self.ipr.close()
            self._requests.close()

    # -- bridges ---------------------------------------------------------
    async def _link(self, name: str, kind: str):
        """The link message of `name`, or None if there is no such device."""
        try:
            return (await self._rt("link", "get", ifname=name))[0]
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise translate(e, Device(kind, name), "read") from e

    async def link(self, name: str):
        """The raw link message of any device `name` (pyroute2's ifinfmsg:
        index, address, ifalias, operstate, linkinfo ...), or None."""
        return await self._link(name, "device")

    async def create_veth(self, name: str, peer: str) -> None:
        """A veth pair, both ends down; NetlinkError (EEXIST) if a name is taken."""
        await self._rt("link", "add", ifname=name, kind="veth", peer=peer)

    async def set_alias(self, index: int, alias: str, what: Device | str) -> None:
        try:
            await self._set_link(index, ifalias=alias)
        except NetlinkError as e:
            raise translate(e, what, "alias") from e

    async def links_of_kind(self, kind: str) -> list[LinkEvent]:
        """Every device of this kind (veth, vlan ...), from one dump the
        kernel filters."""
        parts = await self._link_dump([("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]})],
                                      f"(all {kind} devices)")
        return [e for data in parts for e in parse_link_events(data) if e.kind == kind]

    async def bridge(self, name: str) -> BridgeState | None:
        msg = await self._link(name, "bridge")
        if msg is None:
            return None
        if msg.get(("linkinfo", "kind")) != "bridge":
            raise BridgeNotFound(f"bridge {name}: {name} exists but is not a bridge")
        return _bridge_state(msg)

    async def ensure_bridge(self, name: str, create: bool, mtu: int, vlan_filtering: bool) -> BridgeState:
        device = Device("bridge", name)
        state = await self.bridge(name)
        created = state is None
        if state is None:
            if not create:
                raise BridgeNotFound(
                    f"bridge {name} does not exist and the config does not allow creating it "
                    f"(set create = true in [bridges.{name}])")
            extra = {"mtu": mtu} if mtu else {}
            try:
                await self._rt("link", "add", ifname=name, kind="bridge", **extra)
            except NetlinkError as e:
                if e.code != errno.EEXIST:  # lost a race with another creator: fine
                    raise translate(e, device, "create") from e
            state = await self.bridge(name)
            if state is None:
                raise BridgeNotFound(f"bridge {name}: deleted again right after it was created")
        try:
            if not state.up:
                await self._rt("link", "set", index=state.index, state="up")
        except NetlinkError as e:
            raise translate(e, device, "up") from e
        if vlan_filtering and not state.vlan_filtering:
            try:
                await self._rt("link", "set", index=state.index, kind="bridge", br_vlan_filtering=1)
            except NetlinkError as e:
                if created:  # a refused tagged network leaves no bridge made for it
                    await self.delete_link(name, device)
                raise translate(e, device, "vlan_filtering") from e
        return await self.bridge(name)

    async def _link_dump(self, attrs: list, what: str, family: int = 0) -> list[bytes]:
        """The buffers of one RTM_GETLINK dump with these request attributes
        (the kernel's filters), on fcnetd's own request socket."""
        def encode(seq: int) -> bytes:
            msg = ifinfmsg()
            msg["family"] = family
            msg["attrs"] = attrs
            msg["header"].update(type=RTM_GETLINK, flags=NLM_F_REQUEST | NLM_F_DUMP, sequence_number=seq)
            msg.encode()
            return msg.data
        try:
            return await self._requests.dump(encode)
        except OSError as e:
            raise translate(e, Device("device", what), "read") from e

    # -- bridge port VLANs -----------------------------------------------
    async def all_port_vlans(self) -> dict[int, dict[int, frozenset[str]]]:
        """Every bridge port's VLANs, VID -> flags ('pvid', 'untagged'), by
        interface index, from ONE dump (RTM_GETLINK, AF_BRIDGE, IFLA_EXT_MASK
        RTEXT_FILTER_BRVLAN): reconcile reads it once, not once per port. Each
        bridge appears too, with its own VLANs. A port is {} where the kernel
        has no VLAN filtering (or the port no VLAN)."""
        parts = await self._link_dump([("IFLA_EXT_MASK", RTEXT_FILTER_BRVLAN)], "(all bridge ports)",
                                      family=AF_BRIDGE)
        result: dict[int, dict[int, frozenset[str]]] = {}
        for data in parts:
            parse_port_vlans(data, result)
        return result

    async def port_vlans(self, index: int) -> dict[int, frozenset[str]]:
        """VID -> flags ('pvid', 'untagged') of one bridge port. The kernel
        can only dump every port: for many ports, use all_port_vlans once."""
        return (await self.all_port_vlans()).get(index, {})

    async def set_port_vlans(self, index: int, wanted: dict[int, set[str]], what: Device | str,
                             current: dict[int, frozenset[str]] | None = None) -> None:
        """Makes the port a member of exactly `wanted` (VID -> flags).
        current: its VLANs now (from all_port_vlans), to spare a dump."""
        try:
            if current is None:
                current = await self.port_vlans(index)
            # Out of the VLANs it must leave before into the new ones: on the
            # way it is in fewer VLANs, never in two networks at once.
            for vid in current.keys() - wanted.keys():
                await self._rt("vlan_filter", "del", index=index, vlan_info={"vid": vid})
            for vid, flags in wanted.items():
                if current.get(vid) != flags:
                    await self._rt("vlan_filter", "add", index=index,
                                   vlan_info={"vid": vid, "flags": sorted(flags)})
        except NetlinkError as e:
            raise translate(e, what, "vlans") from e

    # -- TAPs ------------------------------------------------------------
    async def create_tap(self, name: str, vm_id: str, nic: str, bridge: BridgeState, vlan: int,
                         uid: int | None, gid: int | None, mtu: int) -> TapState:
        """Creates, tags, plugs and raises a TAP (one RTM_NEWLINK, as the C
        floor in bench/ does); on failure nothing is left behind. The TAP
        becomes persistent last, once it is tagged and in its VLAN: until
        then it lives only as long as the fd that made it, so a crash at any
        step (the daemon killed) leaves no device or a tagged, finished one,
        never an untagged device nobody would remove."""
        tap = Device("tap", name)
        try:
            fd = tundev.create_tap(name, uid, gid)
        except OSError as e:
            raise translate(e, tap, "create") from e
        faultpoint.reached("tap.opened")
        action = "plug"
        try:
            index = socket.if_nametoindex(name)  # one ioctl; link_lookup would dump every link
            await self._set_link(index, master=bridge.index, ifalias=tap_tag(vm_id, nic), mtu=mtu, up=True)
            faultpoint.reached("tap.plugged")
            if vlan:
                # Enslaving made it a member of the bridge's default VLAN; a
                # tagged network's TAP must be in its own VLAN and no other.
                # Its carrier is off, so the bridge forwarded no frame in between.
                action = "vlans"
                await self._rt("vlan_filter", "add", index=index,
                               vlan_info={"vid": vlan, "flags": ["pvid", "untagged"]})
                if bridge.default_pvid and bridge.default_pvid != vlan:
                    await self._rt("vlan_filter", "del", index=index, vlan_info={"vid": bridge.default_pvid})
                faultpoint.reached("tap.vlans")
            action = "persist"
            tundev.make_persistent(fd)
            faultpoint.reached("tap.persistent")
        except BaseException as e:
            # Closing the fd of a TAP that is not persistent removes it. The
            # kernel does that inside close(), waiting out an RCU grace
            # period, so off the event loop like every delete.
            await asyncio.get_running_loop().run_in_executor(self._pool, os.close, fd)
            if isinstance(e, (NetlinkError, OSError)):
                raise translate(e, tap, action, bridge.name) from e
            raise
        os.close(fd)
        faultpoint.reached("tap.released")
        return TapState(name, index, vm_id, nic, bridge.index, True, False)

    async def taps(self) -> dict[tuple[str, str], TapState]:
        """Every TAP that carries fcnetd's tag, by (vm_id, nic)."""
        found: dict[tuple[str, str], TapState] = {}
        for msg in await self._dump("link", "dump"):
            tap = _tap_state(msg)
            if tap is not None and msg.get(("linkinfo", "kind")) == "tun":
                found[(tap.vm_id, tap.nic)] = tap
        return found

    async def link_index(self, name: str) -> int | None:
        found = await self._rt("link_lookup", ifname=name)
        return found[0] if found else None

    async def set_up(self, index: int, what: Device | str) -> None:
        try:
            await self._set_link(index, up=True)
        except NetlinkError as e:
            raise translate(e, what, "up") from e

    async def set_down(self, index: int, what: Device | str) -> None:
        try:
            await self._set_link(index, up=False)
        except NetlinkError as e:
            raise translate(e, what, "down") from e

    async def set_master(self, index: int, master: int, what: Device | str, bridge: str = "") -> None:
        """Enslaves device `index` (what: which one, for errors) to `master`,
        the bridge named `bridge`."""
        try:
            await self._rt("link", "set", index=index, master=master)
        except NetlinkError as e:
            raise translate(e, what, "enslave", bridge) from e

    # -- addresses, routes and L3 ports (nat networks) --------------------
    async def addresses(self) -> list[Address]:
        """Every IPv4 address of the host, from one dump."""
        found = []
        for msg in await self._dump("addr", "dump", family=socket.AF_INET):
            local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            found.append(Address(msg["index"], msg.get("IFA_LABEL") or _ifname(msg["index"]),
                                 IPv4Interface(f"{local}/{msg['prefixlen']}"), msg.get("IFA_PROTO") or 0))
        return found

    async def routes(self) -> list[Route]:
        """Every unicast IPv4 route of every table but default routes, from
        one dump (local and broadcast routes are the addresses' own)."""
        found = []
        for msg in await self._dump("route", "dump", family=socket.AF_INET):
            if msg["type"] != RTN_UNICAST or msg["dst_len"] == 0:
                continue
            index = msg.get("RTA_OIF") or 0
            found.append(Route(IPv4Network(f"{msg.get('RTA_DST')}/{msg['dst_len']}"), index,
                               _ifname(index) if index else "", msg.get("RTA_GATEWAY") or ""))
        return found

    async def add_address(self, index: int, interface: IPv4Interface, what: Device | str) -> bool:
        """Adds `interface` to device `index` marked as fcnetd's
        (FCNETD_ADDRESS_PROTO); False if it was there already."""
        try:
            await self._rt("addr", "add", index=index, address=str(interface.ip),
                           prefixlen=interface.network.prefixlen, proto=FCNETD_ADDRESS_PROTO)
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise translate(e, what, "address") from e
            return False
        return True

    async def delete_address(self, index: int, interface: IPv4Interface, what: Device | str) -> None:
        """Removes `interface` from device `index`; one already gone is success."""
        try:
            await self._rt("addr", "del", index=index, address=str(interface.ip),
                           prefixlen=interface.network.prefixlen)
        except NetlinkError as e:
            if e.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise translate(e, what, "unaddress") from e

    async def ensure_vlan_port(self, bridge: BridgeState, vlan: int, name: str, alias: str) -> tuple[int, bool]:
        """The L3 port of a tagged network: VLAN device `name` (ifalias
        `alias`, fcnetd's mark) on the VLAN-aware `bridge`, up, with the
        bridge itself a tagged member of `vlan` (`bridge vlan add vid N dev
        BR self`) so the device's frames reach the VLAN's ports. Returns its
        index and whether it was made now. A device of that name without
        the mark is refused, never taken over. Only a kernel with 8021q and
        bridge VLAN filtering can do this."""
        device = Device("device", name)
        msg = await self._link(name, "device")
        created = msg is None
        if created:
            try:
                await self._rt("link", "add", ifname=name, kind="vlan", link=bridge.index, vlan_id=vlan)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise translate(e, device, "vlan_port", bridge.name) from e
            msg = await self._link(name, "device")
            if msg is None:
                raise Internal(f"{device}: deleted again right after it was created")
            await self._set_link(msg["index"], ifalias=alias)
        elif msg.get("ifalias") != alias:
            raise Internal(f"{device}: {_TAKEN}; fcnetd needs that name for a nat network's gateway")
        try:
            await self._rt("vlan_filter", "add", index=bridge.index, vlan_info={"vid": vlan},
                           vlan_flags=BRIDGE_FLAGS_SELF)
        except NetlinkError as e:
            raise translate(e, Device("bridge", bridge.name), "bridge_vlan", bridge.name) from e
        if not msg["flags"] & IFF_UP:
            await self.set_up(msg["index"], device)
        return msg["index"], created

    async def delete_vlan_port(self, name: str) -> None:
        """Deletes a VLAN device ensure_vlan_port made, and with it the
        bridge's own membership of that VLAN, which only the device needed.
        One already gone is success."""
        msg = await self._link(name, "device")
        if msg is None:
            return
        lower, vlan = msg.get("IFLA_LINK"), msg.get(("linkinfo", "data", "vlan_id"))
        await self.delete_link(name, Device("device", name))
        if lower and vlan:
            try:
                await self._rt("vlan_filter", "del", index=lower, vlan_info={"vid": vlan},
                               vlan_flags=BRIDGE_FLAGS_SELF)
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.ENODEV):
                    bridge = _ifname(lower)
                    raise translate(e, Device("bridge", bridge), "bridge_unvlan", bridge) from e

    async def vlan_ports(self, alias_prefix: str) -> dict[str, tuple[int, str]]:
        """Every VLAN device whose ifalias starts with `alias_prefix`, by
        name: (index, alias). One dump the kernel filters by kind (a kernel
        without the vlan kind ignores the filter and sends every link, which
        rawnetlink's parser walks at little cost), then one request per VLAN
        device for its alias: a host with thousands of TAPs is not decoded
        through."""
        parts = await self._link_dump([("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "vlan")]})],
                                      "(all VLAN devices)")
        found = {}
        for event in (e for data in parts for e in parse_link_events(data)):
            if event.kind != "vlan":
                continue
            msg = await self._link(event.ifname, "device")
            alias = (msg.get("ifalias") or "") if msg is not None else ""
            if alias.startswith(alias_prefix):
                found[event.ifname] = (msg["index"], alias)
        return found

    def _sync_socket(self) -> IPRoute:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            ipr = self._local.ipr = IPRoute()
            with self._sockets_lock:
                self._sync_sockets.append(ipr)
        return ipr

    def _delete_blocking(self, name: str, what: Device | str) -> None:
        try:
            self._sync_socket().link("del", ifname=name)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise translate(e, what, "delete") from e

    async def delete_link(self, name: str, what: Device | str | None = None) -> None:
        """Deletes a device (what: which one, for errors; a TAP by default);
        a device that is already gone is success."""
        await asyncio.get_running_loop().run_in_executor(
            self._pool, self._delete_blocking, name, what or Device("tap", name))


class LinkMonitor:
    """Link events for the daemon's life.

    open() subscribes: from then on the kernel queues every link change in
    the socket's buffer. So open it BEFORE reading the kernel's state at
    start-up (reconcile) and call run() after: nothing that changes while
    the state is read is lost. Events older than that read are delivered
    too; that is harmless, because each event carries its link's whole
    state and they come in order, so the newest wins.

    run(callback) calls callback(event: LinkEvent) for the newest event of
    each link in each batch (read EVENT_BATCH_SECONDS after the socket woke,
    off the latency path of the request that caused them; one event per
    link, because the older ones say nothing the newest does not),
    callback(event: PortVlans) likewise for the newest VLAN notice of each
    bridge port, and callback(None) when the kernel overran the buffer and
    events were lost: the caller must read the state again. A bridge's event
    gives its state as bridge_state_of(event)."""

    EVENT_BATCH_SECONDS = 0.005
    # A burst of a thousand VM starts sends ~7 MB of link events while the
    # loop is busy; the memory is taken only while they wait.
    RCVBUF = 16 << 20

    def __init__(self, sock: socket.socket | None = None):
        self.sock = sock

    def open(self) -> LinkMonitor:
        if self.sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
            try:  # beyond net.core.rmem_max, which CAP_NET_ADMIN may exceed
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.RCVBUF)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            sock.bind((0, RTMGRP_LINK))
            self.sock = sock
        return self

    async def run(self, callback: Callable[[LinkEvent | PortVlans | None], None]) -> None:
        """Delivers events until cancelled; closes the socket at the end."""
        sock = self.sock
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = sock.fileno()
        try:
            while True:
                loop.add_reader(fd, ready.set)
                await ready.wait()
                # The socket stays readable during the batch delay, so it
                # must leave the selector, or every turn of the loop would
                # wake for it (a busy spin).
                loop.remove_reader(fd)
                ready.clear()
                await asyncio.sleep(self.EVENT_BATCH_SECONDS)
                buffers, lost = [], False
                while True:
                    try:
                        buffers.append(sock.recv(1 << 16))
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno != errno.ENOBUFS:
                            raise
                        lost = True
                for event in latest_link_events(buffers):
                    callback(event)
                if lost:  # after what was read: the caller's re-read is newer
                    callback(None)
        finally:
            loop.remove_reader(fd)
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
