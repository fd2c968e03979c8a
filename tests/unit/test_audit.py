"""The audit trail's writing side: the journal's native protocol read back
from a real AF_UNIX datagram socket the test binds, the log-line form, a
journal that refuses entries, and the caller's facts (caller.py)."""

import logging
import os
import socket
import struct

import pytest

from fcnetd import audit, caller
from fcnetd.audit import MESSAGE_ID, Audit, encode
from fcnetd.caller import Caller
from fcnetd.errors import InvalidArgs
from fcnetd.model import Network


def decode(datagram: bytes) -> dict[str, str]:
    """journald's reading of a native datagram (systemd's Native Journal
    Protocol), written independently of audit.encode."""
    fields, i = {}, 0
    while i < len(datagram):
        end = datagram.index(b"\n", i)
        head = datagram[i:end]
        if b"=" in head:
            key, value = head.split(b"=", 1)
            i = end + 1
        else:
            key = head
            (size,) = struct.unpack_from("<Q", datagram, end + 1)
            start = end + 1 + 8
            value = datagram[start:start + size]
            assert datagram[start + size:start + size + 1] == b"\n", "a binary value must end in a newline"
            i = start + size + 1
        assert key.decode() not in fields
        fields[key.decode()] = value.decode()
    return fields


@pytest.fixture
def journal(tmp_path):
    """A datagram socket standing in for journald's /run/systemd/journal/socket."""
    path = str(tmp_path / "journal.socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


NET = Network("2f9a5e3c-1111-4222-8333-444455556666", "fcbr0-vlan-10", "fcbr0", 10, "node1",
              "2024-01-01T00:00:00Z", "manual")


def test_the_binary_safe_form_is_used_exactly_for_values_with_a_newline():
    assert encode([("A", "x y=z"), ("B", "1\n2")]) == b"A=x y=z\nB\n" + struct.pack("<Q", 3) + b"1\n2\n"
    assert encode([("C", "")]) == b"C=\n"


def test_an_entry_reaches_the_socket_with_its_structured_fields(journal):
    path, sock = journal
    a = Audit(path)
    token = caller.current.set(Caller(":1.42", 1000, 4321, "launcher.service", "alice"))
    try:
        a.record("tap-created", network=NET, vm="vm-7", nic="eth0", tap="vmtap123456", owner_uid=1000)
    finally:
        caller.current.reset(token)
    got = decode(sock.recv(65536))
    assert got["MESSAGE_ID"] == MESSAGE_ID and got["PRIORITY"] == "5" and got["SYSLOG_IDENTIFIER"] == "fcnetd"
    assert {k: v for k, v in got.items() if k.startswith("FCNETD_")} == {
        "FCNETD_ACTION": "tap-created", "FCNETD_NETWORK": "fcbr0-vlan-10", "FCNETD_NETWORK_ID": NET.id,
        "FCNETD_BRIDGE": "fcbr0", "FCNETD_VLAN": "10", "FCNETD_VM": "vm-7", "FCNETD_NIC": "eth0",
        "FCNETD_TAP": "vmtap123456", "FCNETD_OWNER_UID": "1000", "FCNETD_CALLER_UID": "1000",
        "FCNETD_CALLER_PID": "4321", "FCNETD_CALLER_UNIT": "launcher.service", "FCNETD_CALLER_SENDER": ":1.42",
        "FCNETD_ACTOR": "alice"}
    assert got["MESSAGE"].startswith("TAP created: action=tap-created network=fcbr0-vlan-10 ")
    assert "actor=alice" in got["MESSAGE"]
    assert a.send_errors == 0


def test_a_value_with_a_newline_arrives_whole(journal):
    path, sock = journal
    Audit(path).record("config-reloaded", by_daemon=True, config="/etc/fcnetd/odd\nname.toml")
    got = decode(sock.recv(65536))
    assert got["FCNETD_CONFIG"] == "/etc/fcnetd/odd\nname.toml"
    assert "\n" not in got["MESSAGE"] and 'config="/etc/fcnetd/odd\\nname.toml"' in got["MESSAGE"]


def test_the_daemons_own_change_names_no_caller(journal):
    path, sock = journal
    token = caller.current.set(Caller(":1.9", 0, 99, None))  # a call in flight must not be blamed
    try:
        Audit(path).record("drift-repaired", by_daemon=True, bridge="fcbr0", repaired="vlan-filtering")
    finally:
        caller.current.reset(token)
    got = decode(sock.recv(65536))
    assert not [k for k in got if k.startswith("FCNETD_CALLER_") or k == "FCNETD_ACTOR"]
    assert (got["FCNETD_ACTION"], got["FCNETD_BRIDGE"], got["FCNETD_REPAIRED"]) == \
        ("drift-repaired", "fcbr0", "vlan-filtering")


def test_without_the_socket_the_same_facts_are_a_log_line(tmp_path, caplog):
    a = Audit(str(tmp_path / "no-journal-here"))
    token = caller.current.set(Caller(":1.5", 0, 77, None, "Eve Admin"))
    try:
        with caplog.at_level(logging.INFO, logger="fcnetd.audit"):
            a.record("network-deleted", network=NET)
    finally:
        caller.current.reset(token)
    [entry] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("network deleted")]
    assert entry == (f"network deleted: action=network-deleted network=fcbr0-vlan-10 network_id={NET.id} "
                     'bridge=fcbr0 vlan=10 caller_uid=0 caller_pid=77 caller_sender=:1.5 actor="Eve Admin"')


def test_a_journal_that_refuses_entries_gets_log_lines_counted_and_warned_once(journal, caplog):
    path, sock = journal
    a = Audit(path)
    sock.close()  # the path stays, nobody reads it: ECONNREFUSED, as with journald stopped
    with caplog.at_level(logging.INFO, logger="fcnetd.audit"):
        a.record("vm-detached", by_daemon=True, vm="vm-1", nic="eth0")
        a.record("vm-detached", by_daemon=True, vm="vm-2", nic="eth0")
    messages = [r.getMessage() for r in caplog.records]
    assert a.send_errors == 2
    assert len([m for m in messages if m.startswith("cannot write the audit trail")]) == 1
    assert [m for m in messages if m.startswith("VM detached")] == [
        "VM detached: action=vm-detached vm=vm-1 nic=eth0", "VM detached: action=vm-detached vm=vm-2 nic=eth0"]
    # journald back at the same path: entries go to it again, and that is said
    os.unlink(path)
    again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    again.bind(path)
    again.settimeout(2)
    with caplog.at_level(logging.INFO, logger="fcnetd.audit"):
        a.record("vm-detached", by_daemon=True, vm="vm-3", nic="eth0")
    assert decode(again.recv(65536))["FCNETD_VM"] == "vm-3"
    assert any("takes audit entries again" in r.getMessage() for r in caplog.records)
    again.close()


def test_recording_never_fails_the_change(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="fcnetd.audit"):
        Audit(str(tmp_path / "none")).record("tap-created", network=object())  # not a Network
    assert any("cannot record tap-created" in r.getMessage() for r in caplog.records)


def test_the_socket_path_can_be_set_for_tests(tmp_path, monkeypatch, journal):
    path, sock = journal
    monkeypatch.setenv(audit.SOCKET_ENV, path)
    Audit().record("config-reloaded", by_daemon=True, trigger="SIGHUP")
    assert decode(sock.recv(65536))["FCNETD_TRIGGER"] == "SIGHUP"


@pytest.mark.parametrize("cgroup, unit", [
    ("0::/system.slice/fcnetd-webui.service\n", "fcnetd-webui.service"),
    ("0::/system.slice/system-getty.slice/getty@tty1.service\n", "getty@tty1.service"),
    ("0::/user.slice/user-1000.slice/session-3.scope\n", "session-3.scope"),
    ("0::/user.slice/user-1000.slice/user@1000.service/app.slice/launcher.service\n", "user@1000.service"),
    ("0::/system.slice/launcher.service/worker\n", "launcher.service"),  # a delegated sub-cgroup
    ("0::/system.slice/_cpu.weird.service\n", "cpu.weird.service"),  # systemd's cgroup escaping
    ("0::/init.scope\n", "init.scope"),
    ("0::/\n", None),
    ("0::/system.slice\n", None),
    ("0::/docker/0123abcd\n", None),
    ("12:pids:/\n1:name=systemd:/system.slice/cron.service\n0::/\n", "cron.service"),  # cgroup v1 / hybrid
])
def test_the_unit_is_named_as_systemd_names_it(cgroup, unit):
    assert caller.unit_of_proc_cgroup(cgroup) == unit


def test_credentials_make_a_caller_with_the_unit_of_its_process():
    me = caller.from_credentials(":1.8", {"UnixUserID": os.getuid(), "ProcessID": os.getpid()})
    with open("/proc/self/cgroup") as f:
        expected = caller.unit_of_proc_cgroup(f.read())
    assert me == Caller(":1.8", os.getuid(), os.getpid(), expected)
    assert caller.from_credentials(":1.9", {"UnixUserID": 0}) == Caller(":1.9", 0, None, None)


@pytest.mark.parametrize("bad", ["", "x" * 65, "alice\nFCNETD_ACTOR=root", "tab\there"])
def test_a_bad_actor_is_refused_naming_the_field(bad):
    with pytest.raises(InvalidArgs, match=r"^actor: .* must be 1-64 printable characters") as e:
        caller.check_actor(bad)
    assert e.value.field == "actor" and len(str(e.value)) < 200


def test_an_actor_of_64_printable_characters_is_taken():
    assert caller.check_actor("Zoë " + "x" * 60) == "Zoë " + "x" * 60
