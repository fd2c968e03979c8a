"""The test bed proves itself (issue 10, "Proof, with real parts"): a guest
joined to a TAP of the real daemon through fcnetd.relay gets a lease from a
plain dnsmasq started by hand, pings, resolves, and reaches the internet
namespace, whose capture shows the source a reply would go to. No NAT of
fcnetd's is involved: these pass on a daemon without nat mode, so when the
NAT tests fail, the fault is not in the bed."""

import os

import pytest

from .guestnet import guests, internet  # noqa: F401 (fixtures)
from .guestnet import OUTSIDE_NAME, DhcpServer, Internet, dnsmasq, dnsmasq_pids
from .harness import Daemon, run, v, wait_for

MAC = "02:fc:00:00:00:15"


@pytest.fixture
def daemon(ns, internet, bus, tmp_path, config):
    d = Daemon(ns, bus, str(tmp_path / "state"), config).start()
    yield d
    d.stop()


def vm_tap(client, vm: str, bridge: str, mac: str = "") -> tuple[str, dict]:
    """Attaches `vm` to the bridge network on `bridge` and starts its TAP: (TAP, its Vms entry)."""
    client.call("AttachVm", "ssqa{sv}", vm, bridge, 0, {"mac": v("s", mac)} if mac else {})
    tap = client.call("CreateTap", "ssa{sv}", vm, "eth0", {})[0]
    entry = next(e for e in client.call("GetNetwork", "s", bridge)[0]["Vms"] if e["VmId"] == vm)
    return tap, entry


def test_guest_gets_its_lease_through_the_relay_pings_and_renews(daemon, client, guests):
    tap, vm = vm_tap(client, "vm-1", "fcbr0", MAC)
    guest = guests(tap, mac=vm["Mac"])
    assert guest.mac == MAC
    assert guest.dhcp(timeout=2) is None, "a lease with no DHCP server on the bridge"
    with DhcpServer(daemon.ns, "fcbr0", "192.0.2.1/24", ("192.0.2.10", "192.0.2.20"), {MAC: "192.0.2.15"}):
        lease = guest.dhcp()
        assert lease is not None, f"no lease; relay: {guest.relay_output()}"
        assert (lease.ip, lease.prefix, lease.router, lease.dns) == ("192.0.2.15", 24, "192.0.2.1", ("192.0.2.1",))
        assert guest.addresses() == ["192.0.2.15/24"]
        assert guest.default_route() == "192.0.2.1"
        assert guest.ping("192.0.2.1")
        assert not guest.ping("192.0.2.99", timeout=1)
        renewed = guest.renew()
        assert renewed is not None and (renewed.event, renewed.ip) == ("renew", "192.0.2.15")


def test_guest_without_a_static_host_gets_an_address_from_the_pool(daemon, client, guests):
    tap, _ = vm_tap(client, "vm-2", "fcbr1")
    guest = guests(tap, mac="02:fc:00:00:00:99")
    with DhcpServer(daemon.ns, "fcbr1", "192.0.2.1/24", ("192.0.2.10", "192.0.2.20")):
        lease = guest.dhcp()
        assert lease is not None and 10 <= int(lease.ip.rsplit(".", 1)[1]) <= 20


def test_the_relay_stops_and_its_guest_nic_goes_when_fcnetd_deletes_the_tap(daemon, client, guests):
    tap, _ = vm_tap(client, "vm-4", "fcbr0")
    guest = guests(tap)
    assert guest.netns.link("eth0") is not None
    client.call("DeleteTap", "ss", "vm-4", "eth0")
    assert wait_for(lambda: guest.relay.poll() is not None, what="the relay to stop") and guest.relay.returncode == 0
    assert "is gone" in guest.relay_output()
    assert guest.netns.link("eth0") is None


def test_internet_sees_the_host_address_and_answers_dns(daemon, internet):
    ns = daemon.ns
    with internet.capture() as cap:
        run(["ip", "netns", "exec", ns.name, "busybox", "ping", "-c", "1", "-W", "2", Internet.OUTSIDE])
        assert cap.echo_sources(Internet.OUTSIDE) == {Internet.HOST}
    # the resolver of the daemon's namespace (and so of fcnetd's dnsmasq) asks the internet
    out = run(["ip", "netns", "exec", ns.name, "busybox", "nslookup", "-type=a", OUTSIDE_NAME]).stdout
    assert f"Address: {Internet.OUTSIDE}" in out.split("Name:", 1)[1]


def test_guest_reaches_the_internet_only_through_a_masquerade(daemon, client, guests, internet):
    ns = daemon.ns
    tap, vm = vm_tap(client, "vm-3", "fcbr0", MAC)
    guest = guests(tap, mac=vm["Mac"])
    with DhcpServer(ns, "fcbr0", "192.0.2.1/24", ("192.0.2.10", "192.0.2.20"), {MAC: "192.0.2.15"}):
        assert guest.dhcp() is not None
        # DNS through the hand-started dnsmasq's forwarder, as fcnetd's will forward
        assert guest.resolve(OUTSIDE_NAME) == [Internet.OUTSIDE]
        run(["ip", "netns", "exec", ns.name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        with internet.capture() as cap:
            assert not guest.ping(Internet.OUTSIDE, timeout=1), "the internet has no route back to 192.0.2.0/24"
            assert cap.echo_sources(Internet.OUTSIDE) == {"192.0.2.15"}
        run(["ip", "netns", "exec", ns.name, "nft", "add table ip testbed; "
             "add chain ip testbed post { type nat hook postrouting priority srcnat; }; "
             f"add rule ip testbed post oifname {Internet.UPLINK} ip saddr 192.0.2.0/24 masquerade"])
        with internet.capture() as cap:
            assert guest.ping(Internet.OUTSIDE)
            assert cap.echo_sources(Internet.OUTSIDE) == {Internet.HOST}


def test_dnsmasq_pids_finds_a_dnsmasq_by_its_file_in_the_state_dir(ns, tmp_path):
    """The NAT tests count fcnetd's dnsmasq processes this way: it must see one."""
    state = str(tmp_path / "state")
    os.makedirs(os.path.join(state, "nat"))
    run(["ip", "-n", ns.name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"])
    ns.ip("addr", "add", "192.0.2.1/24", "dev", "probe0")
    ns.ip("link", "set", "probe0", "up")
    proc = dnsmasq(ns.name, str(tmp_path / "dnsmasq.log"), 67, "--interface=probe0", "--port=0",
                   f"--dhcp-leasefile={os.path.join(state, 'nat', 'net-1.leases')}",
                   "--dhcp-range=192.0.2.10,192.0.2.20,1h")
    try:
        assert dnsmasq_pids(state, "net-1") == dnsmasq_pids(state) == {proc.pid}
        assert dnsmasq_pids(state, "net-2") == set()
    finally:
        proc.terminate()
        proc.wait(10)
    assert dnsmasq_pids(state) == set()
