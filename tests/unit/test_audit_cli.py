"""fcnetctl log: what it asks journalctl (a stand-in on PATH that records
its arguments and prints what journalctl -o json prints) and how it shows
the answer; a clear error without journalctl or without entries."""

import json
import stat
import time

import pytest

from fcnetd import cli
from fcnetd.audit import MESSAGE_ID

ENTRIES = [
    {"__REALTIME_TIMESTAMP": "1700000000000000", "MESSAGE_ID": MESSAGE_ID, "FCNETD_ACTION": "vm-attached",
     "FCNETD_NETWORK": "fcbr0", "FCNETD_VM": "vm-1", "FCNETD_NIC": "eth0", "FCNETD_CALLER_UID": "0",
     "FCNETD_CALLER_PID": "812", "FCNETD_CALLER_UNIT": "fcnetd-webui.service", "FCNETD_ACTOR": "alice"},
    {"__REALTIME_TIMESTAMP": "1700000060000000", "MESSAGE_ID": MESSAGE_ID, "FCNETD_ACTION": "drift-repaired",
     "FCNETD_NETWORK": "fcbr0", "FCNETD_VM": "vm-1", "FCNETD_NIC": "eth0",
     # journalctl writes a value that is not UTF-8 as its bytes
     "FCNETD_TAP": list(b"vmtap\xff01"), "FCNETD_REPAIRED": "master,up"},
]


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def journalctl(tmp_path, monkeypatch):
    """Installs a journalctl printing `lines`; returns where its argv goes."""
    def install(lines: list[str], status: int = 0, stderr: str = ""):
        argv = tmp_path / "argv.json"
        script = tmp_path / "bin" / "journalctl"
        script.parent.mkdir(exist_ok=True)
        script.write_text("#!/usr/bin/python3\nimport json, sys\n"
                          f"json.dump(sys.argv[1:], open({str(argv)!r}, 'w'))\n"
                          f"sys.stdout.write({''.join(ln + chr(10) for ln in lines)!r})\n"
                          f"sys.stderr.write({stderr!r})\nsys.exit({status})\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", str(script.parent))
        return argv
    return install


def test_log_asks_for_the_audit_entries_and_shows_a_table(journalctl, capsys, utc):
    argv = journalctl([json.dumps(e) for e in ENTRIES])
    assert cli.main(["log", "-n", "5"]) == 0
    assert json.loads(argv.read_text()) == ["--no-pager", "-o", "json", f"MESSAGE_ID={MESSAGE_ID}", "_UID=0", "-n", "5"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "ACTION", "NETWORK", "VM", "TAP", "BY", "ACTOR"]
    assert lines[1].split() == ["2023-11-14", "22:13:20", "vm-attached", "fcbr0", "vm-1", "eth0", "-", "uid", "0",
                                "pid", "812", "(fcnetd-webui.service)", "alice"]
    assert lines[2].split() == ["2023-11-14", "22:14:20", "drift-repaired", "fcbr0", "vm-1", "eth0",
                                "vmtap\ufffd01", "fcnetd", "-"]
    assert lines[-1] == "2 changes listed."


def test_log_json_gives_every_field(journalctl, capsys, utc):
    journalctl([json.dumps(ENTRIES[0]), "-- a line journalctl may add --"])
    assert cli.main(["log", "--json"]) == 0
    [change] = json.loads(capsys.readouterr().out)
    assert change == {"time": "2023-11-14T22:13:20+0000", "action": "vm-attached", "network": "fcbr0", "vm": "vm-1",
                      "nic": "eth0", "caller_uid": "0", "caller_pid": "812", "caller_unit": "fcnetd-webui.service",
                      "actor": "alice"}


def test_log_says_when_the_journal_has_no_changes(journalctl, capsys):
    journalctl([], stderr="No journal files were found.\n")
    assert cli.main(["log"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fcnetctl: the journal holds no fcnetd changes (MESSAGE_ID={MESSAGE_ID}) "
                          "(No journal files were found.)")


def test_log_passes_on_a_journalctl_failure(journalctl, capsys):
    journalctl([], status=1, stderr="Failed to open journal: Permission denied\n")
    assert cli.main(["log"]) == 1
    assert "failed: Failed to open journal: Permission denied" in capsys.readouterr().err


def test_log_without_journalctl_says_where_the_trail_is(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["log"]) == 1
    assert capsys.readouterr().err.startswith("fcnetctl: journalctl is not installed; fcnetd's audit trail is in "
                                              "the systemd journal")


@pytest.mark.parametrize("bad", ["0", "-3", "lots"])
def test_log_count_must_be_a_positive_number(bad, capsys):
    with pytest.raises(SystemExit):
        cli.main(["log", "-n", bad])
    assert "argument -n" in capsys.readouterr().err
