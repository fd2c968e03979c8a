"""The kernel-and-process side of nat networks, behind the one object the
engine talks to (engine.nat): each network's gateway address on its L3
port, the nft table (firewall.py), IPv4 forwarding, and one dnsmasq per
network with DHCP (dnsmasq.py).

What fcnetd made carries its mark, and nothing without one is touched:
gateway addresses have IFA_PROTO 0xfc, a tagged network's VLAN device the
ifalias `fcnetd-l3:<network id>`, the table is `inet fcnetd`, a dnsmasq
is named by its pidfile and serves a leases file in <state_dir>/nat/. So
converge (reconcile) can keep what a killed daemon left, and reap what
belongs to no network any more.

Networks and attachments are the engine's objects; only these attributes
are read: Network id, name, bridge, vlan, mode, subnet, dhcp, gateway;
Attachment mac, ip.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from . import dnsmasq, dnsmasq_unit, faultpoint
from .dnsmasq import ChildDnsmasq, Dnsmasq
from .dnsmasq_unit import UnitDnsmasq
from .errors import FcnetError, Internal
from .firewall import Firewall, NatNet, counter_names
from .netlink import FCNETD_ADDRESS_PROTO, BridgeState, Device, Netlink

log = logging.getLogger("fcnetd.nat")

L3_PORT_TAG = "fcnetd-l3:"  # + network id: the ifalias of a VLAN device fcnetd made as an L3 port
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"  # per network namespace
IFNAMSIZ = 15


def l3_port(net) -> str:
    """The device a nat network's gateway lives on: the bridge when
    untagged, else a VLAN device on it, `<bridge>.<vlan>` when that fits."""
    if not net.vlan:
        return net.bridge
    name = f"{net.bridge}.{net.vlan}"
    return name if len(name) <= IFNAMSIZ else f"fcgw{net.vlan}x{net.id.replace('-', '')[:4]}"


def gateway_interface(net) -> IPv4Interface:
    return IPv4Interface(f"{net.gateway}/{IPv4Network(net.subnet).prefixlen}")


def enable_forwarding() -> bool:
    """Turns IPv4 forwarding on (never off: other things on the host may
    rely on it once it is on); True if it was off."""
    try:
        with open(IP_FORWARD) as f:
            if f.read().strip() == "1":
                return False
        with open(IP_FORWARD, "w") as f:
            f.write("1\n")
    except OSError as e:
        raise Internal(f"cannot turn on IPv4 forwarding ({IP_FORWARD}): {e.strerror}; "
                       "nat networks need it (net.ipv4.ip_forward=1)") from e
    log.info("turned on IPv4 forwarding (net.ipv4.ip_forward=1) for nat networks")
    return True


class NatPlane:
    def __init__(self, netlink: Netlink, state_dir: str):
        self.netlink = netlink
        self.state_dir = state_dir
        self.directory = os.path.join(state_dir, "nat")
        self._firewall: Firewall | None = None  # libnftables is loaded once a nat network needs it
        self._networks: dict[str, object] = {}  # the nat networks set up, by id
        self._dnsmasq: dict[str, Dnsmasq] = {}  # by network id
        self._systemd = None  # where each dnsmasq is a unit of its own (use_systemd)
        # converge's repairs, for the audit trail (the engine sets it: Engine.on_change)
        self.report = lambda action, **about: None

    @property
    def firewall(self) -> Firewall:
        if self._firewall is None:
            self._firewall = Firewall()
        return self._firewall

    def _apply_firewall(self, networks: Iterable) -> None:
        networks = list(networks)
        self.firewall.apply(
            [NatNet(n.id, IPv4Network(n.subnet), IPv4Address(n.gateway), l3_port(n)) for n in networks
             if n.mode == "nat"],
            [IPv4Network(n.subnet) for n in networks if n.subnet])

    async def use_systemd(self, conn) -> None:
        """Before the first reconcile: each dnsmasq a unit of its own where
        systemd can run it, else fcnetd's child (dnsmasq_unit.py says why)."""
        self._systemd = await dnsmasq_unit.attach(conn, self.directory)
        log.info("nat networks' dnsmasq: %s", f"one unit each, {dnsmasq_unit.TEMPLATE}" if self._systemd
                 else "fcnetd's child processes (no systemd with fcnetd's dnsmasq unit on this bus)")

    def _new_dnsmasq(self, net) -> Dnsmasq:
        where = (self.state_dir, self.directory, net.id, net.name, l3_port(net), IPv4Network(net.subnet),
                 IPv4Address(net.gateway))
        return UnitDnsmasq(self._systemd, *where) if self._systemd else ChildDnsmasq(*where)

    async def _reap_network(self, network_id: str) -> None:
        if self._systemd:
            await dnsmasq_unit.reap_network(self._systemd, self.directory, network_id)
        else:
            await dnsmasq.reap_network(self.directory, network_id)

    async def dnsmasq_pid(self, net) -> int | None:
        """The pid of the dnsmasq serving the network now, asked afresh."""
        server = self._dnsmasq.get(net.id) or self._new_dnsmasq(net)
        return await server.live_pid()

    async def _port_index(self, net, bridge: BridgeState) -> tuple[int, bool]:
        """The L3 port's index, and whether it was made now."""
        if not net.vlan:
            return bridge.index, False
        return await self.netlink.ensure_vlan_port(bridge, net.vlan, l3_port(net), L3_PORT_TAG + net.id)

    # -- the engine's calls ---------------------------------------------------
    async def host_prefixes(self) -> list[tuple[IPv4Network, str]]:
        """The host's IPv4 addresses (as their networks) and routes, each
        described, but default routes and fcnetd's own gateway addresses;
        an address's own prefix route is left out (its address says it)."""
        addresses = await self.netlink.addresses()
        routes = await self.netlink.routes()
        on_link = {(a.index, a.interface.network) for a in addresses}
        found = [(a.interface.network, f"address {a.interface} on {a.ifname}") for a in addresses
                 if a.proto != FCNETD_ADDRESS_PROTO]
        for route in routes:
            if (route.index, route.network) not in on_link:
                via = f"{route.gateway} ({route.ifname})" if route.gateway else route.ifname or "several paths"
                found.append((route.network, f"route {route.network} via {via}"))
        return found

    async def network_added(self, net, port: BridgeState, networks: Iterable) -> None:
        networks = list(networks)
        undo = []
        try:
            index, created = await self._port_index(net, port)
            name = l3_port(net)
            if created:
                undo.append(lambda: self.netlink.delete_vlan_port(name))
            # The firewall before the address: the port never reaches the
            # host unfiltered.
            self._apply_firewall(networks)
            undo.append(self._firewall_without(net, networks))
            faultpoint.reached("nat.firewall-applied")
            interface = gateway_interface(net)
            if await self.netlink.add_address(index, interface, Device("device", name)):
                undo.append(lambda: self.netlink.delete_address(index, interface, Device("device", name)))
            faultpoint.reached("nat.gateway-added")
            enable_forwarding()
            if net.dhcp:
                server = self._new_dnsmasq(net)
                await server.start({})
                self._dnsmasq[net.id] = server
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.exception("nat network %s: undoing a step of its set-up failed; reconcile will", net.name)
            raise
        self._networks[net.id] = net

    def _firewall_without(self, net, networks: list):
        async def undo():
            self._apply_firewall(n for n in networks if n.id != net.id)
        return undo

    async def network_removed(self, net, networks: Iterable) -> None:
        self._networks.pop(net.id, None)
        server = self._dnsmasq.pop(net.id, None)
        try:
            if server is not None:
                await server.stop()
                server.remove_files()
            else:
                await self._reap_network(net.id)
        except Exception:
            log.exception("nat network %s: stopping its dnsmasq failed; reconcile will", net.name)
        try:
            await self._remove_l3(net)
        except Exception:
            log.exception("nat network %s: removing its gateway failed; reconcile will", net.name)
        try:
            self._apply_firewall(networks)
        except Exception:
            log.exception("nat network %s: removing its firewall rules failed; reconcile will", net.name)

    async def _remove_l3(self, net) -> None:
        interface = gateway_interface(net)
        name = l3_port(net)
        for address in await self.netlink.addresses():
            if address.proto == FCNETD_ADDRESS_PROTO and address.interface == interface:
                await self.netlink.delete_address(address.index, interface, Device("device", address.ifname))
        if net.vlan:
            ports = await self.netlink.vlan_ports(L3_PORT_TAG + net.id)
            if name in ports:
                await self.netlink.delete_vlan_port(name)

    async def fence_changed(self, networks: Iterable) -> None:
        """After the commit that added or removed a bridge network with a
        subnet: the nat networks' fence follows (they may forward to no
        fcnetd network). Never raises: converge repairs."""
        if not self._networks:
            return
        try:
            self._apply_firewall(networks)
        except FcnetError as e:
            log.error("the fence of the nat networks did not follow a network change: %s; reconcile will", e)

    async def leases_changed(self, net, attachments: Iterable, released: Iterable = ()) -> None:
        server = self._dnsmasq.get(net.id)
        if server is None:
            return  # no DHCP on it, or not set up (converge repairs that)
        try:
            await server.update(_hosts(attachments), [(a.mac, a.ip) for a in released if a.mac and a.ip])
        except Exception:
            log.exception("nat network %s: telling dnsmasq of its leases failed; reconcile will", net.name)

    async def converge(self, networks: Iterable, attachments_by_network: Mapping[str, Iterable],
                       bridges: Mapping[str, BridgeState | None]) -> dict[str, int]:
        """attachments_by_network: network id -> its attachments;
        bridges: bridge name -> its state (None: missing)."""
        networks = list(networks)
        counts = {"adopted": 0, "reaped": 0, "drift": 0, "error": 0}
        nat = {n.id: n for n in networks if n.mode == "nat"}
        present = {i: n for i, n in nat.items() if bridges.get(n.bridge) is not None}
        for net in nat.values():
            if net.id not in present:
                log.warning("nat network %s: bridge %s is missing; its gateway and DHCP wait for it",
                            net.name, net.bridge)
        self._networks = nat
        # The firewall first, as network_added does: no gateway answers
        # on a port the table does not yet guard.
        steps = (self._converge_firewall(networks, counts), self._converge_l3(present, bridges, counts),
                 self._converge_dnsmasq(nat, present, attachments_by_network, counts))
        for step in steps:
            try:
                await step
            except FcnetError as e:
                log.error("reconcile of nat networks: %s", e)
                counts["error"] += 1
        return counts

    async def _converge_l3(self, present: dict, bridges: Mapping, counts: dict) -> None:
        ours = {(a.index, a.interface): a for a in await self.netlink.addresses()
                if a.proto == FCNETD_ADDRESS_PROTO}
        ports = await self.netlink.vlan_ports(L3_PORT_TAG)
        wanted_addresses, wanted_ports = set(), set()
        for net in present.values():
            name = l3_port(net)
            if net.vlan:  # wanted before it is tried: a failure below must not reap it
                wanted_ports.add(name)
            try:
                index, created = await self._port_index(net, bridges[net.bridge])
                if net.vlan:
                    counts["drift" if created else "adopted"] += 1
                    if created:
                        self._repaired(net, "gateway-port")
                key = (index, gateway_interface(net))
                wanted_addresses.add(key)
                if key in ours:
                    counts["adopted"] += 1
                else:
                    log.warning("nat network %s: gateway %s was missing on %s; added", net.name, key[1], name)
                    await self.netlink.add_address(index, key[1], Device("device", name))
                    counts["drift"] += 1
                    self._repaired(net, "gateway")
            except FcnetError as e:
                log.error("nat network %s: %s", net.name, e)
                counts["error"] += 1
                wanted_addresses.update(key for key in ours if key[1] == gateway_interface(net))
        for (index, interface), address in ours.items():
            if (index, interface) not in wanted_addresses:
                log.info("removing gateway address %s from %s: its nat network is gone", interface, address.ifname)
                await self.netlink.delete_address(index, interface, Device("device", address.ifname))
                counts["reaped"] += 1
        for name in ports.keys() - wanted_ports:
            log.info("removing %s, the gateway port of a nat network that is gone", name)
            await self.netlink.delete_vlan_port(name)
            counts["reaped"] += 1

    async def _converge_firewall(self, networks: list, counts: dict) -> None:
        before = self.firewall.listing()
        self._apply_firewall(networks)
        after = self.firewall.listing()
        if after is None:
            counts["reaped"] += before is not None
        elif before == after:
            counts["adopted"] += 1
        else:
            log.warning("the nft table inet fcnetd differed from what the registry implies; rebuilt it")
            counts["drift"] += 1
            self._repaired(None, "firewall")
        if self._networks and enable_forwarding():
            counts["drift"] += 1
            self._repaired(None, "forwarding")

    async def _converge_dnsmasq(self, nat: dict, present: dict, attachments_by_network: Mapping,
                                counts: dict) -> None:
        served = {i: n for i, n in present.items() if n.dhcp}
        for network_id in list(self._dnsmasq.keys() - served.keys()):
            await self._dnsmasq.pop(network_id).stop()  # its files go below if its network is gone
        for network_id, net in served.items():
            hosts = _hosts(attachments_by_network.get(network_id, ()))
            server = self._dnsmasq.get(network_id)
            if server is not None and server.settings != self._new_dnsmasq(net).settings:
                # A hand edit gave the network another subnet (or port):
                # the running one serves the old range.
                log.warning("%r serves what network %s was; starting it anew", server, net.name)
                await self._dnsmasq.pop(network_id).stop()
                server = None
                counts["drift"] += 1
            if server is not None:
                await server.update(hosts)
                counts["adopted"] += 1
                continue
            try:
                server = self._new_dnsmasq(net)
            except FcnetError as e:
                log.error("nat network %s: %s", net.name, e)
                counts["error"] += 1
                continue
            self._dnsmasq[network_id] = server
            try:
                outcome = await server.adopt(hosts)
                if outcome == "adopted":
                    counts["adopted"] += 1
                    continue
                counts["drift"] += 1
                if not outcome:
                    await server.start(hosts)
                self._repaired(net, "dnsmasq")
            except FcnetError as e:
                log.error("nat network %s: %s; trying again", net.name, e)
                counts["error"] += 1
                server.retry()
        kept = {i for i, n in nat.items() if n.dhcp}  # a missing bridge's network keeps its leases
        reaped = set(await dnsmasq_unit.reap(self._systemd, kept)) if self._systemd else set()
        counts["reaped"] += len(reaped | set(await dnsmasq.reap(self.directory, kept)))

    def _repaired(self, net, what: str) -> None:
        self.report("drift-repaired", by_daemon=True, network=net, repaired=what)

    async def close(self) -> None:
        servers, self._dnsmasq = list(self._dnsmasq.values()), {}
        await asyncio.gather(*(s.stop() for s in servers))

    def metric_sources(self) -> dict:
        """Per nat network id, where its metrics come from, read without
        I/O (the event loop calls it): (leases file or None, counter
        names, dnsmasq restarts). read_metrics does the reading."""
        sources = {}
        for network_id in self._networks:
            server = self._dnsmasq.get(network_id)
            sources[network_id] = (server.lease_file if server else None, counter_names(network_id),
                                   server.restarts if server else 0)
        return sources

    def snapshot(self) -> dict:
        return read_metrics(self.metric_sources(), self.firewall)


def read_metrics(sources: Mapping, reader: Firewall) -> dict:
    """Per nat network id: leases (DHCP leases its dnsmasq holds), counters
    (name -> (packets, bytes)) and dnsmasq_restarts. Does the file and
    netlink reads, so the metrics refresh calls it in its worker thread,
    with a Firewall of its own (a libnftables context is not shared
    between threads)."""
    counters = {}
    if sources:
        try:
            counters = reader.counters()
        except FcnetError as e:
            log.warning("metrics: %s", e)
    return {network_id: {"leases": dnsmasq.count_leases(lease_file) if lease_file else 0,
                         "counters": {name: counters.get(name, (0, 0)) for name in names},
                         "dnsmasq_restarts": restarts}
            for network_id, (lease_file, names, restarts) in sources.items()}


def _hosts(attachments: Iterable) -> dict[str, str]:
    return {a.mac.lower(): a.ip for a in attachments if a.mac and a.ip}

