"""The remote-host config and the ssh command line: strict host keys, no
prompt, no forwarding, and no destination that ssh could read as an option."""

import pytest

from fcnetd.config import ConfigError
from fcnetd.sshbus import SshTarget, check_destination
from webui import config
from webui.hosts import BACKOFF_CAP, Backoff


def load(tmp_path, text: str):
    path = tmp_path / "webui.toml"
    path.write_text(text)
    return config.load(str(path))


def test_a_remote_host_is_read_with_its_options(tmp_path):
    cfg = load(tmp_path, '[hosts.node1]\nbus = "system"\n[hosts.node2]\nssh = "fcnet@node2"\nport = 2222\n'
                         'identity = "/etc/fcnetd/id"\nknown_hosts = "/etc/fcnetd/known_hosts"\n')
    assert cfg.hosts == {"node1": "system",
                         "node2": SshTarget("fcnet@node2", 2222, "/etc/fcnetd/id", "/etc/fcnetd/known_hosts")}


@pytest.mark.parametrize("table, rule", [
    ('ssh = "-oProxyCommand=sh"', "ssh: '-oProxyCommand=sh' must be [USER@]HOST"),
    ('ssh = "fcnet@node2"\nport = 70000', "port must be a number from 1 to 65535"),
    ('ssh = "fcnet@node2"\nidentity = "id_ed25519"', "identity must be an absolute file path"),
    ('ssh = "fcnet@node2"\nbus = "system"', "give bus (a local bus) or ssh"),
    ('bus = "system"\nport = 22', "port, identity and known_hosts go with ssh"),
    ('ssh = "fcnet@node2"\nuser = "x"', "unknown key(s) ['user']"),
])
def test_a_bad_remote_host_is_refused_naming_the_field_and_the_rule(tmp_path, table, rule):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, f"[hosts.node2]\n{table}\n")
    assert "[hosts.node2]" in str(e.value) and rule in str(e.value)


def test_ssh_runs_strictly_and_only_the_bridge():
    cmd = SshTarget("fcnet@node2", 2222, "/k", "/kh").command()
    joined = " ".join(cmd)
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/kh",
                   "GlobalKnownHostsFile=/dev/null", "ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes",
                   "IdentitiesOnly=yes"):
        assert option in joined
    assert cmd[:2] == ["ssh", "-xT"] and "-a" in cmd and cmd[-3:] == ["--", "fcnet@node2", "systemd-stdio-bridge"]
    assert "UserKnownHostsFile" not in " ".join(SshTarget("node2").command())


@pytest.mark.parametrize("text", ["node2", "fcnet@node2", "fcnet@198.51.100.2", "fcnet@2001:db8::2"])
def test_destinations(text):
    assert check_destination(text) == text


@pytest.mark.parametrize("text", ["", "-oProxyCommand=x", "a b", "fcnet@", "@node2", "x" * 300, "no%de"])
def test_bad_destinations(text):
    with pytest.raises(ValueError):
        check_destination(text)


def test_backoff_doubles_to_its_cap_with_jitter_and_starts_over():
    b = Backoff()
    waits = [b.next() for _ in range(10)]
    assert 0.25 <= waits[0] <= 0.5 and all(w <= BACKOFF_CAP for w in waits) and waits[-1] >= BACKOFF_CAP / 2
    b.reset()
    assert b.next() <= 0.5
