"""polkit and the audit trail on the real system bus and journal: the
README's one-rule read-only grant for a monitoring user (real polkitd), and
each change as a journal entry with the caller's fields."""

import json
import os
import re

import pytest

from .guest import ROOT

pytestmark = pytest.mark.systemd
MANAGER = "org.fcnetd.Network1 /org/fcnetd/Network1 org.fcnetd.Network1.Manager"
AUDIT = "MESSAGE_ID=0a87089ec9a4430696ccc959c799f46a _UID=0"


def _readme_monitoring_rule() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"one rule in\n`(/etc/polkit-1/rules\.d/[^`]+)`:\n\n```js\n(.*?)```", text, re.S)
    assert m, "the README's monitoring rule (```js after 'one rule in') is gone"
    return m.group(1), m.group(2)


def test_the_readmes_rule_lets_a_monitoring_user_read_and_nothing_else(configured):
    g = configured
    path, rule = _readme_monitoring_rule()
    user = re.search(r'subject\.user == "([^"]+)"', rule).group(1)
    g.ok(f"id {user} || useradd --system {user}")
    refused = g.run(f"runuser -u {user} -- busctl --system call {MANAGER} ListNetworks a{{sv}} 0")
    assert not refused.ok, f"{user} read before any rule granted it:\n{refused}"
    g.ok(["sh", "-c", f"cat > {path}"], input=rule)
    try:
        # polkitd notices a new rules file by itself
        g.wait_for(f"runuser -u {user} -- busctl --system call {MANAGER} ListNetworks a{{sv}} 0", 30,
                   f"{user} allowed to read by the README's rule")
        r = g.run(f"runuser -u {user} -- busctl --system call {MANAGER} CreateNetwork ssqa{{sv}} by-monitor fcbr1 9 0")
        assert not r.ok and re.search(r"denied|not authorized|rejected", r.stderr, re.I), str(r)
    finally:
        g.ok(f"rm -f {path}")


def test_a_change_is_a_journal_entry_with_the_callers_fields(configured):
    g = configured
    g.ok("runuser -u launcher -- fcnetctl create fcbr1 --vlan 11 --name audited")
    uid = g.ok("id -u launcher").strip()
    out = g.wait_for(f"journalctl {AUDIT} FCNETD_ACTION=network-created FCNETD_NETWORK=audited -o json | grep .",
                     30, "the audit entry of network audited").stdout
    entry = json.loads(out.splitlines()[-1])
    assert entry["FCNETD_CALLER_UID"] == uid and entry["FCNETD_VLAN"] == "11", entry
    assert entry["_SYSTEMD_UNIT"] == "fcnetd.service", entry
    assert "audited" in g.ok("fcnetctl log -n 5")
