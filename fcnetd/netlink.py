"""Every netlink operation of fcnetd. pyroute2 (imported here only) builds
each message and carries all but two kinds: the VM-start path's link change
and the link events, which go through rawnetlink's leaner byte-level code.

Creates are idempotent, deletes tolerate a device that is already gone, and
kernel errors become domain errors in one place (_translate), by errno name.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute, IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from . import tundev
from .errors import BridgeFull, BridgeNotFound, FcnetError, Internal, TapExists, VlanUnsupported
from .model import parse_tap_tag, tap_tag
from .rawnetlink import IFF_UP, RTM_NEWLINK, RequestSocket, parse_link_events

VLAN_UNSUPPORTED_HINT = (
    "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); "
    "tagged networks need it, and fcnetd will not put them on a shared segment. "
    "Boot a kernel with bridge VLAN filtering (Debian's linux-image-amd64 has it) "
    "or use an untagged network")


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


def _translate(e: Exception, what: str) -> FcnetError:
    code = getattr(e, "code", None) or getattr(e, "errno", None)
    if code == errno.EOPNOTSUPP:
        return VlanUnsupported(f"{what}: {VLAN_UNSUPPORTED_HINT}")
    if code in (errno.EEXIST, errno.EBUSY):
        return TapExists(f"{what}: a device of that name already exists and was not created by fcnetd")
    if code == errno.ENODEV:
        return BridgeNotFound(f"{what}: no such device")
    if code == errno.EXFULL:
        return BridgeFull(f"{what}: the bridge is full (a Linux bridge holds at most 1,023 ports); "
                          "spread the VMs over more bridges")
    if code == errno.EPERM:
        return Internal(f"{what}: the daemon lacks CAP_NET_ADMIN")
    name = errno.errorcode.get(code, str(code))
    return Internal(f"{what}: kernel said {name}")


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

    EVENT_BATCH_SECONDS = 0.005
    MAX_IN_FLIGHT = 32  # requests on the async socket at once; more overran its buffer

    async def open(self) -> None:
        self.ipr = AsyncIPRoute()
        self._requests = RequestSocket()
        self._slots = asyncio.Semaphore(self.MAX_IN_FLIGHT)

    def _reopen(self) -> None:
        # pyroute2 marks a socket the kernel overran as failed for good
        self.ipr.close()
        self.ipr = AsyncIPRoute()

    async def _rt(self, method: str, *args, **kwargs):
        """One request, bounded in flight; after an overrun (ENOBUFS) the
        socket is replaced and the request tried once more."""
        async with self._slots:
            for attempt in (1, 2):
                try:
                    return await getattr(self.ipr, method)(*args, **kwargs)
                except OSError as e:
                    if e.errno != errno.ENOBUFS or attempt == 2:
                        raise
                    self._reopen()

    async def _set_link(self, index: int, master: int | None = None, ifalias: str | None = None,
                        mtu: int = 0, up: bool = False) -> None:
        """RTM_NEWLINK on an existing device, the VM-start path's request: an
        ifinfmsg built here (pyroute2's keyword front end, link("set", ...),
        took a quarter of the request's time preparing it), sent on the
        RequestSocket (its async transport took a third)."""
        msg = ifinfmsg()
        msg["index"] = index
        if up:
            msg["flags"] = msg["change"] = IFF_UP
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
    async def _link(self, name: str, what: str):
        """The link message of `name`, or None if there is no such device."""
        try:
            return (await self._rt("link", "get", ifname=name))[0]
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return None
            raise _translate(e, f"{what} {name}") from e

    async def bridge(self, name: str) -> BridgeState | None:
        msg = await self._link(name, "bridge")
        if msg is None:
            return None
        if msg.get(("linkinfo", "kind")) != "bridge":
            raise BridgeNotFound(f"bridge {name}: {name} exists but is not a bridge")
        return _bridge_state(msg)

    async def ensure_bridge(self, name: str, create: bool, mtu: int, vlan_filtering: bool) -> BridgeState:
        state = await self.bridge(name)
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
                    raise _translate(e, f"create bridge {name}") from e
            state = await self.bridge(name)
        if not state.up:
            await self._rt("link", "set", index=state.index, state="up")
        if vlan_filtering and not state.vlan_filtering:
            try:
                await self._rt("link", "set", index=state.index, kind="bridge", br_vlan_filtering=1)
            except NetlinkError as e:
                raise _translate(e, f"bridge {name}") from e
        return await self.bridge(name)

    # -- bridge port VLANs -----------------------------------------------
    async def port_vlans(self, index: int) -> dict[int, set[str]]:
        """VID -> flags ('pvid', 'untagged') of one bridge port."""
        result: dict[int, set[str]] = {}
        for msg in await self._dump("get_vlans", index=index):
            spec = msg.get("IFLA_AF_SPEC")
            if not spec:
                continue
            for name, info in spec["attrs"]:
                if name == "IFLA_BRIDGE_VLAN_INFO":
                    flags = set()
                    if info["flags"] & 0x2:
                        flags.add("pvid")
                    if info["flags"] & 0x4:
                        flags.add("untagged")
                    result[info["vid"]] = flags
        return result

    async def set_port_vlans(self, index: int, wanted: dict[int, set[str]], what: str) -> None:
        """Makes the port a member of exactly `wanted` (VID -> flags)."""
        try:
            current = await self.port_vlans(index)
            for vid, flags in wanted.items():
                if current.get(vid) != flags:
                    await self._rt("vlan_filter", "add", index=index,
                                               vlan_info={"vid": vid, "flags": sorted(flags)})
            for vid in current.keys() - wanted.keys():
                await self._rt("vlan_filter", "del", index=index, vlan_info={"vid": vid})
        except NetlinkError as e:
            raise _translate(e, what) from e

    # -- TAPs ------------------------------------------------------------
    async def create_tap(self, name: str, vm_id: str, nic: str, bridge: BridgeState, vlan: int,
                         uid: int | None, gid: int | None, mtu: int) -> TapState:
        """Creates, tags, plugs and raises a TAP; on failure nothing is left behind."""
        try:
            tundev.create_persistent_tap(name, uid, gid)
        except OSError as e:
            raise _translate(e, f"tap {name}") from e
        try:
            index = socket.if_nametoindex(name)  # one ioctl; link_lookup would dump every link
            if not vlan:
                await self._set_link(index, master=bridge.index, ifalias=tap_tag(vm_id, nic), mtu=mtu,
                                     up=True)
            else:
                await self._set_link(index, master=bridge.index, ifalias=tap_tag(vm_id, nic), mtu=mtu)
                # Enslaving made it a member of the bridge's default VLAN; a
                # tagged network's TAP must be in its own VLAN and no other.
                # It is still down, so no frame crossed in between.
                await self._rt("vlan_filter", "add", index=index,
                                           vlan_info={"vid": vlan, "flags": ["pvid", "untagged"]})
                if bridge.default_pvid and bridge.default_pvid != vlan:
                    await self._rt("vlan_filter", "del", index=index, vlan_info={"vid": bridge.default_pvid})
                await self._set_link(index, up=True)
        except BaseException as e:
            await self.delete_link(name)
            if isinstance(e, NetlinkError):
                raise _translate(e, f"tap {name}") from e
            raise
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

    async def set_master(self, index: int, master: int, what: str) -> None:
        try:
            await self._rt("link", "set", index=index, master=master)
        except NetlinkError as e:
            raise _translate(e, what) from e

    def _sync_socket(self) -> IPRoute:
        ipr = getattr(self._local, "ipr", None)
        if ipr is None:
            ipr = self._local.ipr = IPRoute()
            with self._sockets_lock:
                self._sync_sockets.append(ipr)
        return ipr

    def _delete_blocking(self, name: str) -> None:
        try:
            self._sync_socket().link("del", ifname=name)
        except NetlinkError as e:
            if e.code not in (errno.ENODEV, errno.ENOENT):
                raise _translate(e, f"delete {name}") from e

    async def delete_link(self, name: str) -> None:
        """Deletes a device; a device that is already gone is success."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._delete_blocking, name)

    # -- link events -------------------------------------------------------
    async def watch_links(self, callback, sock: socket.socket | None = None) -> None:
        """Calls callback(event, ifname, up, carrier) for every link change
        until cancelled; callback(None, None, False, False) after an overrun.
        sock: the event source, a link-group rtnetlink socket by default.
        The events are decoded by rawnetlink.parse_link_events."""
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((0, RTMGRP_LINK))
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fd = sock.fileno()
        try:
            while True:
                loop.add_reader(fd, ready.set)
                await ready.wait()
                # Let the request that caused these events answer first: the
                # events are read in one batch a moment later, off the
                # latency path of the D-Bus call in flight. The socket stays
                # readable meanwhile, so it must leave the selector, or every
                # turn of the loop would wake for it (a busy spin).
                loop.remove_reader(fd)
                ready.clear()
                await asyncio.sleep(self.EVENT_BATCH_SECONDS)
                while True:
                    try:
                        data = sock.recv(1 << 16)
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno == errno.ENOBUFS:  # events lost: the caller resyncs
                            callback(None, None, False, False)
                            continue
                        raise
                    for event in parse_link_events(data):
                        callback(*event)
        finally:
            loop.remove_reader(fd)
            sock.close()
