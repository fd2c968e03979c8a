"""Crash safety of nat networks (issue 10, "Faults"): fcnetd killed with
SIGKILL at each NAT step boundary (fcnetd/faultpoint.py) in the middle of
an AttachVm / CreateTap / DetachVm burst on two nat networks over several
connections (a third is created and deleted meanwhile), restarted, and
these read back from the kernel, the processes and the files:

- the registry and its journal load;
- every acknowledged attachment is there with the Ip and Mac the daemon
  reported, no acknowledged detach or delete is undone, no address or MAC
  is held by two attachments of a network;
- exactly one dnsmasq per nat network with DHCP, none for a network that
  is gone (found by /proc/*/cmdline naming the state dir's nat/ files);
- its hosts file equals the registry's reservations; each lease in its
  leases file is a current reservation's, with the same MAC; the leases
  of VMs still attached are kept;
- the nft table `inet fcnetd` is, structurally, what fcnetd/firewall.py
  renders for the registry; an admin's `table inet admin` is untouched;
- fcnetd's gateway addresses (IFA_PROTO 0xfc) are exactly one per nat
  network, on its port; an admin's address on the bridge is untouched;
- a real DHCP client with each reservation's MAC gets exactly its address
  (and, for some points, a guest on the VM's TAP through fcnetd.relay).

Then a dnsmasq killed in the middle of a burst: restarted by the daemon,
its leases kept, every call answered, one dnsmasq per network after.

Each run starts from a state made by an unarmed daemon (nat networks,
attached VMs with TAPs, leases taken by a DHCP client) and stopped cleanly,
so the armed count of a point counts only the burst's passes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from fcnetd.bus import DBusError
from fcnetd.nat import l3_port
from fcnetd.registry import Snapshot, read_registry
from fcnetd.testbus import PrivateBus
from tests.system.guestnet import Guest, dnsmasq_pids
from tests.system.harness import Daemon, Netns, Pool, v, wait_for

from .natstate import (ADMIN_TABLE, LanClient, addresses, expected_fcnetd_table, gateways, hosts_entries,
                       lease_entries, nat_file, nft, table_json)

NETS = {"fcbr0": "", "fcbr1": "10.213.7.0/24"}  # bridge -> subnet asked for ("" picks from the pool)
SPARE, SPARE_SUBNET = "fcbr2", "10.213.9.0/24"  # a nat network created, used and deleted during the burst
ADMIN_ADDRESS = IPv4Interface("192.0.2.1/24")  # an admin's own, on fcbr0 before fcnetd starts
FIRST = 4  # VMs per network attached before the burst; the first two take a lease
NEW = 4  # VMs per network attached during the burst

# point -> its passes during the burst before the kill (see the burst's calls)
ARMED = {
    "nat.firewall-applied": 1,   # the spare network is the burst's only creation
    "nat.gateway-added": 1,
    "create.nat-ready": 1,
    "attach.committed": 7,       # of 11 nat attachments
    "dnsmasq.hosts-written": 2,  # of at least 8 hosts-file writes; the early ones add VMs, whose loss DHCP shows
    "detach.committed": 1,       # of 5 nat detaches: a leased VM's, as each network's come first
    "delete.committed": 1,       # the spare network's
}
# A guest on the VM's TAP (fcnetd.relay, busybox udhcpc) after these kills.
GUEST_AFTER = {"dnsmasq.hosts-written", "detach.committed"}


def vm(bridge: str, i) -> str:
    return f"vm-{bridge}-{i}"


class Acks:
    """What the daemon answered as done, and what it reported."""

    def __init__(self):
        self.attached: dict[str, str] = {}  # vm -> bridge
        self.reported: dict[str, tuple[str, str]] = {}  # vm -> (Ip, Mac) from GetNetwork
        self.detaching: set[str] = set()
        self.detached: set[str] = set()
        self.created: set[str] = set()  # networks, by name
        self.deleting: set[str] = set()
        self.deleted: set[str] = set()
        self.refused: list[str] = []  # errors of calls the daemon answered while alive

    async def call(self, pool: Pool, member: str, signature: str, *body):
        try:
            return await pool.call(member, signature, *body)
        except DBusError as e:
            if not e.type.startswith("org.freedesktop.DBus.Error."):  # the bus's: cut off by the kill
                self.refused.append(f"{member}{body[:2]}: {e.type}: {e.text}")
            return None

    async def attach(self, pool: Pool, name: str, bridge: str, **opts) -> bool:
        if await self.call(pool, "AttachVm", "ssqa{sv}", name, bridge, 0,
                          {k: v("s", val) for k, val in opts.items()}) is None:
            return False
        self.attached[name] = bridge
        # A launcher reads the VM's address and MAC to start it with them.
        net = await self.call(pool, "GetNetwork", "s", bridge)
        if net is not None:
            entry = next((e for e in net[0]["Vms"] if e["VmId"] == name), None)
            if entry is not None:
                self.reported[name] = (entry["Ip"], entry["Mac"])
        return True

    async def detach(self, pool: Pool, name: str) -> None:
        self.detaching.add(name)
        if await self.call(pool, "DetachVm", "ss", name, "eth0") is not None:
            self.detached.add(name)
            self.attached.pop(name, None)

    async def tap(self, pool: Pool, name: str) -> None:
        await self.call(pool, "CreateTap", "ssa{sv}", name, "eth0", {})


class NatHost:
    """A namespace with an admin's bridge address and nft table, a bus, a
    config allowing three bridges, a DHCP client on each nat bridge, and
    the state an unarmed fcnetd left there (see prepare)."""

    def __init__(self, workdir: str):
        self.ns = Netns()
        self.bus = PrivateBus().start()
        self.state = os.path.join(workdir, "state")
        self.config = os.path.join(workdir, "fcnetd.toml")
        with open(self.config, "w") as f:
            f.write('[daemon]\nhost = "node1"\n\n'
                    + "".join(f"[bridges.{b}]\ncreate = true\n\n" for b in (*NETS, SPARE)))
        self.daemon: Daemon | None = None
        self.clients: dict[str, LanClient] = {}
        self.leased: dict[str, tuple[str, str]] = {}  # vm -> (MAC, address) a client took before the burst
        self.ns.ip("link", "add", "fcbr0", "type", "bridge")
        self.ns.ip("address", "add", str(ADMIN_ADDRESS), "dev", "fcbr0")
        nft(self.ns, "-f", "-", stdin=ADMIN_TABLE)
        self.admin_table = table_json(self.ns, "inet", "admin")

    def start(self, point: str = "") -> Daemon:
        """fcnetd, armed to kill itself at `point` if given (read at its start)."""
        if point:
            os.environ["FCNETD_FAULT_POINT"] = f"{point}:{ARMED[point]}"
        try:
            self.daemon = Daemon(self.ns, self.bus, self.state, self.config).start(timeout=60)
        finally:
            os.environ.pop("FCNETD_FAULT_POINT", None)
        return self.daemon

    def prepare(self) -> Acks:
        """Two nat networks with FIRST VMs each, their TAPs, and leases taken
        by the first two of each; then a clean stop (dnsmasq ends, its
        leases stay on disk)."""
        self.start()
        acks = Acks()

        async def calls():
            async with Pool(self.bus.address, 3) as pool:
                for bridge, subnet in NETS.items():
                    opts = {"mode": v("s", "nat"), **({"subnet": v("s", subnet)} if subnet else {})}
                    await pool.call("CreateNetwork", "ssqa{sv}", "", bridge, 0, opts)
                    acks.created.add(bridge)
                names = [(vm(b, i), b) for b in NETS for i in range(FIRST)]
                await asyncio.gather(*(acks.attach(pool, name, b) for name, b in names))
                await asyncio.gather(*(acks.tap(pool, name) for name, _ in names))
        asyncio.run(calls())
        assert not acks.refused and len(acks.reported) == FIRST * len(NETS), acks.refused
        for bridge in NETS:
            self.clients[bridge] = LanClient(self.ns, bridge, bridge[-1])
            for i in range(2):
                ip, mac = acks.reported[vm(bridge, i)]
                assert self.clients[bridge].lease(mac) == ip, f"{vm(bridge, i)} got no lease of {ip} before the burst"
                self.leased[vm(bridge, i)] = (mac.lower(), ip)
        assert self.daemon.stop() == 0, self.daemon.output()[-2000:]
        return acks

    def close(self) -> None:
        try:
            if self.daemon is not None:
                self.daemon.stop()
                print(self.daemon.output()[-6000:])  # shown by pytest if the test failed
        finally:
            # A failed test must not leave this state dir's dnsmasq running.
            for pid in dnsmasq_pids(self.state):
                os.kill(pid, signal.SIGKILL)
            for client in self.clients.values():
                client.close()
            self.bus.stop()
            self.ns.delete()


@pytest.fixture
def host():
    # Not under pytest's basetemp: another pytest session on the machine
    # makes /tmp/pytest-of-<user> 0700 again, and dnsmasq (user dnsmasq)
    # must reach its hosts file below it.
    workdir = tempfile.mkdtemp(prefix="fcnetd-natkill-")
    h = NatHost(workdir)
    yield h
    h.close()
    shutil.rmtree(workdir, ignore_errors=True)


async def burst(host: NatHost, acks: Acks, on_reply=None) -> None:
    """Per nat network: DetachVm of a leased VM, AttachVm (+ GetNetwork,
    CreateTap) of one asking for its address, DetachVm of an unleased VM;
    meanwhile AttachVm (+ GetNetwork, CreateTap) of NEW VMs, and the spare
    network created, given a VM and deleted. Over three connections."""
    async with Pool(host.bus.address, 3) as pool:
        async def counted(coro):
            await coro
            if on_reply is not None:
                on_reply()

        async def start_vm(name, bridge, **opts):
            if await acks.attach(pool, name, bridge, **opts):
                await counted(acks.tap(pool, name))

        async def spare():
            opts = {"mode": v("s", "nat"), "subnet": v("s", SPARE_SUBNET)}
            if await acks.call(pool, "CreateNetwork", "ssqa{sv}", "", SPARE, 0, opts) is None:
                return
            acks.created.add(SPARE)
            if await acks.attach(pool, vm(SPARE, 0), SPARE):
                await acks.detach(pool, vm(SPARE, 0))
            acks.deleting.add(SPARE)
            if await acks.call(pool, "DeleteNetwork", "s", SPARE) is not None:
                acks.deleted.add(SPARE)

        async def reuse(bridge):
            # A leased VM leaves, then one asks for its address (it may
            # lose it to a NEW VM's lowest free one: AddressUnavailable).
            reused = acks.reported[vm(bridge, 0)][0]
            await counted(acks.detach(pool, vm(bridge, 0)))
            await start_vm(vm(bridge, "s"), bridge, ip=reused)
            await counted(acks.detach(pool, vm(bridge, 2)))

        jobs = [spare()]
        for bridge in NETS:
            jobs.append(reuse(bridge))
            jobs += [start_vm(vm(bridge, FIRST + i), bridge) for i in range(NEW)]
        await asyncio.gather(*jobs)


def check_after_restart(host: NatHost, acks: Acks, what: str) -> Snapshot:
    """The invariants of the module's docstring; `what` names the fault."""
    ns, state = host.ns, host.state
    reg, skipped = read_registry(state)
    assert skipped == [], f"journal records that did not fit: {skipped}"
    names = {n.name: n for n in reg.networks.values()}
    atts = {key[0]: att for key, att in reg.attachments.items()}

    # acknowledged changes
    for name, bridge in acks.attached.items():
        if name in acks.detaching:
            continue
        assert name in atts, f"acknowledged attachment of {name} lost ({what})"
        assert reg.networks[atts[name].network_id].bridge == bridge
        if name in acks.reported:
            assert (atts[name].ip, atts[name].mac) == acks.reported[name], \
                f"{name} holds another address or MAC than reported ({what})"
    assert not acks.detached & atts.keys(), f"acknowledged detaches undone: {acks.detached & atts.keys()} ({what})"
    assert not acks.deleted & names.keys(), f"acknowledged deletes undone: {acks.deleted & names.keys()} ({what})"
    assert (acks.created - acks.deleting) <= names.keys(), f"acknowledged networks lost ({what})"

    # reservations: one address and one MAC per attachment, inside the subnet
    nat = {n.id: n for n in reg.networks.values() if n.mode == "nat"}
    reserved = reservations(reg)
    for net_id, net in nat.items():
        mine = [a for a in reg.attachments.values() if a.network_id == net_id]
        ips, macs = [a.ip for a in mine], [a.mac.lower() for a in mine]
        assert len(set(ips)) == len(ips), f"an address held twice on {net.name}: {sorted(ips)} ({what})"
        assert len(set(macs)) == len(macs), f"a MAC held twice on {net.name}: {sorted(macs)} ({what})"
        subnet = IPv4Network(net.subnet)
        for ip in ips:
            assert IPv4Address(ip) in subnet and ip != net.gateway, f"{ip} on {net.name} ({net.subnet})"

    # dnsmasq: one per nat network with DHCP, none for a network that is gone
    served = {i for i, n in nat.items() if n.dhcp}
    for net_id in served:
        pids = dnsmasq_pids(state, net_id)
        assert len(pids) == 1, f"{len(pids)} dnsmasq for network {nat[net_id].name}: {pids} ({what})"
    stray = dnsmasq_pids(state) - set().union(*(dnsmasq_pids(state, i) for i in served))
    assert not stray, f"dnsmasq of a network that is gone: {stray} ({what})"
    left = {name.split(".", 1)[0] for name in os.listdir(os.path.join(state, "nat"))}
    assert left <= served, f"nat files of networks that are gone: {left - served} ({what})"

    # its files: hosts = reservations; leases only of reservations, the kept ones kept
    for net_id in served:
        hosts = nat_file(state, net_id, ".hosts")
        assert hosts is not None and hosts_entries(hosts) == reserved[net_id], \
            f"hosts file of {nat[net_id].name} differs from the registry ({what}):\n{hosts}"

    # Leases kept: those of VMs nobody asked to detach. One whose DetachVm
    # was cut off by the kill may still be attached, but its TAP went first
    # (the VM was off the network), and a concurrent call may have released
    # its lease before the removal was durable; its reservation stays.
    # dnsmasq rewrites its leases file in place (truncate, write), so one
    # read can see it empty: the condition must hold on two reads in a row.
    kept = {}
    for name, lease in host.leased.items():
        if name in atts and name not in acks.detaching and (atts[name].mac.lower(), atts[name].ip) == lease:
            kept.setdefault(atts[name].network_id, set()).add(lease)

    def lease_problems():
        problems = []
        for net_id in served:
            found = set(lease_entries(nat_file(state, net_id, ".leases")))
            if stale := found - reserved[net_id]:
                problems.append(f"{nat[net_id].name}: leases of no current reservation {sorted(stale)}")
            if lost := kept.get(net_id, set()) - found:
                problems.append(f"{nat[net_id].name}: leases of attached VMs lost {sorted(lost)}")
        return problems
    held = []
    try:
        wait_for(lambda: held.append(not lease_problems()) or held[-2:] == [True, True], 5,
                 what="leases of no reservation to be released")
    except AssertionError:
        raise AssertionError(f"leases file wrong ({what}): {lease_problems()}") from None

    # nft: fcnetd's table is what the registry implies; the admin's untouched
    assert table_json(ns, "inet", "fcnetd") == expected_fcnetd_table(reg), \
        f"table inet fcnetd differs from what the registry implies ({what}):\n" \
        + nft(ns, "list", "table", "inet", "fcnetd", check=False).stdout
    assert table_json(ns, "inet", "admin") == host.admin_table, f"table inet admin was changed ({what})"

    # addresses: one gateway per nat network, on its port; the admin's kept
    wanted = {(l3_port(n), IPv4Interface(f"{n.gateway}/{IPv4Network(n.subnet).prefixlen}")) for n in nat.values()}
    assert gateways(ns) == wanted, f"gateway addresses {gateways(ns)} != {wanted} ({what})"
    assert ("fcbr0", ADMIN_ADDRESS, 0) in addresses(ns), f"the admin's {ADMIN_ADDRESS} on fcbr0 is gone ({what})"

    # what a DHCP client gets: exactly its reservation, for every VM
    for net_id, net in nat.items():
        client = host.clients.get(net.bridge)
        for mac, ip in sorted(reserved[net_id]) if client else ():
            got = client.lease(mac)
            assert got == ip, f"DHCP gave {got} to {mac} on {net.name}, reserved {ip} ({what})"
    return reg


def guest_check(host: NatHost, acks: Acks, reg: Snapshot, what: str) -> None:
    """A guest on an acknowledged VM's TAP gets exactly the address the
    daemon reports (GetNetwork) after the restart: the VM the burst attached
    last, as dnsmasq's view of it is the one a crash puts at risk."""
    attached = {key[0] for key in reg.attachments}
    name = [n for n in acks.attached if n in attached and n not in acks.detaching][-1]
    bridge = acks.attached[name]

    async def calls():
        async with Pool(host.bus.address, 1) as pool:
            tap = (await pool.call("CreateTap", "ssa{sv}", name, "eth0", {}))[0]  # the VM (re)starts
            entry = next(e for e in (await pool.call("GetNetwork", "s", bridge))[0]["Vms"] if e["VmId"] == name)
            return tap, entry
    tap, entry = asyncio.run(calls())
    guest = Guest(host.ns, tap, mac=entry["Mac"])
    try:
        lease = guest.dhcp()
        assert lease is not None and lease.ip == entry["Ip"], \
            f"guest of {name} ({entry['Mac']}) got {lease}, reported {entry['Ip']} ({what}): {guest.relay_output()}"
    finally:
        guest.close()


def reservations(reg: Snapshot) -> dict[str, set[tuple[str, str]]]:
    """(MAC, address) of each attachment, by nat network id."""
    found = {i: set() for i, n in reg.networks.items() if n.mode == "nat"}
    for att in reg.attachments.values():
        found[att.network_id].add((att.mac.lower(), att.ip))
    return found


def leftover(point: str, host: NatHost, acks: Acks) -> bool:
    """Whether the kill left what its point names for the restart to
    repair (else the run proved nothing about that point)."""
    reg = read_registry(host.state)[0]
    spare_gone = SPARE not in {n.name for n in reg.networks.values()}
    spare_gateway = (SPARE, IPv4Interface(f"{IPv4Network(SPARE_SUBNET)[1]}/{IPv4Network(SPARE_SUBNET).prefixlen}")) \
        in gateways(host.ns)
    stray_dnsmasq = dnsmasq_pids(host.state) - set().union(*(dnsmasq_pids(host.state, i) for i in reg.networks))
    reserved = reservations(reg)
    if point == "nat.firewall-applied":
        return spare_gone and SPARE_SUBNET in nft(host.ns, "list", "table", "inet", "fcnetd").stdout
    if point == "nat.gateway-added":
        return spare_gone and spare_gateway
    if point in ("create.nat-ready", "delete.committed"):
        return spare_gone and spare_gateway and bool(stray_dnsmasq)
    stored = {key[0] for key in reg.attachments}
    # A concurrent call's hosts-file write may already carry an attachment
    # or removal the killed call stored (it reads memory, where the change
    # is before it is durable); what is certain is that the killed call
    # stored its change and was never answered.
    if point == "attach.committed":
        return bool(stored - acks.attached.keys() - acks.detaching)
    if point == "detach.committed":
        return bool(host.leased.keys() & acks.detaching - acks.detached - stored)
    return True  # dnsmasq.hosts-written: only a DHCP client sees what the running dnsmasq lacks


@pytest.mark.parametrize("point", list(ARMED))
def test_killed_at(point, host):
    acks = host.prepare()
    daemon = host.start(point)
    asyncio.run(burst(host, acks))
    if daemon.proc.poll() is None:
        daemon.stop()
    assert daemon.wait(30) == -signal.SIGKILL, f"fcnetd was not killed at {point}: {daemon.output()[-3000:]}"
    # The only refusal the burst may see: the address a VM asks for was
    # taken by a NEW VM first (the burst's own race for a freed address).
    assert all("AddressUnavailable" in r for r in acks.refused), acks.refused
    assert leftover(point, host, acks), f"the kill at {point} left nothing of its step to repair"

    host.start()
    reg = check_after_restart(host, acks, f"killed at {point}")
    if point in GUEST_AFTER:
        guest_check(host, acks, reg, f"killed at {point}")


def test_a_killed_dnsmasq_is_restarted_mid_burst(host):
    acks = host.prepare()
    host.start()
    victim_net = next(n for n in read_registry(host.state)[0].networks.values() if n.bridge == "fcbr0")
    victim = int(nat_file(host.state, victim_net.id, ".pid"))
    assert dnsmasq_pids(host.state, victim_net.id) == {victim}
    replies = []

    def on_reply():
        replies.append(1)
        if len(replies) == 3:  # the burst is under way; as an OOM kill would
            os.kill(victim, signal.SIGKILL)
    asyncio.run(burst(host, acks, on_reply))
    assert len(replies) >= 3
    assert all("AddressUnavailable" in r for r in acks.refused), acks.refused  # as in test_killed_at
    assert SPARE in acks.deleted and all(vm(b, i) in acks.attached for b in NETS for i in range(FIRST, FIRST + NEW))

    wait_for(lambda: dnsmasq_pids(host.state, victim_net.id) - {victim}, 10, what="fcbr0's dnsmasq started again")
    check_after_restart(host, acks, "one dnsmasq killed")
    assert victim not in dnsmasq_pids(host.state)
