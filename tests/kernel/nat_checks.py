"""Scenarios 11-15, run by guest_checks.py inside the kernel-tier guest: a
tagged nat network (fcbr3 VLAN 10) beside an untagged one on the same
bridge, each with a VM whose guest is a real busybox udhcpc joined to its
TAP by fcnetd.relay (tests/system/guestnet.py's Guest). fcbr3 has no
uplink: fcnetd refuses an untagged nat network on a bridge with one. A
tagged nat network on fcbr0 (VLAN 30), whose uplink is a trunk, shows the
trunk does not carry it. Hand-built DHCP DISCOVERs for each nat VM's MAC,
from every VM's TAP, from a TAP of a bridge network in VLAN 20 and from
the uplink's far end, show who answers where. A reconcile after the
bridge was taken out of VLAN 10 by hand shows the tagged network's parts
repaired or kept as they are."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from fcnetd.firewall import counter_names
from tests.kernel.dhcp import KINDS, OFFER, discover, reply
from tests.kernel.frames import Endpoint, Wire, mac
from tests.system.guestnet import Guest, Internet, dnsmasq_pids
from tests.system.harness import v

BRIDGE, TAGGED, OTHER = "fcbr3", 10, 20  # OTHER: the VLAN of a bridge network beside them
TRUNKED, TRUNK_VLAN, UPLINK = "fcbr0", 30, "upl0"  # a bridge with an uplink, a nat VLAN on it
L3_PORT = f"{BRIDGE}.{TAGGED}"
RELAY_WAIT = 60  # s for fcnetd.relay to start: a Python start under TCG took over 10 s on a busy host
DHCP_WAIT = 30  # s for a guest's first lease (udhcpc sends a DISCOVER a second); TCG is slow
PROBE_WAIT = 2  # s the probes' replies are awaited; the two that must come show it was long enough
SILENT_PING = 1  # s a ping that must go unanswered is given
CUT_WAIT = 3  # s a renewal that must go unanswered is given
RECONCILE_WAIT = 60  # s for SIGHUP's reconcile


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def ipv4(dev: str | None = None) -> list[str]:
    info = json.loads(sh("ip", "-j", "-4", "addr", "show", *(("dev", dev) if dev else ())))
    return [f"{a['local']}/{a['prefixlen']}" for i in info for a in i.get("addr_info", [])]


def link(dev: str) -> dict | None:
    res = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", dev], capture_output=True, text=True)
    return json.loads(res.stdout)[0] if res.returncode == 0 else None


def fcnetd_table() -> str:
    res = subprocess.run(["nft", "list", "table", "inet", "fcnetd"], capture_output=True, text=True)
    return res.stdout if res.returncode == 0 else ""


def gateway(net: dict) -> str:
    """A nat network's gateway address as `ip addr` shows it: A.B.C.D/N."""
    return f"{net['Gateway']}/{net['Subnet'].split('/')[1]}"


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode(errors="replace").split("\0")


def nat_scenarios(report, client, daemon, ns, wire: Wire, vlans_of) -> None:
    """11-15. wire: the far end of fcbr0's uplink; vlans_of(dev): VID ->
    flags (`bridge vlan show`). Each step
    records a failure as a check rather than raise, so what follows still
    runs; at the end no nat network, guest or internet is left."""
    nat = TaggedNat(report, client, ns, wire, vlans_of)
    try:
        nat.step(11, lambda: nat.run(daemon))
        if nat.leases.get("n10"):
            nat.step(15, lambda: reconciled(report, daemon, nat.nets["n10"], vlans_of, nat.guests["n10"],
                                            nat.leases["n10"]))
        if nat.nets:
            nat.step(14, lambda: nat.delete(daemon))
    finally:
        nat.close()


class TaggedNat:
    def __init__(self, report, client, ns, wire: Wire, vlans_of):
        self.report, self.client, self.ns, self.wire = report, client, ns, wire
        self.vlans_of = vlans_of
        self.internet: Internet | None = None
        self.guests: dict[str, Guest] = {}
        self.leases: dict = {}
        self.nets: dict[str, dict] = {}
        # Both guests' slow steps at once (TCG). Its threads live until
        # close(): a relay ends when the thread that started it does
        # (PR_SET_PDEATHSIG), and an idle pool thread waits for work.
        self.pool = ThreadPoolExecutor(3)

    def step(self, scenario: int, step) -> None:
        started = time.monotonic()
        try:
            step()
        except Exception:
            self.report.check(scenario, "the scenario ran to its end", False, traceback.format_exc())
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        print(f"nat: the step of scenario {scenario} took {time.monotonic() - started:.1f} s, "
              f"ending {uptime:.0f} s after boot", flush=True)

    def run(self, daemon) -> None:
        log_start = len(daemon.output())
        self.internet = Internet(self.ns)
        vms = {}
        for bridge, vlan in ((BRIDGE, 0), (BRIDGE, TAGGED), (TRUNKED, TRUNK_VLAN)):
            self.client.call("CreateNetwork", "ssqa{sv}", "", bridge, vlan, {"mode": v("s", "nat")})
        for key, bridge, vlan in (("n0", BRIDGE, 0), ("n10", BRIDGE, TAGGED), ("p20", BRIDGE, OTHER),
                                  ("q30", TRUNKED, TRUNK_VLAN)):
            name = f"{bridge}-vlan-{vlan}" if vlan else bridge
            self.client.call("AttachVm", "ssqa{sv}", key, bridge, vlan, {})  # p20's makes a bridge network
            tap = self.client.call("CreateTap", "ssa{sv}", key, "eth0", {})[0]
            self.nets[key] = self.client.call("GetNetwork", "s", name)[0]
            vms[key] = dict(next(e for e in self.nets[key]["Vms"] if e["VmId"] == key), tap=tap)
        probe_who_answers(self.report, self.wire, self.nets, vms, self.vlans_of)
        self._drop("p20", "q30")  # only the probes needed them
        del vms["p20"], vms["q30"]
        untagged, tagged = self.nets["n0"], self.nets["n10"]
        futures = {key: self.pool.submit(Guest, self.ns, vm["tap"], mac=vm["Mac"], timeout=RELAY_WAIT)
                   for key, vm in vms.items()}
        for key, future in futures.items():
            if future.exception() is None:
                self.guests[key] = future.result()  # closed by close(), whatever happens next
        for future in futures.values():
            if future.exception() is not None:
                raise future.exception()
        futures = {key: self.pool.submit(guest.dhcp, timeout=DHCP_WAIT) for key, guest in self.guests.items()}
        self.leases = {key: future.result() for key, future in futures.items()}
        for key, net in self.nets.items():
            vm, lease = vms[key], self.leases.get(key)
            got = (lease.ip, lease.prefix, lease.router, lease.server, lease.dns) if lease else None
            want = (vm["Ip"], int(net["Subnet"].split("/")[1]), net["Gateway"], net["Gateway"], (net["Gateway"],))
            self.report.check(11, f"{key}'s guest on {net['Name']} (VLAN {net['Vlan'] or 'none'}) gets exactly "
                              "the address fcnetd reports, from its own network's gateway", got == want,
                              f"lease (ip, prefix, router, server, dns) {got}; reported {want}")
        gateway_port(self.report, daemon, tagged, untagged, self.vlans_of)
        if self.leases.get("n0") and self.leases.get("n10"):
            routing(self.report, self.pool, self.internet, self.guests["n0"], self.guests["n10"], self.leases,
                    tagged, untagged)
        problems = re.findall(r".*(?:ERROR|Traceback|WARNING fcnetd\.nat).*", daemon.output()[log_start:])
        self.report.check(13, "fcnetd logged no error and no nat warning meanwhile", not problems, "\n".join(problems))

    def _drop(self, *keys: str) -> None:
        for key in keys:
            self.client.call("DetachVm", "ss", key, "eth0")
            self.client.call("DeleteNetwork", "s", self.nets.pop(key)["Name"])

    def delete(self, daemon) -> None:
        self._drop(*(self.nets.keys() - {"n0", "n10"}))  # left by a failure in run()
        guest = self.guests.pop("n10", None)
        if guest is not None:
            guest.close()
        deleted(self.report, self.client, daemon, self.nets["n10"], self.nets["n0"], self.vlans_of,
                self.guests.get("n0"), self.leases.get("n0"))
        # The last nat network goes too: the scenarios after these see the bridge as before.
        self.client.call("DetachVm", "ss", "n0", "eth0")
        self.client.call("DeleteNetwork", "s", self.nets["n0"]["Name"])
        table = fcnetd_table()
        self.report.check(14, "after the last nat network, table inet fcnetd is gone and no gateway is left",
                          not table and not [a for a in ipv4() if a.startswith("10.213.")], f"{ipv4()}\n{table}")

    def close(self) -> None:
        for guest in self.guests.values():
            guest.close()
        self.pool.shutdown()
        if self.internet is not None:
            self.internet.close()


def probe_who_answers(report, wire, nets, vms, vlans_of) -> None:
    """12. A DISCOVER for each nat VM's MAC from every VM's TAP and from the
    uplink (untagged, tagged 30 and 10): only the VM's own network, on its
    own port, answers. Replies are broadcast (the DISCOVERs ask for it), so
    they reach every port of the VLAN they are sent in."""
    trunk = vlans_of(UPLINK)
    report.check(12, f"the uplink {UPLINK} does not carry nat VLAN {TRUNK_VLAN} of {TRUNKED}",
                 TRUNK_VLAN not in trunk, f"bridge vlan show dev {UPLINK}: {trunk}")
    ports = {key: Endpoint(key, vms[key]["tap"], 900 + i) for i, key in enumerate(vms)}
    try:
        nat_vms = [key for key in vms if nets[key]["Mode"] == "nat"]
        sent, xid = {}, 0x7C00  # xid -> (where it was sent, the port that may hear it answered, VM)
        for key, port in ports.items():
            for vm in nat_vms:
                xid += 1
                sent[xid] = (f"{key}'s TAP on {nets[key]['Name']}", key, vm)
                port.write(discover(port.mac, vms[vm]["Mac"], xid))
        for vid in (None, TRUNK_VLAN, TAGGED):
            for vm in nat_vms:
                xid += 1
                sent[xid] = (f"{TRUNKED}'s uplink {'untagged' if vid is None else f'tagged {vid}'}", None, vm)
                wire.send(discover(mac(899), vms[vm]["Mac"], xid, vid))
        heard: dict[int, list] = {}
        for where, frames in [("uplink", wire.raw(PROBE_WAIT))] + [(k, p.raw(0.2)) for k, p in ports.items()]:
            for vid, data in frames:
                got = reply(data, vid)
                if got and got.xid in sent:
                    heard.setdefault(got.xid, []).append((where, got))
    finally:
        for port in ports.values():
            port.close()
    for xid, (origin, port, vm) in sent.items():
        net, answers = nets[vm], heard.get(xid, [])
        seen = [f"{KINDS.get(r.kind, r.kind)} of {r.yiaddr} from {r.server} on {w}" for w, r in answers]
        what = f"DISCOVER for {vm} ({vms[vm]['Mac']}, nat network {net['Name']}) from {origin}"
        if port == vm:
            ok = [(w, r.kind, r.yiaddr, r.server) for w, r in answers] == \
                 [(vm, OFFER, vms[vm]["Ip"], net["Gateway"])]
            report.check(12, f"{what}: one OFFER of {vms[vm]['Ip']} from {net['Gateway']}, heard there only", ok,
                         f"heard {seen or 'nothing'}")
        else:
            report.check(12, f"{what}: no answer", not answers, f"heard {seen}")


def gateway_port(report, daemon, tagged, untagged, vlans_of) -> None:
    """13. Where each gateway lives."""
    dev = link(L3_PORT) or {}
    info = dev.get("linkinfo", {})
    report.check(13, f"the tagged nat network's gateway port is VLAN device {L3_PORT} on {BRIDGE}, VID {TAGGED}",
                 (info.get("info_kind"), info.get("info_data", {}).get("id"), dev.get("link"))
                 == ("vlan", TAGGED, BRIDGE) and dev.get("ifalias") == f"fcnetd-l3:{tagged['Id']}",
                 f"ip -d link show {L3_PORT}: kind {info.get('info_kind')}, {info.get('info_data')}, "
                 f"link {dev.get('link')}, alias {dev.get('ifalias')}" if dev else "no such device")
    got = {L3_PORT: ipv4(L3_PORT) if dev else [], BRIDGE: ipv4(BRIDGE)}
    want = {L3_PORT: [gateway(tagged)], BRIDGE: [gateway(untagged)]}
    report.check(13, "each gateway address is on its own network's L3 port only", got == want,
                 f"addresses {got}; expected {want}")
    own = vlans_of(BRIDGE)
    report.check(13, f"{BRIDGE} itself is a tagged member of VLAN {TAGGED} (for {L3_PORT}) and of no other "
                 f"VLAN but its default (not {OTHER}, the bridge network's)",
                 own == {1: ["Egress Untagged", "PVID"], TAGGED: []}, f"bridge vlan show dev {BRIDGE}: {own}")
    pids = dnsmasq_pids(daemon.state_dir, tagged["Id"])
    report.check(13, f"one dnsmasq serves the tagged nat network, on {L3_PORT}",
                 len(pids) == 1 and all(f"--interface={L3_PORT}" in cmdline(p) for p in pids),
                 f"{[cmdline(p) for p in pids]}")


def routing(report, pool, internet, g0, g10, leases, tagged, untagged) -> None:
    """13. Out through masquerade; nothing between the two nat networks."""
    for who, guest, net in (("tagged", g10, tagged), ("untagged", g0, untagged)):
        report.check(13, f"the {who} VM's guest reaches its gateway", guest.ping(net["Gateway"], timeout=10))
    with internet.capture() as cap:
        out = g10.ping(Internet.OUTSIDE, timeout=10)
        sources = cap.echo_sources(Internet.OUTSIDE, wait=5) if out else set()
    report.check(13, f"the tagged VM's guest reaches {Internet.OUTSIDE} outside, seen there as the host "
                 f"{Internet.HOST} (masquerade)", out and sources == {Internet.HOST},
                 f"answered {out}; the outside saw echo requests from {sources}")
    cases = (("tagged", g10, leases["n0"].ip, "the untagged network's VM"),
             ("untagged", g0, leases["n10"].ip, "the tagged network's VM"),
             ("tagged", g10, untagged["Gateway"], "the untagged network's gateway"))
    silent = [(who, target, what, pool.submit(guest.ping, target, timeout=SILENT_PING))
              for who, guest, target, what in cases]  # at once: each waits out its timeout
    for who, target, what, answered in silent:
        report.check(13, f"the {who} VM's guest cannot reach {what} ({target})", not answered.result())


def reconciled(report, daemon, tagged, vlans_of, g10, lease10) -> None:
    """15. fcbr0 taken out of VLAN 10 by hand cuts the tagged network from
    its gateway; a reconcile (SIGHUP) puts it back and keeps the rest of
    the tagged network (VLAN device, gateway, dnsmasq) as it is."""
    index = (link(L3_PORT) or {}).get("ifindex")
    pids = dnsmasq_pids(daemon.state_dir, tagged["Id"])
    sh("bridge", "vlan", "del", "vid", str(TAGGED), "dev", BRIDGE, "self")
    cut = g10.renew(timeout=CUT_WAIT)
    report.check(15, f"with {BRIDGE} out of VLAN {TAGGED} (by hand), the tagged VM's guest renews nothing",
                 cut is None, f"{cut}")
    log_start = len(daemon.output())
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + RECONCILE_WAIT
    # the reload's last line; the audit entry "config reloaded: action=..." comes before its reconcile
    while "config reloaded: bridges" not in daemon.output()[log_start:] and time.monotonic() < deadline:
        time.sleep(0.1)
    log = daemon.output()[log_start:]
    problems = re.findall(r".*(?:ERROR|Traceback|WARNING fcnetd\.nat).*", log)
    report.check(15, "SIGHUP's reconcile ran and logged no error and no nat warning",
                 "config reloaded: bridges" in log and not problems, "\n".join(problems) or log[-1500:])
    own = vlans_of(BRIDGE)
    report.check(15, f"{BRIDGE} itself is a tagged member of VLAN {TAGGED} again",
                 own == {1: ["Egress Untagged", "PVID"], TAGGED: []}, f"bridge vlan show dev {BRIDGE}: {own}")
    dev = link(L3_PORT) or {}
    report.check(15, f"{L3_PORT} was kept (ifindex {index}), with its gateway {tagged['Gateway']}",
                 index is not None and dev.get("ifindex") == index and ipv4(L3_PORT) == [gateway(tagged)],
                 f"ifindex {dev.get('ifindex')}, addresses {ipv4(L3_PORT) if dev else []}")
    after = dnsmasq_pids(daemon.state_dir, tagged["Id"])
    report.check(15, "its dnsmasq was kept", len(pids) == 1 and after == pids, f"before {pids}, after {after}")
    renewed = g10.renew(timeout=10)
    report.check(15, "the tagged VM's guest renews the same lease from its gateway",
                 renewed is not None and renewed.ip == lease10.ip and renewed.server == tagged["Gateway"],
                 f"{renewed}")


def deleted(report, client, daemon, tagged, untagged, vlans_of, g0: Guest | None, lease0) -> None:
    """14. DeleteNetwork of the tagged nat network: nothing of it is left."""
    client.call("DetachVm", "ss", "n10", "eth0")
    client.call("DeleteNetwork", "s", tagged["Name"])
    report.check(14, f"the VLAN device {L3_PORT} is gone", link(L3_PORT) is None, f"{link(L3_PORT)}")
    gateway = tagged["Gateway"] + "/"
    report.check(14, f"the gateway address {tagged['Gateway']} is on no device",
                 not [a for a in ipv4() if a.startswith(gateway)], f"{ipv4()}")
    pids = dnsmasq_pids(daemon.state_dir, tagged["Id"])
    report.check(14, "no dnsmasq runs for it", not pids, f"{[cmdline(p) for p in pids]}")
    nat_dir = os.path.join(daemon.state_dir, "nat")
    left = [f for f in os.listdir(nat_dir) if f.startswith(tagged["Id"])] if os.path.isdir(nat_dir) else []
    report.check(14, "none of its dnsmasq files is left", not left, f"{left}")
    table = fcnetd_table()
    marks = [tagged["Subnet"], L3_PORT, *counter_names(tagged["Id"])]
    report.check(14, "table inet fcnetd has no rule or counter of it, and still those of the untagged network",
                 not [m for m in marks if m in table] and untagged["Subnet"] in table,
                 f"found {[m for m in marks if m in table]} of {marks}:\n{table}")
    own = vlans_of(BRIDGE)
    report.check(14, f"{BRIDGE} itself is no longer a member of VLAN {TAGGED}", own == {1: ["Egress Untagged", "PVID"]},
                 f"bridge vlan show dev {BRIDGE}: {own}")
    renewed = g0.renew(timeout=10) if g0 and lease0 else None
    report.check(14, "the untagged nat network's guest still renews its lease",
                 renewed is not None and lease0 is not None and renewed.ip == lease0.ip, f"{renewed}")
