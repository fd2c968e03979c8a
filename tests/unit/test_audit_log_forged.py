"""Audit trail (issue 11, found in review): fcnetctl log must show fcnetd's own
entries only. Every field without a leading underscore, MESSAGE_ID and
FCNETD_* included, is written by the logging process itself, so any local
user can put an entry with fcnetd's MESSAGE_ID into the journal
(`logger --journald`, systemd-cat, sd_journal_send); root's journalctl (and
group adm/systemd-journal) reads users' journal files too. Only journald's
trusted fields (_UID, _PID, _SYSTEMD_UNIT, _COMM, ...) tell who wrote it."""

import json
import stat

from fcnetd import cli
from fcnetd.audit import MESSAGE_ID

GENUINE = {"__REALTIME_TIMESTAMP": "1700000000000000", "MESSAGE_ID": MESSAGE_ID, "SYSLOG_IDENTIFIER": "fcnetd",
           "_UID": "0", "_GID": "0", "_COMM": "fcnetd", "_SYSTEMD_UNIT": "fcnetd.service", "_PID": "411",
           "FCNETD_ACTION": "network-created", "FCNETD_NETWORK": "fcbr0", "FCNETD_CALLER_UID": "0",
           "FCNETD_ACTOR": "alice"}
# what `logger --journald` run by uid 1000 writes: every untrusted field copied
FORGED = {"__REALTIME_TIMESTAMP": "1700000060000000", "MESSAGE_ID": MESSAGE_ID, "SYSLOG_IDENTIFIER": "fcnetd",
          "_UID": "1000", "_GID": "1000", "_COMM": "logger", "_SYSTEMD_UNIT": "user@1000.service", "_PID": "9001",
          "FCNETD_ACTION": "network-deleted", "FCNETD_NETWORK": "prod-db", "FCNETD_CALLER_UID": "0",
          "FCNETD_ACTOR": "bob"}


def install_journalctl(tmp_path, monkeypatch, entries):
    """A journalctl that, like the real one, prints the entries matching the
    FIELD=value arguments (distinct fields ANDed, one field's values ORed),
    the last -n of them."""
    script = tmp_path / "bin" / "journalctl"
    script.parent.mkdir()
    script.write_text(f"""#!/usr/bin/python3
import json, re, sys
entries = {json.dumps(entries)!r}
args = sys.argv[1:]
matches = {{}}
for a in args:
    if re.match(r"^[A-Z0-9_]+=", a):
        k, _, v = a.partition("=")
        matches.setdefault(k, set()).add(v)
n = int(args[args.index("-n") + 1]) if "-n" in args else 10
picked = [e for e in json.loads(entries) if all(e.get(k) in vs for k, vs in matches.items())]
for e in picked[-n:]:
    print(json.dumps(e))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(script.parent))


def test_fcnetctl_log_does_not_show_an_entry_a_local_user_forged_with_fcnetds_message_id(tmp_path, monkeypatch,
                                                                                         capsys):
    install_journalctl(tmp_path, monkeypatch, [GENUINE, FORGED])
    assert cli.main(["log", "--json"]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert [c.get("network") for c in changes] == ["fcbr0"], \
        f"fcnetctl log lists entries not written by fcnetd: {[c for c in changes if c.get('network') != 'fcbr0']}"
