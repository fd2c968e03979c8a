"""The README's install section, run verbatim in the guest (the `installed`
fixture fails the tier if any step fails), and what it leaves behind."""

import pytest

pytestmark = pytest.mark.systemd


def test_readme_install_leaves_fcnetd_enabled_and_running(installed):
    assert installed.run("systemctl is-enabled fcnetd").stdout.strip() == "enabled"
    assert installed.run("systemctl is-active fcnetd").stdout.strip() == "active"
    # what an admin types after the install: fcnetctl on PATH, answered over the system bus
    out = installed.ok("fcnetctl list")
    assert "networks listed." in out, out


def test_sysusers_made_group_fcnet_with_the_launcher_in_it(installed):
    line = installed.ok("getent group fcnet").strip()
    name, _, gid, members = line.split(":")
    assert name == "fcnet" and int(gid) < 1000, f"fcnet must be a system group: {line}"
    assert "launcher" in members.split(","), line


def test_tmpfiles_made_the_state_dir_and_the_web_ui_users_file(installed):
    assert installed.ok("stat -c '%a %U %G' /var/lib/fcnetd").split() == ["701", "root", "root"]
    # after the README's first user was added: still root's, readable by fcnet only
    assert installed.ok("stat -c '%a %U %G' /etc/fcnetd/webui-users.json").split() == ["640", "root", "fcnet"]


def test_the_units_run_from_the_venv(installed):
    out = installed.ok("systemctl show -p ExecStart --value fcnetd fcnetd-webui")
    assert "/opt/fcnetd/bin/fcnetd " in out and "/opt/fcnetd/bin/fcnetd-webui " in out, out
