"""dnsmasq.py's pure parts: the command line, the hosts file, leases, the
DHCPRELEASE packet, the backoff, and the file modes dnsmasq's user needs."""

import os
import pwd
import shutil
import stat
import tempfile
from ipaddress import IPv4Address, IPv4Network

import pytest

from fcnetd import dnsmasq, dnsmasq_unit
from fcnetd.errors import Internal

LEASES = (
    "1795916260 02:00:00:00:00:01 10.213.0.5 * 01:02:00:00:00:00:01\n"
    "1795916261 02:00:00:00:00:02 10.213.0.6 vm2 *\n"
    "duid 00:01:00:01:2c:00:00:00:02:00:00:00:00:01\n"
)


def test_the_command_line_binds_one_port_and_serves_static_leases_only():
    argv = dnsmasq.command(dnsmasq.options("/s/nat", "net-1", "fcbr0", IPv4Network("10.213.0.0/24"),
                                           IPv4Address("10.213.0.1"), "dnsmasq", "nogroup"))
    assert argv[0] == "/usr/sbin/dnsmasq"
    for arg in ("--keep-in-foreground", "--conf-file=/dev/null", "--bind-interfaces", "--interface=fcbr0",
                "--except-interface=lo", "--listen-address=10.213.0.1",
                "--dhcp-range=10.213.0.0,static,255.255.255.0,12h", "--dhcp-hostsfile=/s/nat/net-1.hosts",
                "--dhcp-leasefile=/s/nat/net-1.leases", "--pid-file=/s/nat/net-1.pid", "--dhcp-authoritative",
                "--no-hosts", "--user=dnsmasq", "--group=nogroup", "--dhcp-lease-max=256"):
        assert arg in argv
    assert not [a for a in argv if a.startswith(("--no-resolv", "--port"))], "DNS must forward to the host's resolvers"


def test_a_units_conf_file_holds_the_same_settings_as_the_childs_command_line():
    settings = dnsmasq.options("/s/nat", "net-1", "fcbr0", IPv4Network("10.213.0.0/24"), IPv4Address("10.213.0.1"),
                               "dnsmasq", "nogroup")
    conf = dnsmasq_unit.conf_text(settings).splitlines()
    argv = dnsmasq.command(settings)
    assert [f"--{line}" for line in conf] == [a for a in argv if a[2:] in conf]
    assert "dhcp-leasefile=/s/nat/net-1.leases" in conf and "user=dnsmasq" in conf
    # What only a child needs: a unit's dnsmasq forks (Type=forking) and logs to the journal.
    assert not [line for line in conf if line.startswith(("keep-in-foreground", "log-facility", "conf-file"))]
    assert dnsmasq_unit.unit_name("9b2f") == "fcnetd-dnsmasq@9b2f.service"


def test_the_hosts_file_is_one_sorted_line_per_vm_in_lower_case():
    assert dnsmasq.hosts_text({"02:00:00:00:00:0B": "10.213.0.6", "02:00:00:00:00:0a": "10.213.0.5"}) == (
        "02:00:00:00:00:0a,10.213.0.5\n02:00:00:00:00:0b,10.213.0.6\n")
    assert dnsmasq.hosts_text({}) == ""


def test_leases_are_read_without_the_duid_line():
    assert dnsmasq.parse_leases(LEASES) == [("02:00:00:00:00:01", "10.213.0.5"), ("02:00:00:00:00:02", "10.213.0.6")]


def test_a_lease_no_static_lease_backs_is_stale():
    hosts = {"02:00:00:00:00:01": "10.213.0.5", "02:00:00:00:00:03": "10.213.0.6"}
    assert dnsmasq.stale_leases(LEASES, hosts) == [("02:00:00:00:00:02", "10.213.0.6")]


def test_pruning_keeps_the_backed_leases_and_the_duid():
    pruned = dnsmasq.prune_leases(LEASES, {"02:00:00:00:00:01": "10.213.0.5"})
    assert pruned == LEASES.splitlines(keepends=True)[0] + LEASES.splitlines(keepends=True)[2]


def test_a_mac_reserved_another_address_loses_its_old_lease():
    assert dnsmasq.stale_leases(LEASES, {"02:00:00:00:00:01": "10.213.0.9", "02:00:00:00:00:02": "10.213.0.6"}) == [
        ("02:00:00:00:00:01", "10.213.0.5")]


def test_the_release_packet_is_a_dhcprelease_of_that_address_by_that_mac():
    packet = dnsmasq.release_packet("02:00:00:00:00:0A", "10.213.0.5", "10.213.0.1")
    assert len(packet) == 548
    assert packet[:4] == bytes([1, 1, 6, 0])  # BOOTREQUEST, Ethernet, 6-byte address, no hops
    assert packet[12:16] == IPv4Address("10.213.0.5").packed  # ciaddr
    assert packet[16:28] == bytes(12)
    assert packet[28:44] == bytes.fromhex("02000000000a") + bytes(10)  # chaddr
    options = packet[236:]
    assert options[:4] == bytes([99, 130, 83, 99])  # magic cookie
    assert options[4:7] == bytes([53, 1, 7])  # DHCP message type: DHCPRELEASE
    assert options[7:13] == bytes([54, 4]) + IPv4Address("10.213.0.1").packed  # server identifier
    assert options[13] == 255


def test_a_dying_dnsmasq_restarts_at_once_then_ever_slower_up_to_30s():
    assert [dnsmasq.backoff(n) for n in range(9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_hosts_file_is_readable_by_dnsmasq_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        dnsmasq.write_file(str(tmp_path / "n.hosts"), "02:00:00:00:00:01,10.213.0.5\n", 0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "n.hosts").st_mode) == 0o644
    assert os.listdir(tmp_path) == ["n.hosts"]


def _someone_else() -> pwd.struct_passwd:
    return pwd.struct_passwd(("someone", "x", 64000, 64000, "", "/", "/bin/false"))


def test_the_state_dir_becomes_searchable_and_the_nat_dir_is_not_listable():
    # Under /tmp itself: pytest's tmp_path lies in a directory only root may search.
    top = tempfile.mkdtemp(prefix="fcnetd-unit-")
    try:
        state = os.path.join(top, "state")
        os.mkdir(state, 0o700)
        os.chmod(top, 0o755)
        dnsmasq.prepare_directory(state, os.path.join(state, "nat"), _someone_else())
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o701
        assert stat.S_IMODE(os.stat(os.path.join(state, "nat")).st_mode) == 0o711
    finally:
        shutil.rmtree(top)


def test_a_parent_dnsmasq_cannot_search_is_named(tmp_path):
    locked = tmp_path / "locked"
    state = locked / "state"
    state.mkdir(parents=True)
    os.chmod(locked, 0o700)
    with pytest.raises(Internal, match=f"dnsmasq runs as user someone .* but {locked} \\(mode 0700\\) "
                                       "is not searchable by it"):
        dnsmasq.prepare_directory(str(state), str(state / "nat"), _someone_else())
