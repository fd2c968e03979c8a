"""fcnetd-webui.service (its own system user, in group fcnet) with the
README's first user: serves the Networks page, reaches fcnetd over the
system bus, and explains itself when nobody can sign in."""

import json

import pytest

from .conftest import FIRST_USER_PASSWORD, INSTALL_MOUNT

pytestmark = pytest.mark.systemd
CLIENT = f"/usr/bin/python3 {INSTALL_MOUNT}/fcnetd/tests/systemd/webclient.py http://127.0.0.1:8080"


def sign_in(g, user, password):
    return json.loads(g.ok(f"{CLIENT} {user}", input=password + "\n"))


@pytest.fixture(scope="module")
def webui(configured):
    g = configured
    g.wait_for("curl -fsS -o /dev/null http://127.0.0.1:8080/login", 60, "the web UI answering on 8080")
    return g


def test_first_user_signs_in_and_sees_fcnetds_networks(webui):
    g = webui
    g.ok("fcnetctl create fcbr1 --vlan 7 --name seen-by-webui")
    got = sign_in(g, "admin", FIRST_USER_PASSWORD)
    assert got["signed_in"] and got["landed_on"] == "/networks", got
    assert "<h1>Networks" in got["page"] and "Create Network" in got["page"], got["page"][:2000]
    # the data comes from fcnetd over the system bus (the UI's mirror of its signals)
    names = {n["name"] for n in got["api"]["items"]}
    assert "seen-by-webui" in names, got["api"]
    assert all(h["error"] in (None, "") for h in got["api"]["hosts"]), got["api"]["hosts"]


def test_runs_as_its_own_system_user_in_group_fcnet(webui):
    g = webui
    pid = g.ok("systemctl show -p MainPID --value fcnetd-webui").strip()
    status = g.ok(f"cat /proc/{pid}/status")
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    groups = next(line.split()[1:] for line in status.splitlines() if line.startswith("Groups:"))
    assert uid == g.ok("id -u fcnetd-webui").strip() and int(uid) < 1000, f"not the system user fcnetd-webui: {uid}"
    fcnet = g.ok("getent group fcnet").split(":")[2]
    assert fcnet in groups, f"fcnet ({fcnet}) not among {groups}"
    props = g.ok("systemctl show -p NRestarts,ActiveState fcnetd-webui")
    assert "NRestarts=0" in props and "ActiveState=active" in props, props
    journal = g.ok("journalctl -b -o cat -u fcnetd-webui")
    assert "cannot start" not in journal, journal[-3000:]


def test_a_user_added_while_it_runs_signs_in_without_a_restart(webui):
    g = webui
    pid = g.ok("systemctl show -p MainPID --value fcnetd-webui").strip()
    g.ok("fcnetd-webui user add watcher --role viewer --password-stdin", input="viewer-password-1\n")
    assert g.ok("stat -c '%a %U %G' /etc/fcnetd/webui-users.json").split() == ["640", "root", "fcnet"]
    assert sign_in(g, "watcher", "viewer-password-1")["signed_in"]
    assert g.ok("systemctl show -p MainPID --value fcnetd-webui").strip() == pid


def test_without_users_it_keeps_running_and_says_how_to_add_one(webui):
    g = webui
    g.ok("cp -p /etc/fcnetd/webui-users.json /root/users.saved && : >/etc/fcnetd/webui-users.json")
    try:
        g.ok("systemctl restart fcnetd-webui")
        g.wait_for("curl -fsS -o /dev/null http://127.0.0.1:8080/login", 60, "the web UI answering without users")
        assert not sign_in(g, "admin", FIRST_USER_PASSWORD)["signed_in"]
        props = g.ok("systemctl show -p ActiveState,NRestarts fcnetd-webui")
        assert "ActiveState=active" in props and "NRestarts=0" in props, props
        journal = g.ok("journalctl -b -o cat -u fcnetd-webui -n 50")
        assert "fcnetd-webui user add NAME --role admin" in journal, journal
    finally:
        g.ok("cp -p /root/users.saved /etc/fcnetd/webui-users.json")
    assert sign_in(g, "admin", FIRST_USER_PASSWORD)["signed_in"], "restored users must count without a restart"
