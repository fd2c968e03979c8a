"""Diagnose: a network's, a VM NIC's and a pair of VMs' checks, each read
from the kernel now and said in the user guide's words.

Two halves: `gather` reads what the checks need (netlink, the nft ruleset,
dnsmasq's pidfile and leases file, a sysctl) into `Facts`, changing
nothing; the check functions are pure, from Facts and the registry's
objects to `Check`s, so unit tests give them facts by hand. The DHCP and
isolation probes (dhcpprobe.py, isolationprobe.py) are the steps that touch
the kernel, for the length of the call.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from . import dhcpprobe, dnsmasq, isolationprobe
from .dnsmasq_unit import unit_name
from .errors import FcnetError, InvalidArgs, NoSuchVm
from .model import check_id, check_nic, parse_tap_tag
from .nat import IP_FORWARD, gateway_interface, l3_port
from .netlink import FCNETD_ADDRESS_PROTO, Netlink
from .rawnetlink import IFF_UP

OK, WARN, FAIL = "ok", "warn", "fail"
BR_NETFILTER = "/proc/sys/net/bridge/bridge-nf-call-iptables"  # present while br_netfilter is loaded
SUMMARY_SHOWN = 10  # VM NICs named in the `vms` check's detail

# The user guide's Troubleshooting section, quoted where a hint uses it.
GUIDE_BRIDGE = "the guide's 'VM Cannot Get IP Address': network bridge not properly configured on host"
GUIDE_ADMIN = "Contact your system administrator if the issue persists"
GUIDE_ISOLATED = ("If VMs have different VLANs, they cannot communicate (this is by design for isolation). "
                  "Check both VMs in the Networks page - verify they use the same network (same bridge + VLAN)")
GUIDE_TRUNK = ("the guide's 'VLAN Tagged Traffic Not Working': verify the switch port is configured as trunk with "
               "802.1Q and VLAN {vlan} is allowed on it")
GUIDE_NO_IP = ("the guide's 'VM Cannot Get IP Address': check the VM's network configuration in the VM details "
               "page and whether other VMs on the same network get addresses")
GUIDE_FIREWALL = "the guide's 'Firewall blocking traffic'"
RELOAD = "`systemctl reload fcnetd` (a reconcile) puts fcnetd's part back"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Check:
    check: str  # a stable id: "bridge.present"
    result: str  # OK, WARN or FAIL
    detail: str  # what was seen
    hint: str = ""  # what to do
    servers: tuple = ()  # the DHCP probe's answers (dhcpprobe.Offer), its check only

    def row(self) -> dict:
        out = {"Check": self.check, "Result": self.result, "Detail": self.detail, "Hint": self.hint}
        if self.check == "dhcp.probe":
            out["Servers"] = [o.row() for o in self.servers]
        return out


@dataclass(frozen=True)
class Link:
    """One device as the kernel tells it now."""
    name: str
    index: int
    kind: str  # "bridge", "tun", "veth", "vlan", "" for a plain device
    up: bool  # administratively
    carrier: bool  # operstate UP: a bridge port or TAP that forwards
    master: int  # the bridge it is a port of, 0 for none
    alias: str = ""
    owner: int | None = None  # a TAP's owner uid / gid; None: unset
    group: int | None = None
    vlan_filtering: bool | None = None  # a bridge's; None: the kernel cannot filter
    default_pvid: int = 1


@dataclass
class Facts:
    links: dict[str, Link] = field(default_factory=dict)  # what the checks asked for, by name
    names: dict[int, str] = field(default_factory=dict)  # index -> name of those links
    port_vlans: dict[int, dict[int, frozenset]] = field(default_factory=dict)  # index -> VID -> flags
    addresses: set = field(default_factory=set)  # (ifname, IPv4Interface) of fcnetd's addresses
    forwarding: bool | None = None
    dnsmasq: dict[str, int | None] = field(default_factory=dict)  # network id -> pid of its live dnsmasq
    leases: dict[str, list] = field(default_factory=dict)  # network id -> [(mac, ip)]
    table: str | None = None  # `nft list table inet fcnetd`, None: no table
    chains: list[dict] = field(default_factory=list)  # every base chain: family, table, name, hook, policy
    br_netfilter: bool = False

    def master_name(self, link: Link) -> str:
        return self.names.get(link.master, f"device #{link.master}") if link.master else ""


# -- reading --------------------------------------------------------------------
def _link_of(msg) -> Link:
    kind = msg.get(("linkinfo", "kind")) or ""
    data = msg.get(("linkinfo", "data"))
    get = (lambda key: data.get(key)) if hasattr(data, "get") else (lambda key: None)
    owner, group = get("IFLA_TUN_OWNER"), get("IFLA_TUN_GROUP")
    filtering, pvid = get("IFLA_BR_VLAN_FILTERING"), get("IFLA_BR_VLAN_DEFAULT_PVID")
    unset = (None, 0xFFFFFFFF)
    return Link(name=msg.get("ifname"), index=msg["index"], kind=kind, up=bool(msg["flags"] & IFF_UP),
                carrier=msg.get("operstate") == "UP", master=msg.get("master") or 0,
                alias=msg.get("ifalias") or "", owner=None if owner in unset else owner,
                group=None if group in unset else group,
                vlan_filtering=None if filtering is None else bool(filtering),
                default_pvid=pvid if pvid is not None else 1)


async def read_link(netlink: Netlink, name: str) -> Link | None:
    msg = await netlink.link(name)
    return None if msg is None else _link_of(msg)


def base_chains(firewall) -> list[dict]:
    """Every base chain of every table, read with libnftables through
    firewall.py (the only module importing it); nothing is changed."""
    return firewall.base_chains()


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


async def gather(engine, nets, atts) -> Facts:
    """The facts for networks `nets` and attachments `atts`: their bridges,
    uplinks, TAPs and nat parts."""
    facts = Facts()
    names = set()
    for net in nets:
        names.add(net.bridge)
        cfg = engine.config.bridges.get(net.bridge)
        if cfg is not None and cfg.uplink:
            names.add(cfg.uplink)
        if net.mode == "nat":
            names.add(l3_port(net))
    for att in atts:
        tap = engine.taps.get(att.key)
        if tap is not None:
            names.add(tap.name)
    for name in sorted(names):
        try:
            link = await read_link(engine.netlink, name)
        except FcnetError:
            link = None
        if link is not None:
            facts.links[name] = link
            facts.names[link.index] = name
    for link in list(facts.links.values()):
        if link.master and link.master not in facts.names:
            facts.names[link.master] = _ifname(link.master)
    if any(link.master or link.kind == "bridge" for link in facts.links.values()):
        facts.port_vlans = await engine.netlink.all_port_vlans()
    nat = [n for n in nets if n.mode == "nat"]
    facts.br_netfilter = _read_text(BR_NETFILTER) is not None
    plane = engine.nat
    if nat and plane is not None:
        facts.addresses = {(a.ifname, a.interface) for a in await engine.netlink.addresses()
                           if a.proto == FCNETD_ADDRESS_PROTO}
        forward = _read_text(IP_FORWARD)
        facts.forwarding = None if forward is None else forward.strip() == "1"
        for net in nat:
            leasefile = dnsmasq.path(plane.directory, net.id, ".leases")
            facts.dnsmasq[net.id] = await plane.dnsmasq_pid(net)
            facts.leases[net.id] = dnsmasq.parse_leases(_read_text(leasefile) or "")
    if plane is not None:
        try:
            facts.table = plane.firewall.listing() if nat else None
            facts.chains = base_chains(plane.firewall)
        except FcnetError:
            pass  # no libnftables: the checks say what they could not read
    return facts


def _ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"device #{index}"


# -- the checks -----------------------------------------------------------------
def _vlan_text(vlan: int) -> str:
    return f"VLAN {vlan}" if vlan else "untagged"


def _flags_text(vlans: dict) -> str:
    if not vlans:
        return "no VLAN"
    return ", ".join(f"{vid}" + (f" ({' '.join(sorted(flags))})" if flags else " (tagged)")
                     for vid, flags in sorted(vlans.items()))


def bridge_checks(net, cfg, facts: Facts) -> list[Check]:
    """bridge.allowed, bridge.present, bridge.up, bridge.vlan-filtering."""
    out = []
    if cfg is None:
        out.append(Check("bridge.allowed", FAIL, f"bridge {net.bridge} is not in fcnetd's allow-list",
                         f"An admin adds [bridges.{net.bridge}] to /etc/fcnetd/fcnetd.toml and reloads fcnetd; "
                         f"{GUIDE_ADMIN}"))
    else:
        out.append(Check("bridge.allowed", OK, f"bridge {net.bridge} is allowed"
                         + (" (fcnetd creates it when missing)" if cfg.create else "")))
    br = facts.links.get(net.bridge)
    if br is None or br.kind != "bridge":
        seen = "does not exist" if br is None else f"exists but is a {br.kind or 'plain'} device, not a bridge"
        make = ("fcnetd makes it again at its next reconcile (systemctl reload fcnetd)"
                if cfg is not None and cfg.create else f"an admin creates it (ip link add {net.bridge} type bridge)")
        out.append(Check("bridge.present", FAIL, f"bridge {net.bridge} {seen}",
                         f"{_cap(GUIDE_BRIDGE)}: {make}; {GUIDE_ADMIN}"))
        return out
    out.append(Check("bridge.present", OK, f"bridge {net.bridge} exists (index {br.index})"))
    if br.up:
        out.append(Check("bridge.up", OK, f"bridge {net.bridge} is up"))
    else:
        out.append(Check("bridge.up", FAIL, f"bridge {net.bridge} is down: it forwards nothing",
                         f"{_cap(GUIDE_BRIDGE)}: ip link set dev {net.bridge} up"))
    if net.vlan:
        if br.vlan_filtering:
            out.append(Check("bridge.vlan-filtering", OK, f"VLAN filtering is on on bridge {net.bridge}"))
        elif br.vlan_filtering is None:
            out.append(Check("bridge.vlan-filtering", FAIL,
                             "this kernel has no bridge VLAN filtering: VLAN {} cannot be kept apart".format(net.vlan),
                             "Boot a kernel with CONFIG_BRIDGE_VLAN_FILTERING (Debian's linux-image-amd64 has it)"))
        else:
            out.append(Check("bridge.vlan-filtering", FAIL,
                             f"VLAN filtering is off on bridge {net.bridge}: VLANs are not kept apart",
                             "The guide's 'VLAN Tagged Traffic Not Working': bridge VLAN filtering not enabled "
                             f"on host. fcnetd turns it on again when it sees it off; {RELOAD}, or "
                             f"ip link set dev {net.bridge} type bridge vlan_filtering 1"))
    return out


def uplink_checks(net, cfg, facts: Facts) -> list[Check]:
    """uplink.present, uplink.carrier, uplink.vlan, where the bridge has one."""
    if cfg is None or not cfg.uplink:
        return []
    name, out = cfg.uplink, []
    link = facts.links.get(name)
    br = facts.links.get(net.bridge)
    if link is None:
        return [Check("uplink.present", FAIL, f"uplink {name} does not exist",
                      f"Fix [bridges.{net.bridge}] uplink in the config or bring the device back; {GUIDE_ADMIN}")]
    if br is None or link.master != br.index:
        where = f"a port of {facts.master_name(link)}" if link.master else "a port of no bridge"
        return [Check("uplink.present", FAIL, f"uplink {name} exists but is {where}, not of {net.bridge}",
                      f"ip link set dev {name} master {net.bridge}; {GUIDE_ADMIN}")]
    out.append(Check("uplink.present", OK, f"uplink {name} is a port of bridge {net.bridge}"))
    if link.carrier:
        out.append(Check("uplink.carrier", OK, f"uplink {name} has carrier"))
    else:
        out.append(Check("uplink.carrier", FAIL, f"uplink {name} has no carrier (down, or no link to the switch)",
                         f"ip link set dev {name} up, and check its cable and switch port; {GUIDE_ADMIN}"))
    if not net.vlan or not (br.vlan_filtering):
        return out
    vlans = facts.port_vlans.get(link.index, {})
    flags = vlans.get(net.vlan)
    if net.mode == "nat":  # its VLAN never goes on the trunk
        if flags is None:
            out.append(Check("uplink.vlan", OK, f"VLAN {net.vlan} (a nat network's) is not on uplink {name}"))
        else:
            out.append(Check("uplink.vlan", FAIL, f"VLAN {net.vlan} is a nat network's, yet on uplink {name}: its "
                             "gateway and DHCP server reach the LAN beyond it",
                             f"bridge vlan del vid {net.vlan} dev {name}; {RELOAD}"))
    elif flags is not None and not flags:
        out.append(Check("uplink.vlan", OK, f"uplink {name} is a tagged member of VLAN {net.vlan}"))
    else:
        seen = "not a member" if flags is None else f"a member with {' '.join(sorted(flags))} (not tagged)"
        out.append(Check("uplink.vlan", FAIL, f"uplink {name} is {seen} of VLAN {net.vlan}; its VLANs: "
                         f"{_flags_text(vlans)}",
                         f"fcnetd keeps the uplink a tagged member of the VLANs in use: {RELOAD}. Then "
                         + GUIDE_TRUNK.format(vlan=net.vlan)))
    return out


def _rules_missing(net, table: str | None) -> list[str]:
    """What of the network's rules the table lacks (their text as nft prints it)."""
    port, subnet = f'"{l3_port(net)}"', str(IPv4Network(net.subnet))
    wanted = {"masquerade": (f"iifname {port}", f"ip saddr {subnet} masquerade"),
              "source check": (f"iifname {port}", f"ip saddr != {subnet} drop"),
              "forward out": (f"iifname {port}", "counter name", "accept"),
              "replies back": (f"oifname {port}", "ct state established,related", "accept"),
              "DHCP to the gateway": (f"iifname {port}", "udp dport 67 accept"),
              "DNS to the gateway": (f"iifname {port}", "udp dport 53 accept")}
    lines = [line.strip() for line in (table or "").splitlines()]
    return [what for what, parts in wanted.items() if not any(all(p in line for p in parts) for line in lines)]


def nat_checks(net, facts: Facts) -> list[Check]:
    """nat.gateway, nat.dnsmasq, nat.firewall, nat.forwarding."""
    if net.mode != "nat":
        return []
    out = []
    port, gw = l3_port(net), gateway_interface(net)
    link = facts.links.get(port)
    if (port, gw) in facts.addresses and link is not None and link.up:
        out.append(Check("nat.gateway", OK, f"gateway {gw} is on {port}, which is up"))
    else:
        seen = (f"{port} does not exist" if link is None else f"{port} is down" if not link.up
                else f"{port} lacks fcnetd's address {gw}")
        out.append(Check("nat.gateway", FAIL, f"the network's gateway is not there: {seen}",
                         f"{RELOAD} (its gateway address and port)"))
    if net.dhcp:
        pid = facts.dnsmasq.get(net.id)
        if pid:
            out.append(Check("nat.dnsmasq", OK, f"fcnetd's dnsmasq for this network runs (pid {pid})"))
        else:
            out.append(Check("nat.dnsmasq", FAIL, "no dnsmasq of fcnetd's serves this network: VMs get no address",
                             "A dnsmasq that exits is started again; if it keeps failing, its reason is in the "
                             f"journal (journalctl -u fcnetd -u {unit_name(net.id)}). {RELOAD}"))
    missing = _rules_missing(net, facts.table)
    if facts.table is None:
        out.append(Check("nat.firewall", FAIL, "the nft table inet fcnetd does not exist",
                         f"{RELOAD}: it rebuilds the table from the registry"))
    elif missing:
        out.append(Check("nat.firewall", FAIL, f"table inet fcnetd lacks the rules of subnet {net.subnet} on "
                         f"{port}: {', '.join(missing)}", f"{RELOAD}: it rebuilds the table from the registry"))
    else:
        out.append(Check("nat.firewall", OK, f"table inet fcnetd has the rules of subnet {net.subnet} on {port}"))
    if facts.forwarding:
        out.append(Check("nat.forwarding", OK, "IPv4 forwarding is on"))
    else:
        out.append(Check("nat.forwarding", FAIL, "IPv4 forwarding is off: nothing reaches beyond the gateway",
                         f"sysctl -w net.ipv4.ip_forward=1; {RELOAD}"))
    return out


def foreign_drop_check(net, facts: Facts) -> Check | None:
    """A drop policy in another table's forward or input chain: an accept
    of fcnetd's is not final across tables (Docker's filter FORWARD)."""
    hooks = {"forward", "input"} if net.mode == "nat" else {"forward"}
    families = {"ip", "inet"} if net.mode == "nat" else {"bridge"} | ({"ip", "inet"} if facts.br_netfilter else set())
    found = [f"{c['family']} {c['table']} {c['name']} (hook {c['hook']})" for c in facts.chains
             if c["policy"] == "drop" and c["hook"] in hooks and c["family"] in families
             and (c["family"], c["table"]) != ("inet", "fcnetd")]
    if not facts.chains and net.mode != "nat" and not facts.br_netfilter:
        return None
    if found:
        return Check("firewall.foreign-drop", WARN, f"another table drops by default: {'; '.join(found)}",
                     f"{_cap(GUIDE_FIREWALL)}: fcnetd's accepts do not override another table's drop; "
                     "the owner of that table (Docker, firewalld, an admin) must accept this network's traffic")
    return Check("firewall.foreign-drop", OK, "no other table has a forward"
                 + (" or input" if net.mode == "nat" else "") + " chain with policy drop")


def network_checks(net, cfg, facts: Facts) -> list[Check]:
    out = bridge_checks(net, cfg, facts) + uplink_checks(net, cfg, facts) + nat_checks(net, facts)
    drop = foreign_drop_check(net, facts)
    return out + ([drop] if drop is not None else [])


def tap_checks(att, net, tap_name: str | None, facts: Facts, prefix: str = "") -> list[Check]:
    """tap.present, tap.up, tap.carrier, tap.bridge, tap.vlan, tap.owner."""
    who = f"VM {att.vm_id} NIC {att.nic}"
    link = facts.links.get(tap_name) if tap_name else None
    if link is None or parse_tap_tag(link.alias) != att.key:
        seen = "has no TAP" if not tap_name else f"has no TAP: {tap_name} is gone from the kernel"
        return [Check(prefix + "tap.present", WARN, f"{who} {seen}: the VM is not running",
                      "Start the VM: its launcher calls CreateTap (fcnetctl tap-create) at VM start")]
    out = [Check(prefix + "tap.present", OK, f"{who} has TAP {link.name}")]
    if link.up:
        out.append(Check(prefix + "tap.up", OK, f"TAP {link.name} is up"))
    else:
        out.append(Check(prefix + "tap.up", FAIL, f"TAP {link.name} is down: it forwards nothing",
                         f"ip link set dev {link.name} up, or {RELOAD}"))
    if link.carrier:
        out.append(Check(prefix + "tap.carrier", OK, f"TAP {link.name} has carrier: a VMM holds it open"))
    else:
        out.append(Check(prefix + "tap.carrier", WARN, f"TAP {link.name} has no carrier: no VMM holds it open",
                         "The VM is not running, or its VMM has not opened the TAP yet"))
    br = facts.links.get(net.bridge)
    if br is not None and link.master == br.index:
        out.append(Check(prefix + "tap.bridge", OK, f"TAP {link.name} is a port of bridge {net.bridge}"))
    else:
        where = f"a port of {facts.master_name(link)}" if link.master else "a port of no bridge"
        out.append(Check(prefix + "tap.bridge", FAIL, f"TAP {link.name} is {where}, not of {net.bridge}",
                         f"{RELOAD} (it puts the TAP back on {net.bridge})"))
    out.append(_tap_vlan_check(link, net, br, facts, prefix))
    owner = "no owner (only a process with CAP_NET_ADMIN may open it)" if link.owner is None and link.group is None \
        else f"owner uid {'-' if link.owner is None else link.owner}, gid {'-' if link.group is None else link.group}"
    out.append(Check(prefix + "tap.owner", OK, f"TAP {link.name} has {owner}",
                     "The VMM must run as that user or group (CreateTap options owner_uid, owner_gid)"))
    return out


def _tap_vlan_check(link: Link, net, br: Link | None, facts: Facts, prefix: str) -> Check:
    if br is None or not br.vlan_filtering:
        if net.vlan:
            return Check(prefix + "tap.vlan", FAIL, f"bridge {net.bridge} does not filter VLANs: TAP {link.name} "
                         f"is not kept in VLAN {net.vlan}", "See the bridge.vlan-filtering check")
        return Check(prefix + "tap.vlan", OK, f"untagged network on a bridge without VLAN filtering")
    want_vid = net.vlan or br.default_pvid
    vlans = facts.port_vlans.get(link.index, {})
    want = {want_vid: frozenset({"pvid", "untagged"})}
    if {k: frozenset(v) for k, v in vlans.items()} == want:
        return Check(prefix + "tap.vlan", OK, f"TAP {link.name} is in {_vlan_text(net.vlan)} only "
                     f"(VLAN {want_vid} pvid untagged)")
    return Check(prefix + "tap.vlan", FAIL, f"TAP {link.name} should be in VLAN {want_vid} (pvid untagged) and no "
                 f"other; its VLANs: {_flags_text(vlans)}",
                 f"The guide's 'VLAN ID mismatch between VM, host, and switch': {RELOAD} (it puts the TAP in its VLAN)")


def lease_check(att, net, facts: Facts, prefix: str = "") -> Check | None:
    """vm.lease: a nat network's lease for the VM's MAC is its reservation."""
    if net.mode != "nat" or not net.dhcp or not att.mac:
        return None
    leased = [ip for mac, ip in facts.leases.get(net.id, []) if mac == att.mac.lower()]
    if leased == [att.ip]:
        return Check(prefix + "vm.lease", OK, f"dnsmasq leased {att.ip} to {att.mac}, its reservation")
    if not leased:
        return Check(prefix + "vm.lease", WARN, f"no lease for {att.mac} (reserved {att.ip}): the VM has not asked "
                     "for an address (not running, or no DHCP client)", _cap(GUIDE_NO_IP))
    return Check(prefix + "vm.lease", FAIL, f"{att.mac} holds {', '.join(leased)}, not its reservation {att.ip}",
                 f"{RELOAD}; then renew the lease inside the VM (e.g. dhclient -r; dhclient)")


def vm_checks(att, net, cfg, tap_name: str | None, facts: Facts) -> list[Check]:
    where = f"{net.name} (bridge {net.bridge}, {_vlan_text(net.vlan)}, mode {net.mode})"
    extra = "".join(f", {k} {v}" for k, v in (("MAC", att.mac), ("IP", att.ip)) if v)
    out = [Check("vm.attached", OK, f"VM {att.vm_id} NIC {att.nic} is attached to network {where}{extra}")]
    out += network_checks(net, cfg, facts)
    out += tap_checks(att, net, tap_name, facts)
    lease = lease_check(att, net, facts)
    return out + ([lease] if lease is not None else [])


def vms_summary(net, atts, taps: dict, facts: Facts) -> Check:
    """`vms`: every attached VM NIC's TAP, one line (DiagnoseVm has each)."""
    if not atts:
        return Check("vms", OK, "no VM is attached")
    running, problems = 0, []
    for att in atts:
        rows = tap_checks(att, net, taps.get(att.key), facts)
        if rows[0].result == OK:
            running += 1
        bad = [r.check for r in rows if r.result == FAIL]
        if bad:
            problems.append(f"{att.vm_id}/{att.nic}: {', '.join(bad)}")
    detail = f"{len(atts)} VM NIC{'s' if len(atts) != 1 else ''} attached, {running} with a TAP"
    if not problems:
        return Check("vms", OK, detail)
    shown = "; ".join(problems[:SUMMARY_SHOWN]) + (f"; and {len(problems) - SUMMARY_SHOWN} more"
                                                     if len(problems) > SUMMARY_SHOWN else "")
    return Check("vms", FAIL, f"{detail}; failing: {shown}", "fcnetctl diagnose --vm VM [--nic NIC] for each")


def path_checks(vm_a: str, atts_a: list, vm_b: str, atts_b: list, networks: dict, config, taps: dict,
                facts: Facts) -> list[Check]:
    """The guide's 'VMs Cannot Communicate' for two VMs: attached, one
    network, both running with sound TAPs."""
    out = []
    for side, vm, atts in (("a", vm_a, atts_a), ("b", vm_b, atts_b)):
        if not atts:
            out.append(Check(f"path.{side}.attached", FAIL, f"VM {vm} has no NIC attached to any network",
                             "Attach it (AttachVm, fcnetctl attach) to the network the other VM uses"))
        else:
            nics = ", ".join(f"{a.nic} on {networks[a.network_id].name}" for a in atts)
            out.append(Check(f"path.{side}.attached", OK, f"VM {vm}: {nics}"))
    if not atts_a or not atts_b:
        return out
    shared = [(a, b) for a in atts_a for b in atts_b if a.network_id == b.network_id]
    if not shared:
        return out + [_apart(vm_a, atts_a, vm_b, atts_b, networks, config)]
    a, b = shared[0]
    net = networks[a.network_id]
    out.append(Check("path.network", OK, f"VM {vm_a} NIC {a.nic} and VM {vm_b} NIC {b.nic} share network "
                     f"{net.name} (bridge {net.bridge}, {_vlan_text(net.vlan)})"))
    cfg = config.bridges.get(net.bridge)
    out += bridge_checks(net, cfg, facts)
    for prefix, att in (("a.", a), ("b.", b)):
        out += tap_checks(att, net, taps.get(att.key), facts, prefix)
        lease = lease_check(att, net, facts, prefix)
        if lease is not None:
            out.append(lease)
    if all(c.result == OK for c in out):
        out.append(Check("path.guest", OK, "fcnetd sees nothing between the two VMs",
                         "Check VM firewall settings inside the guest OS (the guide's 'VMs Cannot Communicate')"))
    return out


def _apart(vm_a, atts_a, vm_b, atts_b, networks, config) -> Check:
    def where(vm, atts):
        return "; ".join(f"VM {vm} NIC {a.nic} is on {networks[a.network_id].name} (bridge "
                         f"{networks[a.network_id].bridge}, {_vlan_text(networks[a.network_id].vlan)})" for a in atts)
    seen = f"{where(vm_a, atts_a)}; {where(vm_b, atts_b)}"
    # Bridge networks of one VLAN on two bridges meet where both uplinks
    # reach one switch; nothing else fcnetd makes joins two networks.
    for a in atts_a:
        for b in atts_b:
            na, nb = networks[a.network_id], networks[b.network_id]
            ua = config.bridges.get(na.bridge)
            ub = config.bridges.get(nb.bridge)
            if (na.vlan == nb.vlan and na.mode == nb.mode == "bridge" and ua is not None and ub is not None
                    and ua.uplink and ub.uplink):
                return Check("path.network", WARN, f"{seen}: different bridges, one VLAN; they meet only beyond "
                             "the uplinks, through the switch",
                             _cap(GUIDE_TRUNK.format(vlan=na.vlan))
                             + " on both uplinks' switch ports")
    return Check("path.network", FAIL, f"{seen}: different networks, isolated by design",
                 GUIDE_ISOLATED + "; to let them talk, attach both to one network")


def worst(checks: list[Check]) -> str:
    results = {c.result for c in checks}
    return FAIL if FAIL in results else WARN if WARN in results else OK


def check_timeout_ms(value: int) -> float:
    """The probes' option timeout_ms (u) to seconds."""
    if not 100 <= value <= 30000:
        raise InvalidArgs("timeout_ms", f"{value} is out of range: 100 to 30000 (milliseconds)")
    return value / 1000


def probe_check(net, offers: list, timeout: float, chaddr: str = "") -> Check:
    """dhcp.probe: who answered a DHCPDISCOVER in the network's bridge and
    VLAN. chaddr: the attached VM's MAC the probe asked for on a nat
    network (fcnetd's dnsmasq answers only its VMs' MACs)."""
    where = f"bridge {net.bridge}, {_vlan_text(net.vlan)}"
    listed = "; ".join(str(o) for o in offers)
    mismatch = ("The guide's 'VLAN mismatch with DHCP server': verify the bridge name and VLAN ID are correct "
                "and that the DHCP server serves this VLAN (on the switch: a trunk with it allowed)")
    if net.mode == "nat" and net.dhcp:
        ours = [o for o in offers if o.server == net.gateway]
        others = [o for o in offers if o.server != net.gateway]
        if others:
            return Check("dhcp.probe", WARN, f"in {where} another DHCP server answered: "
                         + "; ".join(map(str, others)) + (f"; and fcnetd's: {'; '.join(map(str, ours))}" if ours else ""),
                         "Two servers race to answer this network's VMs; remove the other one from this segment",
                         tuple(offers))
        if ours:
            return Check("dhcp.probe", OK, f"in {where} fcnetd's DHCP server answered for {chaddr}: {listed}",
                         servers=tuple(offers))
        if not chaddr:
            return Check("dhcp.probe", WARN, f"no DHCP server answered in {where} within {timeout:g} s; fcnetd's "
                         "answers only attached VMs' MACs and none is attached",
                         "Attach a VM and probe again")
        return Check("dhcp.probe", FAIL, f"fcnetd's DHCP server did not answer for {chaddr} in {where} "
                     f"within {timeout:g} s", "See the nat.dnsmasq and firewall checks; " + GUIDE_FIREWALL)
    if not offers:
        return Check("dhcp.probe", WARN, f"no DHCP server answered in {where} within {timeout:g} s: VMs that "
                     "use DHCP get no address (VMs with static addresses need none)",
                     mismatch + ". A server that pings an address before offering it (dnsmasq, ISC dhcpd) may "
                     "need a longer wait: probe again with a timeout of 5 s")
    if len({o.server for o in offers}) > 1:
        return Check("dhcp.probe", WARN, f"several DHCP servers answered in {where}: {listed}",
                     "VMs take whichever answers first; keep one DHCP server per VLAN", tuple(offers))
    return Check("dhcp.probe", OK, f"in {where}: {listed}", servers=tuple(offers))


def other_segments(net, networks, default_pvid: int) -> tuple[list[int], int]:
    """What the isolation probe watches on a tagged network's bridge: the
    VLANs of fcnetd's other networks there, and the untagged segment's VID
    (the bridge's default VLAN; 0 when it has none or it is the network's
    own: a tagged network in VLAN 1 shares the untagged segment by design)."""
    untagged = default_pvid if default_pvid != net.vlan else 0
    others = sorted({n.vlan for n in networks if n.bridge == net.bridge and n.vlan not in (0, net.vlan, untagged)})
    return others, untagged


def isolation_check(net, seen, others: list[int], untagged: int, timeout: float) -> Check:
    """vlan.isolation: where the isolation probe's frames, sent in the
    network's VLAN, arrived (isolationprobe.Seen)."""
    watched = [f"VLAN {vid}" for vid in others] + ([isolationprobe.describe_leak(None, untagged)] if untagged else [])
    sent = (f"from probe port {seen.sender} (MAC {seen.sender_mac}) in bridge {net.bridge} VLAN {net.vlan}: a "
            f"broadcast and a unicast to {seen.listener_mac} (EtherType 0x{isolationprobe.ETHERTYPE:04x}, nonce "
            f"{seen.nonce})")
    leaks: dict[str, list[str]] = {}
    for vid, kind in sorted(seen.leaks, key=lambda leak: (leak[0] is None, leak[0] or 0, leak[1])):
        leaks.setdefault(isolationprobe.describe_leak(vid, untagged), []).append(kind)
    control = " and ".join(f"the {kind}" for kind in sorted(seen.control)) or "nothing"
    if leaks:
        where = "; ".join(f"{segment} saw the {' and the '.join(kinds)}" for segment, kinds in leaks.items())
        return Check("vlan.isolation", FAIL, f"sent {sent}: {where} (a port in VLAN {net.vlan} saw {control})",
                     f"Something joins VLAN {net.vlan} to {', '.join(leaks)}: a port of bridge {net.bridge} that is a "
                     "member of both (`bridge vlan show`), a device or VM that bridges two ports, or beyond the "
                     "uplink a switch that does. " + _cap(GUIDE_TRUNK.format(vlan=net.vlan))
                     + ", and that its native VLAN is none of these")
    # The broadcast is the control: the bridge floods it to every port of
    # the VLAN. (The unicast reaches the control only while the bridge has
    # not learned the listener's MAC in the VLAN.)
    if "broadcast" not in seen.control:
        return Check("vlan.isolation", WARN, f"sent {sent}: a port in VLAN {net.vlan} itself saw {control} within "
                     f"{timeout:g} s, so the silence in {', '.join(watched)} proves nothing",
                     "The bridge did not forward within the VLAN: see the bridge checks; probe again with a "
                     "longer timeout")
    return Check("vlan.isolation", OK, f"sent {sent}: a port in VLAN {net.vlan} saw {control}; nothing reached "
                 f"{', '.join(watched)} within {timeout:g} s")


def tap_names(engine, atts) -> dict:
    return {a.key: engine.taps[a.key].name for a in atts if a.key in engine.taps}


class Diagnoser:
    """The three entry points. Each reads the registry with no await
    before its facts are gathered, so the checks describe one moment's
    networks and attachments; the kernel is read after that."""

    def __init__(self, engine):
        self.engine = engine

    async def network(self, ref: str, dhcp_probe: bool = False, timeout: float = 2.0,
                      isolation: bool = False) -> list[Check]:
        engine = self.engine
        net = engine.find_network(ref)
        atts = engine.attachments_of(net)
        taps = tap_names(engine, atts)
        bridge_nets = [n for n in engine.registry.networks.values() if n.bridge == net.bridge] if isolation else []
        facts = await gather(engine, [net], atts)
        checks = network_checks(net, engine.config.bridges.get(net.bridge), facts)
        checks.append(vms_summary(net, atts, taps, facts))
        if dhcp_probe:
            checks.append(await self._probe(net, atts, facts, timeout))
        if isolation:
            checks.append(await self._isolation(net, bridge_nets, facts, timeout))
        return checks

    def _not_run(self, check: str, net, facts: Facts) -> Check | None:
        """The probes' answer where the bridge cannot carry one."""
        br = facts.links.get(net.bridge)
        if br is None or br.kind != "bridge" or not br.up:
            return Check(check, FAIL, f"not run: bridge {net.bridge} is missing or down",
                         "See the bridge.present and bridge.up checks")
        if net.vlan and not br.vlan_filtering:
            return Check(check, FAIL, f"not run: bridge {net.bridge} does not filter VLANs",
                         "See the bridge.vlan-filtering check")
        return None

    async def _isolation(self, net, bridge_nets, facts: Facts, timeout: float) -> Check:
        if not net.vlan:
            return Check("vlan.isolation", WARN, f"not run: network {net.name} is untagged; isolation between "
                         "VLANs applies to tagged networks only",
                         f"An untagged network shares bridge {net.bridge}'s default VLAN with every plain port of "
                         "it; to keep VMs apart, put them in tagged networks (different VLANs) and probe those")
        refused = self._not_run("vlan.isolation", net, facts)
        if refused is not None:
            return refused
        br = facts.links[net.bridge]
        others, untagged = other_segments(net, bridge_nets, br.default_pvid)
        if not others and not untagged:
            return Check("vlan.isolation", OK, f"nothing to probe: bridge {net.bridge} carries no other VLAN of "
                         f"fcnetd's networks, and its default VLAN is VLAN {net.vlan} itself")
        # The gate, shared, for the probe's whole life: as the DHCP probe's.
        async with self.engine.gate.shared():
            seen = await isolationprobe.probe(self.engine.netlink, net.id, net.bridge, br.index, net.vlan,
                                              others, untagged, timeout)
        return isolation_check(net, seen, others, untagged, timeout)

    async def _probe(self, net, atts, facts: Facts, timeout: float) -> Check:
        refused = self._not_run("dhcp.probe", net, facts)
        if refused is not None:
            return refused
        br = facts.links[net.bridge]
        chaddr = next((a.mac for a in atts if a.mac), "") if net.mode == "nat" and net.dhcp else ""
        # The gate, shared like any per-object call: a reconcile (which
        # reaps probe ports) waits for the probe's end, and the probe for
        # a reconcile's. The port is deleted inside, whatever happens.
        async with self.engine.gate.shared():
            offers = await dhcpprobe.probe(self.engine.netlink, net.id, net.bridge, br.index, net.vlan, chaddr,
                                           timeout)
        return probe_check(net, offers, timeout, chaddr)

    async def vm(self, vm_id: str, nic: str) -> list[Check]:
        engine = self.engine
        check_id(vm_id, "vm_id")
        if nic:
            check_nic(nic)
        if nic:
            atts = [a for a in [engine.registry.attachments.get((vm_id, nic))] if a is not None]
        else:  # every NIC of the VM
            atts = [a for a in engine.registry.attachments.values() if a.vm_id == vm_id]
        if not atts:
            raise NoSuchVm(f"VM {vm_id} has no NIC {nic} attached" if nic else f"VM {vm_id} has no NIC attached")
        nets = {a.network_id: engine.registry.networks[a.network_id] for a in atts}
        taps = tap_names(engine, atts)
        facts = await gather(engine, list(nets.values()), atts)
        checks = []
        for att in atts:
            net = nets[att.network_id]
            checks += vm_checks(att, net, engine.config.bridges.get(net.bridge), taps.get(att.key), facts)
        return checks

    async def path(self, vm_a: str, vm_b: str) -> list[Check]:
        engine = self.engine
        check_id(vm_a, "vm_a")
        check_id(vm_b, "vm_b")
        by_vm = {vm_a: [], vm_b: []}
        for att in engine.registry.attachments.values():
            if att.vm_id in by_vm:
                by_vm[att.vm_id].append(att)
        atts = by_vm[vm_a] + (by_vm[vm_b] if vm_b != vm_a else [])
        networks = {a.network_id: engine.registry.networks[a.network_id] for a in atts}
        taps = tap_names(engine, atts)
        facts = await gather(engine, list(networks.values()), atts)
        return path_checks(vm_a, by_vm[vm_a], vm_b, by_vm[vm_b], networks, engine.config, taps, facts)
