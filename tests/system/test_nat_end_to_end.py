"""NAT mode end to end with real parts (issue 10, "Proof, with real parts",
system tier): the real daemon makes nat networks; guests joined to their
TAPs through fcnetd.relay run busybox udhcpc and must get exactly what the
daemon reports, reach the internet namespace as the host's outside address,
and nothing of another fcnetd network. Deleting leaves nothing behind, and
a restart (clean or kill -9) keeps the guest's address and one dnsmasq.

Written against the contract (ARCHITECTURE.md "Network modes and addresses
(v2, contract)") and NAT-DESIGN.md, before the feature: on a daemon without
nat mode every test here fails."""

import json
import os
import re
import signal
import subprocess
import sys
from ipaddress import ip_address

import pytest

from .guestnet import guests, internet  # noqa: F401 (fixtures)
from .guestnet import OUTSIDE_NAME, Internet, dnsmasq_pids
from .harness import Daemon, fcnetctl, run, v, wait_for

ERR = "org.fcnetd.Network1.Error."
POOL_FIRST = "10.213.0.0/24"  # the first /24 of the default [nat] pool 10.213.0.0/16


@pytest.fixture
def daemon(ns, internet, bus, tmp_path, config):
    d = Daemon(ns, bus, str(tmp_path / "state"), config).start()
    yield d
    d.stop()
    # A test that failed between a kill -9 and the restart, or a daemon whose
    # stop left one behind, must not leave this test's dnsmasq running.
    for pid in dnsmasq_pids(d.state_dir):
        os.kill(pid, signal.SIGKILL)


def nat(client, bridge: str, **opts) -> dict:
    """Creates a nat network over D-Bus; its GetNetwork entry."""
    client.call("CreateNetwork", "ssqa{sv}", "", bridge, 0,
                {"mode": v("s", "nat"), **{k: v("s", val) for k, val in opts.items()}})
    return client.call("GetNetwork", "s", bridge)[0]


def vm_entry(client, network: str, vm: str) -> dict:
    return next(e for e in client.call("GetNetwork", "s", network)[0]["Vms"] if e["VmId"] == vm)


def start_vm(client, vm: str, bridge: str, **opts) -> tuple[str, dict]:
    """AttachVm (options as strings) then CreateTap: (the TAP, the VM's Vms entry)."""
    client.call("AttachVm", "ssqa{sv}", vm, bridge, 0, {k: v("s", val) for k, val in opts.items()})
    tap = client.call("CreateTap", "ssa{sv}", vm, "eth0", {})[0]
    return tap, vm_entry(client, bridge, vm)


def leased(guests, tap: str, vm: dict):
    """A guest with the VM's MAC that got a lease; (guest, lease)."""
    guest = guests(tap, mac=vm["Mac"])
    lease = guest.dhcp()
    assert lease is not None, f"no DHCP answer for {vm['VmId']} ({vm['Mac']}); relay: {guest.relay_output()}"
    return guest, lease


def ruleset(ns) -> str:
    return run(["ip", "netns", "exec", ns.name, "nft", "list", "ruleset"]).stdout


def fcnetd_table(ns) -> str:
    """`nft list table inet fcnetd` without counter values, which traffic changes."""
    text = run(["ip", "netns", "exec", ns.name, "nft", "list", "table", "inet", "fcnetd"]).stdout
    return re.sub(r"packets \d+ bytes \d+", "packets - bytes -", text)


def ipv4_on(ns, ifname: str) -> list[str]:
    info = json.loads(ns.ip("-j", "-4", "addr", "show", "dev", ifname).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for i in info for a in i.get("addr_info", [])]


def nat_files(state_dir: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(state_dir, "nat")))
    except FileNotFoundError:
        return []


def test_fcnetctl_nat_network_guest_gets_the_reported_address_and_reaches_outside_as_the_host(
        daemon, bus, client, guests, internet):
    ns = daemon.ns
    created = fcnetctl(bus.address, "create", "fcbr0", "--mode", "nat").stdout.strip()
    assert created == f"created fcbr0 (nat {POOL_FIRST}, gateway 10.213.0.1)"
    net = client.call("GetNetwork", "s", "fcbr0")[0]
    assert (net["Mode"], net["Subnet"], net["Gateway"], net["Dhcp"]) == ("nat", POOL_FIRST, "10.213.0.1", True)
    assert ipv4_on(ns, "fcbr0") == ["10.213.0.1/24"]

    attached = fcnetctl(bus.address, "attach", "vm-1", "fcbr0", "--vm-name", "web").stdout.strip()
    tap = fcnetctl(bus.address, "tap-create", "vm-1").stdout.strip()
    vm = vm_entry(client, "fcbr0", "vm-1")
    assert attached == f"attached vm-1 eth0 ip {vm['Ip']} mac {vm['Mac']}"
    assert vm["Ip"] == "10.213.0.2", "the lowest free address after the gateway"
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", vm["Mac"], re.I), vm["Mac"]
    shown = fcnetctl(bus.address, "show", "fcbr0").stdout
    for value in ("nat", POOL_FIRST, "10.213.0.1", vm["Ip"], vm["Mac"]):
        assert value in shown, f"fcnetctl show lacks {value}:\n{shown}"

    guest, lease = leased(guests, tap, vm)
    assert (lease.ip, lease.prefix, lease.router, lease.dns) == (vm["Ip"], 24, net["Gateway"], (net["Gateway"],))
    assert guest.addresses() == [f"{vm['Ip']}/24"]
    assert guest.default_route() == net["Gateway"]
    assert guest.ping(net["Gateway"])
    with internet.capture() as cap:
        assert guest.ping(Internet.OUTSIDE)
        assert cap.echo_sources(Internet.OUTSIDE) == {Internet.HOST}, "the outside must see the host's address"
    assert guest.resolve(OUTSIDE_NAME) == [Internet.OUTSIDE], "DNS through fcnetd's forwarder"


def test_nat_networks_cannot_reach_each_others_vms_or_gateway(daemon, client, guests):
    a_net, b_net = nat(client, "fcbr0"), nat(client, "fcbr1")
    assert a_net["Subnet"] != b_net["Subnet"]
    listed = client.call("ListNetworks", "a{sv}", {"mode": v("s", "nat")})[0]
    assert sorted(n["Name"] for n in listed) == ["fcbr0", "fcbr1"]
    a, a_lease = leased(guests, *start_vm(client, "vm-a", "fcbr0"))
    b, b_lease = leased(guests, *start_vm(client, "vm-b", "fcbr1"))
    # each reaches its own gateway and the outside, so the refusals below are the firewall's
    for guest, net in ((a, a_net), (b, b_net)):
        assert guest.ping(net["Gateway"]) and guest.ping(Internet.OUTSIDE)
    assert not b.ping(a_lease.ip, timeout=1), "no forwarding between fcnetd networks"
    assert not a.ping(b_lease.ip, timeout=1), "no forwarding between fcnetd networks"
    assert not b.ping(a_net["Gateway"], timeout=1), "another network's gateway"
    assert not a.ping(b_net["Gateway"], timeout=1), "another network's gateway"


def test_a_vm_sending_from_an_address_outside_its_subnet_gets_nowhere(daemon, client, guests, internet):
    """A VM can send any source address. From another nat network's subnet
    it was masqueraded like that network's own traffic (and the replies
    delivered into it); from any other address it was forwarded as it was."""
    nat(client, "fcbr0")
    b_net = nat(client, "fcbr1")
    a, a_lease = leased(guests, *start_vm(client, "vm-a", "fcbr0"))
    with internet.capture() as cap:
        assert a.ping(Internet.OUTSIDE), "the VM's own address reaches outside"
        assert cap.echo_sources(Internet.OUTSIDE) == {Internet.HOST}
    for spoofed in (str(ip_address(b_net["Gateway"]) + 4), "198.51.100.77"):
        a.netns.ip("addr", "add", f"{spoofed}/32", "dev", a.ifname)
        with internet.capture() as cap:
            assert not a.ping(Internet.OUTSIDE, timeout=1, source=spoofed)
            assert cap.echo_sources(Internet.OUTSIDE) == set(), f"an echo from {spoofed} left the host"


def test_the_gateway_answers_only_its_own_network(daemon, client, guests, internet):
    """dnsmasq's DNS and the gateway address answered anyone who could route
    to them (a LAN neighbour, the outside): an open resolver on the host."""
    net = nat(client, "fcbr0")
    guest, _ = leased(guests, *start_vm(client, "vm-1", "fcbr0"))
    assert guest.resolve(OUTSIDE_NAME, server=net["Gateway"]) == [Internet.OUTSIDE]
    outside = internet.netns
    outside.ip("route", "add", net["Subnet"], "via", Internet.HOST)
    res = subprocess.run(["ip", "netns", "exec", outside.name, "busybox", "nslookup", "-type=a", OUTSIDE_NAME,
                          net["Gateway"]], capture_output=True, text=True, timeout=30)
    assert Internet.OUTSIDE not in res.stdout, f"the gateway resolved a name for the outside:\n{res.stdout}"
    ping = subprocess.run(["ip", "netns", "exec", outside.name, "busybox", "ping", "-c", "1", "-W", "1",
                           net["Gateway"]], capture_output=True)
    assert ping.returncode != 0, "the gateway answered a ping from outside its network"


def test_the_host_takes_only_dhcp_dns_and_icmp_from_a_nat_network(daemon, client, guests):
    net = nat(client, "fcbr0")
    guest, _ = leased(guests, *start_vm(client, "vm-1", "fcbr0"))
    ns = daemon.ns
    listener = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c",
                                 "import socket, time\n"
                                 "s = socket.create_server(('0.0.0.0', 8017))\n"
                                 "time.sleep(600)\n"], stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: run(["ip", "netns", "exec", ns.name, "ss", "-Hltn", "sport = :8017"]).stdout.strip(),
                 what="a TCP service on the host")
        assert guest.ping(net["Gateway"])
        assert not guest.connects(net["Gateway"], 8017), "a TCP service of the host is open to the VM"
    finally:
        listener.terminate()
        listener.wait(10)


def test_a_vm_on_a_bridge_network_gets_no_answer_from_fcnetds_dnsmasq(daemon, client, guests):
    nat(client, "fcbr0")
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr1", 0, {})
    bridged = client.call("GetNetwork", "s", "fcbr1")[0]
    assert (bridged["Mode"], bridged["Dhcp"], bridged["Gateway"]) == ("bridge", False, "")
    assert [n["Name"] for n in client.call("ListNetworks", "a{sv}", {"mode": v("s", "bridge")})[0]] == ["fcbr1"]
    tap, vm = start_vm(client, "vm-n", "fcbr0")
    leased(guests, tap, vm)
    other_tap, _ = start_vm(client, "vm-b", "fcbr1")
    # the same MAC as the nat VM, which fcnetd's dnsmasq has a lease for
    stranger = guests(other_tap, mac=vm["Mac"])
    assert stranger.dhcp(timeout=4) is None, "fcnetd's dnsmasq answered on a bridge network"


def test_detach_and_delete_leave_no_rule_dnsmasq_file_or_address(daemon, client, guests):
    ns, state = daemon.ns, daemon.state_dir
    a_net = nat(client, "fcbr0", subnet="10.213.7.0/24")
    b_net = nat(client, "fcbr1")
    assert (a_net["Subnet"], a_net["Gateway"], b_net["Subnet"]) == ("10.213.7.0/24", "10.213.7.1", POOL_FIRST)
    leased(guests, *start_vm(client, "vm-1", "fcbr0"))
    assert "10.213.7.0/24" in ruleset(ns)
    assert len(dnsmasq_pids(state, a_net["Id"])) == 1, "one dnsmasq per nat network"
    assert any(f.startswith(a_net["Id"]) for f in nat_files(state))

    client.call("DetachVm", "ss", "vm-1", "eth0")
    client.call("DeleteNetwork", "s", "fcbr0")
    rules = ruleset(ns)
    assert "10.213.7." not in rules, rules
    assert POOL_FIRST in rules, "the other nat network's rules must stay"
    wait_for(lambda: not dnsmasq_pids(state, a_net["Id"]), 5, what="the deleted network's dnsmasq to stop")
    assert not [f for f in nat_files(state) if f.startswith(a_net["Id"])]
    assert ipv4_on(ns, "fcbr0") == []

    client.call("DeleteNetwork", "s", "fcbr1")
    assert "fcnetd" not in run(["ip", "netns", "exec", ns.name, "nft", "list", "tables"]).stdout
    assert "10.213." not in ruleset(ns)
    wait_for(lambda: not dnsmasq_pids(state), 5, what="every dnsmasq of fcnetd to stop")
    assert nat_files(state) == []
    assert ipv4_on(ns, "fcbr1") == []


def test_a_static_ip_is_honoured_and_a_taken_one_refused(daemon, bus, client, guests):
    nat(client, "fcbr0", subnet="10.213.9.0/24")
    tap, vm = start_vm(client, "vm-s", "fcbr0", ip="10.213.9.50")
    assert vm["Ip"] == "10.213.9.50"
    fcnetctl(bus.address, "attach", "vm-t", "fcbr0", "--ip", "10.213.9.60")
    assert vm_entry(client, "fcbr0", "vm-t")["Ip"] == "10.213.9.60"
    for taken in ("10.213.9.50", "10.213.9.1", "10.213.10.5"):  # in use, the gateway, outside the subnet
        err = client.error("AttachVm", "ssqa{sv}", "vm-u", "fcbr0", 0, {"ip": v("s", taken)})
        assert err.type == ERR + "AddressUnavailable" and "ip" in err.text, (taken, err.text)
    client.call("AttachVm", "ssqa{sv}", "vm-w", "fcbr0", 0, {})
    assert vm_entry(client, "fcbr0", "vm-w")["Ip"] == "10.213.9.2"
    _, lease = leased(guests, tap, vm)
    assert lease.ip == "10.213.9.50"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_a_restart_keeps_the_guests_address_and_one_dnsmasq(daemon, client, guests, sig):
    ns, state = daemon.ns, daemon.state_dir
    net = nat(client, "fcbr0")
    tap, vm = start_vm(client, "vm-1", "fcbr0")
    guest, lease = leased(guests, tap, vm)
    before = dnsmasq_pids(state, net["Id"])
    assert len(before) == 1, before
    table = fcnetd_table(ns)

    if sig == signal.SIGKILL:
        daemon.kill9()
        assert dnsmasq_pids(state, net["Id"]) == before, "dnsmasq must outlive a crash of fcnetd"
    else:
        assert daemon.stop() == 0
        assert dnsmasq_pids(state, net["Id"]) == set(), "a clean stop stops dnsmasq"
    daemon.start()
    after = wait_for(lambda: dnsmasq_pids(state, net["Id"]), 10, what="the network's dnsmasq after the restart")
    assert len(after) == 1, f"one dnsmasq per network after the restart, found {after}"
    if sig == signal.SIGKILL:
        assert after == before, "the running dnsmasq is adopted, not restarted"

    renewed = guest.renew()
    assert renewed is not None and renewed.ip == lease.ip == vm["Ip"]
    assert vm_entry(client, "fcbr0", "vm-1")["Ip"] == lease.ip
    assert fcnetd_table(ns) == table, "the rebuilt table differs"
    assert guest.ping(Internet.OUTSIDE)
    with open(os.path.join(state, "nat", f"{net['Id']}.leases")) as f:
        assert vm["Mac"].lower() in f.read().lower(), "the lease is kept"
    assert dnsmasq_pids(state, net["Id"]) == after


def test_the_host_takes_no_ipv6_from_a_nat_network(daemon, client, guests):
    """A nat network is IPv4 only: the host's IPv6 address on the port (the
    bridge's link-local one, which the kernel gives it unasked) answers no
    VM."""
    net = nat(client, "fcbr0")
    guest, _ = leased(guests, *start_vm(client, "vm-1", "fcbr0"))
    ns = daemon.ns

    def link_local(netns, ifname: str) -> str | None:
        info = json.loads(netns.ip("-j", "-6", "addr", "show", "dev", ifname, "scope", "link").stdout)
        found = [a["local"] for i in info for a in i.get("addr_info", []) if not a.get("tentative")]
        return found[0] if found else None
    run(["ip", "netns", "exec", guest.netns.name, "sysctl", "-q", "-w", f"net.ipv6.conf.{guest.ifname}.disable_ipv6=0"])
    bridge_ll = wait_for(lambda: link_local(ns, "fcbr0"), what="the bridge's link-local address")
    wait_for(lambda: link_local(guest.netns, guest.ifname), what="the guest's link-local address")
    assert guest.ping(net["Gateway"]), "IPv4 to the gateway works, so the refusal below is about IPv6"
    res = subprocess.run(["ip", "netns", "exec", guest.netns.name, "busybox", "ping", "-6", "-c", "2", "-W", "1",
                          f"{bridge_ll}%{guest.ifname}"], capture_output=True, text=True, timeout=30)
    assert res.returncode != 0, f"the host answered IPv6 from a nat network:\n{res.stdout}"


def test_after_a_host_reboot_the_first_vm_gets_its_gateway_and_lease(daemon, client, guests):
    """A reboot takes the bridge, its gateway address and every TAP with
    it (the registry stays). The first VM started afterwards (its CreateTap
    makes the bridge again) must find its network whole: the gateway on
    the bridge and a dnsmasq that leases it its reported address."""
    ns, state = daemon.ns, daemon.state_dir
    net = nat(client, "fcbr0")
    tap, vm = start_vm(client, "vm-1", "fcbr0")
    leased(guests, tap, vm)
    assert daemon.stop() == 0
    ns.ip("link", "del", tap)
    ns.ip("link", "del", "fcbr0")  # what a reboot leaves: no bridge, no TAP, no address
    daemon.start()

    tap = client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {})[0]
    wait_for(lambda: ipv4_on(ns, "fcbr0") == [f"{net['Gateway']}/24"], 10,
             what="the gateway on the bridge CreateTap made again")
    wait_for(lambda: len(dnsmasq_pids(state, net["Id"])) == 1, 10, what="the network's dnsmasq")
    _, lease = leased(guests, tap, vm)
    assert lease.ip == vm["Ip"]
    assert lease.router == net["Gateway"]


def test_a_bridge_deleted_behind_fcnetds_back_is_made_again_with_its_tap_and_gateway(daemon, client, guests):
    """An admin deletes a nat network's bridge (`create = true`) by mistake:
    fcnetd makes it again and puts back what it owns on it (the VM's TAP
    as a port, the gateway address); the VM's DHCP works again."""
    ns = daemon.ns
    net = nat(client, "fcbr0")
    tap, vm = start_vm(client, "vm-1", "fcbr0")
    guest, _ = leased(guests, tap, vm)
    ns.ip("link", "del", "fcbr0")
    wait_for(lambda: ipv4_on(ns, "fcbr0") == [f"{net['Gateway']}/24"], 10, what="the gateway back on the bridge")
    wait_for(lambda: (ns.link(tap) or {}).get("master") == "fcbr0", 10, what="the TAP back on the bridge")
    again = guest.renew()
    assert again is not None and again.ip == vm["Ip"]
    assert guest.ping(net["Gateway"])


def test_an_admins_bridge_made_again_by_hand_gets_fcnetds_tap_and_gateway_back(ns, bus, tmp_path, internet,
                                                                                client, guests):
    """A bridge fcnetd may not make (`create = false`) is deleted: fcnetd
    waits, and once the admin makes it again puts its TAP and gateway on it."""
    ns.ip("link", "add", "adm0", "type", "bridge")
    ns.ip("link", "set", "adm0", "up")
    config = tmp_path / "admin.toml"
    config.write_text('[daemon]\nhost = "node1"\n\n[bridges.adm0]\n')
    daemon = Daemon(ns, bus, str(tmp_path / "state"), str(config)).start()
    try:
        net = nat(client, "adm0")
        tap, vm = start_vm(client, "vm-1", "adm0")
        guest, _ = leased(guests, tap, vm)
        ns.ip("link", "del", "adm0")
        assert ns.link("adm0") is None or wait_for(lambda: ns.link("adm0") is None, 5, what="adm0 to stay gone")
        ns.ip("link", "add", "adm0", "type", "bridge")
        ns.ip("link", "set", "adm0", "up")
        wait_for(lambda: ipv4_on(ns, "adm0") == [f"{net['Gateway']}/24"], 10, what="the gateway back on adm0")
        wait_for(lambda: (ns.link(tap) or {}).get("master") == "adm0", 10, what="the TAP back on adm0")
        again = guest.renew()
        assert again is not None and again.ip == vm["Ip"]
    finally:
        daemon.stop()
        for pid in dnsmasq_pids(daemon.state_dir):
            os.kill(pid, signal.SIGKILL)
