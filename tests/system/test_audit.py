"""The audit trail end to end: the real daemon, pointed at a datagram socket
the test binds in journald's place (FCNETD_JOURNAL_SOCKET), writes one entry
per change with the caller's credentials from the bus, none for a refused
call; without a journal, the same facts are log lines."""

import grp
import os
import signal
import socket
import subprocess

import pytest

from fcnetd import caller
from fcnetd.audit import MESSAGE_ID, SOCKET_ENV
from tests.unit.test_audit import decode

from .harness import Daemon, v, wait_for

MGR = ["org.fcnetd.Network1", "/org/fcnetd/Network1", "org.fcnetd.Network1.Manager"]


class Journal:
    """The entries the daemon sends, in order."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setblocking(False)
        self.entries: list[dict] = []

    def read(self) -> list[dict]:
        while True:
            try:
                self.entries.append(decode(self.sock.recv(65536)))
            except BlockingIOError:
                return self.entries

    def wait(self, count: int, what: str) -> list[dict]:
        """The first `count` entries, once they are there."""
        return wait_for(lambda: len(self.read()) >= count and self.entries[:count], what=what)


@pytest.fixture
def journal(tmp_path, monkeypatch):
    j = Journal(str(tmp_path / "journal.socket"))
    monkeypatch.setenv(SOCKET_ENV, j.path)
    yield j
    j.sock.close()


@pytest.fixture
def audited(ns, bus, tmp_path, config, journal):
    d = Daemon(ns, bus, str(tmp_path / "state"), config).start()
    yield d
    d.stop()


def fcnetd_fields(entry: dict) -> dict:
    assert (entry["MESSAGE_ID"], entry["PRIORITY"], entry["SYSLOG_IDENTIFIER"]) == (MESSAGE_ID, "5", "fcnetd")
    assert f": action={entry['FCNETD_ACTION']} " in entry["MESSAGE"]
    return {k[len("FCNETD_"):].lower(): val for k, val in entry.items() if k.startswith("FCNETD_")}


def test_each_change_is_one_entry_with_its_caller_and_a_refused_call_none(audited, journal, client, bus):
    ns = audited.ns
    me = {"caller_uid": str(os.getuid()), "caller_pid": str(os.getpid())}
    if (unit := caller.unit_of_pid(os.getpid())) is not None:
        me["caller_unit"] = unit
    journal.read()
    assert journal.entries == [], "a fresh daemon changed something at start"

    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {"actor": v("s", "ops team")})
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {"vm_name": v("s", "web"), "actor": v("s", "alice")})
    # the TAP from another process, of a user in group fcnet: its own uid and pid are recorded
    launcher = subprocess.Popen(
        ["setpriv", "--reuid=1000", "--regid=1000", f"--groups={grp.getgrnam('fcnet').gr_gid}",
         "busctl", f"--address={bus.address}", "call", *MGR, "CreateTap", "ssa{sv}", "vm-1", "eth0",
         "1", "owner_uid", "u", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, err
    tap = out.split('"')[1]

    # refused and failing calls: nothing is recorded
    assert client.error("DeleteNetwork", "s", "fcbr0").type.endswith("NetworkInUse")
    bad = client.error("AttachVm", "ssqa{sv}", "vm-2", "fcbr0", 0, {"actor": v("s", "x" * 65)})
    assert bad.type == "org.freedesktop.DBus.Error.InvalidArgs" and bad.text.startswith("actor: ")
    assert "1-64 printable characters" in bad.text
    assert client.error("CreateTap", "ssa{sv}", "vm-9", "eth0", {}).type.endswith("NoSuchVm")
    assert client.call("CreateTap", "ssa{sv}", "vm-1", "eth0", {}) == [tap]  # a retried VM start changes nothing

    # drift: the TAP taken off its bridge behind fcnetd's back, repaired by the reload's reconcile
    ns.ip("link", "set", tap, "nomaster")
    audited.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: (ns.link(tap) or {}).get("master") == "fcbr0", what="the TAP back on its bridge")
    journal.wait(5, "the reload's entries")

    client.call("DeleteTap", "ss", "vm-1", "eth0")
    client.call("DeleteTap", "ss", "vm-1", "eth0")  # idempotent: no second entry
    client.call("DetachVm", "ss", "vm-1", "eth0")
    client.call("DeleteNetwork", "s", "fcbr0")
    audited.proc.send_signal(signal.SIGHUP)  # a reload with nothing to repair: one entry, and the last
    entries = [fcnetd_fields(e) for e in journal.wait(9, "every entry")]

    assert client.call("EnsureNetwork", "sq", "fcbr1", 0)[1] is True  # a sentinel: nothing came between
    assert fcnetd_fields(journal.wait(10, "the sentinel")[9])["action"] == "network-created"
    net = {"network": "fcbr0", "bridge": "fcbr0", "vlan": "0"}
    net_with_id = {**net, "network_id": entries[0]["network_id"]}
    vm = {"vm": "vm-1", "nic": "eth0"}
    uid1000 = {"caller_uid": "1000", "caller_pid": str(launcher.pid)}
    unit1000 = caller.unit_of_pid(launcher.pid)  # gone by now: nothing, as recorded if it had none
    without_sender = [{k: val for k, val in e.items() if k != "caller_sender"} for e in entries]
    assert without_sender == [
        {"action": "network-created", **net_with_id, "origin": "manual", "mode": "bridge", **me, "actor": "ops team"},
        {"action": "vm-attached", **net_with_id, **vm, "vm_name": "web", **me, "actor": "alice"},
        {"action": "tap-created", **net_with_id, **vm, "tap": tap, "owner_uid": "1000", **uid1000,
         **({"caller_unit": unit1000} if unit1000 else {})},
        {"action": "config-reloaded", "trigger": "SIGHUP", "config": audited.config, "bridges": "fcbr0,fcbr1"},
        {"action": "drift-repaired", **net_with_id, **vm, "tap": tap, "repaired": "master"},
        {"action": "tap-deleted", **net_with_id, **vm, "tap": tap, **me},
        {"action": "vm-detached", **net_with_id, **vm, **me},
        {"action": "network-deleted", **net_with_id, **me},
        {"action": "config-reloaded", "trigger": "SIGHUP", "config": audited.config, "bridges": "fcbr0,fcbr1"},
    ]
    senders = [e.get("caller_sender") for e in entries]
    assert all(s and s.startswith(":") for i, s in enumerate(senders) if i not in (3, 4, 8))
    assert senders[2] != senders[1], "the launcher's connection is not the test's"


def test_without_a_journal_the_changes_are_log_lines(ns, bus, tmp_path, config, client, monkeypatch):
    monkeypatch.setenv(SOCKET_ENV, str(tmp_path / "no-journal-here"))
    d = Daemon(ns, bus, str(tmp_path / "state"), config).start()
    try:
        assert "audit trail: log lines (no journal socket at" in d.output()
        client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {"actor": v("s", "Eve Admin")})
        line = wait_for(lambda: next((ln for ln in d.output().splitlines() if "action=network-created" in ln), None),
                        what="the log line")
        assert line.startswith("INFO fcnetd.audit: network created: action=network-created network=fcbr0 ")
        assert f"caller_uid={os.getuid()} caller_pid={os.getpid()} " in line and line.endswith('actor="Eve Admin"')
    finally:
        d.stop()
