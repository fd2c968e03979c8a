"""Probe ports: fcnetd's own short-lived ports in a bridge, for the probes
(dhcpprobe.py, isolationprobe.py) that send and watch frames there.

A probe port is a veth pair made, used and deleted inside one call: its
bridge-side end (`b`) is a port of the bridge, in the VLANs the probe asks
for (none asked: a plain port, in the bridge's default VLAN as enslaving
left it, as a TAP of an untagged network is); its other end (`d`) stays in
the daemon's namespace with no address, for a raw socket.

Both ends are named `fcprobe<4 digits>{b,d}` and carry the ifalias
`fcnetd-probe:<network id>`. The kernel cannot set an alias while it makes
the pair, so a daemon killed between the two steps leaves a veth with the
name and no alias: reap() takes both for probe ports (a veth of that name
with another alias is not fcnetd's and is left alone).
"""

from __future__ import annotations

import asyncio
import errno
import random

from .errors import FcnetError, Internal
from .netlink import Device, Netlink, translate

PREFIX = "fcprobe"
MARK = "fcnetd-probe:"
NAME_TRIES = 8
READY_SECONDS = 3.0  # the kernel raises a veth's carrier within a second (linkwatch)


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _no_ipv6(name: str) -> None:
    """No link-local address, router solicitation or DAD from a port that lives a second or two."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1\n")
    except OSError:
        pass  # no IPv6 in this kernel


class ProbePort:
    """`async with ProbePort(netlink, network_id, bridge, index, vlans) as port:`
    a probe port plugged into `bridge` (`index`), a member of exactly
    `vlans` (VID -> flags, 'pvid' and 'untagged'; None: a plain port);
    deleted on the way out, whatever happened (a cancelled call included).
    port.own is the daemon's end, port.mac its MAC."""

    def __init__(self, netlink: Netlink, network_id: str, bridge: str, bridge_index: int,
                 vlans: dict[int, set[str]] | None):
        self.netlink, self.network_id = netlink, network_id
        self.bridge, self.bridge_index, self.vlans = bridge, bridge_index, vlans
        self.port = self.own = ""
        self.mac = ""

    async def __aenter__(self) -> ProbePort:
        await self._create()
        try:
            await self._plug()
        except BaseException:
            await self._delete()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self._delete()

    async def _create(self) -> None:
        for attempt in range(NAME_TRIES):
            stem = f"{PREFIX}{random.randrange(10**4):04d}"
            try:
                await self.netlink.create_veth(stem + "b", stem + "d")
            except Exception as e:
                if getattr(e, "code", None) == errno.EEXIST and attempt < NAME_TRIES - 1:
                    continue
                raise translate(e, Device("device", stem + "b"), "create") from e
            self.port, self.own = stem + "b", stem + "d"
            return

    async def _plug(self) -> None:
        alias = MARK + self.network_id
        indexes = {}
        for name in (self.port, self.own):
            msg = await self.netlink.link(name)
            if msg is None:
                raise Internal(f"probe port {name}: deleted right after it was made")
            indexes[name] = msg["index"]
            if name == self.own:
                self.mac = msg.get("address")
            await self.netlink.set_alias(msg["index"], alias, Device("device", name))
            _no_ipv6(name)
        port = Device("device", self.port)
        await self.netlink.set_master(indexes[self.port], self.bridge_index, port, self.bridge)
        if self.vlans is not None:
            # Exactly these (not the bridge's default VLAN, which enslaving
            # gave it, unless asked for); still down, so nothing crossed it.
            await self.netlink.set_port_vlans(indexes[self.port], self.vlans, port)
        for name in (self.port, self.own):
            await self.netlink.set_up(indexes[name], Device("device", name))

    async def ready(self) -> None:
        """Waits until both ends have carrier (the bridge forwards through
        a port only then); the kernel's linkwatch raises it within a second."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_SECONDS
        while loop.time() < deadline:
            states = [await self.netlink.link(n) for n in (self.port, self.own)]
            if all(m is not None and m.get("operstate") == "UP" for m in states):
                return
            await asyncio.sleep(0.02)
        raise Internal(f"probe port {self.port} on bridge {self.bridge} got no carrier in {READY_SECONDS:g} s")

    async def _delete(self) -> None:
        if self.port:
            # Shielded: a cancelled call still deletes its port.
            await asyncio.shield(self.netlink.delete_link(self.port, Device("device", self.port)))


async def reap(netlink: Netlink) -> list[str]:
    """Deletes every probe port a killed daemon left; returns their names.
    Run with nothing probing (reconcile holds the engine's gate alone)."""
    reaped = []
    for event in await netlink.links_of_kind("veth"):
        name = event.ifname or ""
        if not name.startswith(PREFIX) or name[-1] not in "bd":
            continue
        msg = await netlink.link(name)
        alias = (msg.get("ifalias") or "") if msg is not None else None
        if alias is None or (alias and not alias.startswith(MARK)):
            continue  # gone with its peer already, or not fcnetd's
        try:
            await netlink.delete_link(name, Device("device", name))
        except FcnetError:
            continue
        reaped.append(name)
    return reaped
