import re

import pytest

from fcnetd.config import ConfigError, load, parse


def test_default_allows_fcbr0_with_create():
    cfg = parse({})
    assert list(cfg.bridges) == ["fcbr0"] and cfg.bridges["fcbr0"].create is True
    assert cfg.metrics.startswith("127.0.0.1:")


def test_missing_default_file_means_embedded_default(monkeypatch, tmp_path):
    monkeypatch.setattr("fcnetd.config.DEFAULT_PATH", str(tmp_path / "none.toml"))
    assert list(load(None).bridges) == ["fcbr0"]


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load(str(tmp_path / "none.toml"))


def test_full_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[daemon]\nhost = "node1"\nstate_dir = "/tmp/x"\nmetrics = "off"\n'
                 '[bridges.fcbr0]\ncreate = true\nuplink = "eth0"\nmtu = 9000\n[bridges.br0]\n')
    cfg = load(str(p))
    assert cfg.host == "node1" and cfg.metrics == "off" and cfg.state_dir == "/tmp/x"
    assert cfg.bridges["fcbr0"].uplink == "eth0" and cfg.bridges["fcbr0"].mtu == 9000
    assert cfg.bridges["br0"].create is False


def test_nat_pool_defaults_and_is_read(tmp_path):
    assert str(parse({}).nat_pool) == "10.213.0.0/16"
    p = tmp_path / "c.toml"
    p.write_text('[nat]\npool = "192.168.64.0/20"\n')
    assert str(load(str(p)).nat_pool) == "192.168.64.0/20"


@pytest.mark.parametrize("text,message", [
    ("[bridges.fcbr0]\ncreate = 1\n", "bridges.fcbr0.create: must be a bool"),
    ("[bridges.fcbr0]\nmtu = 10\n", "out of range"),
    ("[bridges.fcbr0]\ncolour = 1\n", "unknown key"),
    ('[bridges."a/b"]\n', "must not contain"),
    ("[daemon]\nmetrics = \"nope\"\n", "HOST:PORT"),
    ("[natt]\n", "unknown table"),
    ("[nat]\npool = \"10.213.0.0/25\"\n", "nat.pool: 10.213.0.0/25 has prefix /25; it must be an IPv4 network"),
    ("[nat]\npool = \"10.213.0.1/16\"\n", "nat.pool: 10.213.0.1/16 has host bits set; did you mean 10.213.0.0/16?"),
    ("[nat]\npool = \"10.213.0.0/7\"\n", "prefix /8 to /24"),
    ("[nat]\npool = 5\n", "nat.pool: must be a str"),
    ("[nat]\nsize = 24\n", "nat]: unknown key(s) 'size'"),
    ("[bridges.fcbr0\n", "fcnetd.toml"),
])
def test_bad_config_is_explained(tmp_path, text, message):
    p = tmp_path / "fcnetd.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(str(p))


# -- issue 9, item 13: the config refuses what the name rule refuses --

@pytest.mark.parametrize("bridge,why", [
    ("br+lan", "must not contain '+'"), ("br@0", "must not contain '@'"), ("-br", "must start with a letter"),
    ("br<0>", "must not contain '<'"),
])
def test_a_bridge_the_name_rule_refuses_is_refused_naming_table_and_rule(tmp_path, bridge, why):
    """An allowed `br+lan` auto-created a network named `br+lan` that the
    registry loader refused: the daemon would not start again."""
    p = tmp_path / "fcnetd.toml"
    p.write_text(f'[bridges."{bridge}"]\ncreate = true\n')
    with pytest.raises(ConfigError) as e:
        load(str(p))
    message = str(e.value)
    assert f"[bridges.{bridge!r}]" in message and why in message, message
    assert "1-15 characters of A-Z a-z 0-9 . _ -" in message, message


def test_an_uplink_follows_the_same_rule():
    with pytest.raises(ConfigError, match=r"\[bridges\.fcbr0\]: uplink: 'eth\+0' must not contain '\+'"):
        parse({"bridges": {"fcbr0": {"uplink": "eth+0"}}})


def test_an_uplink_may_not_be_a_bridge_or_serve_two():
    with pytest.raises(ConfigError, match=r"\[bridges\.fcbr0\]: uplink: 'fcbr1' is an allowed bridge"):
        parse({"bridges": {"fcbr0": {"uplink": "fcbr1"}, "fcbr1": {}}})
    with pytest.raises(ConfigError, match=r"\[bridges\.fcbr1\]: uplink: 'eth0' is already the uplink of fcbr0"):
        parse({"bridges": {"fcbr0": {"uplink": "eth0"}, "fcbr1": {"uplink": "eth0"}}})


@pytest.mark.parametrize("host", ["", "node 1", "node1\n", "nöde", "<b>"])
def test_the_host_follows_the_host_rule(host):
    with pytest.raises(ConfigError, match="daemon.host: .*host name"):
        parse({"daemon": {"host": host}})


def test_a_default_host_name_outside_the_rule_says_what_to_set(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "bad host")
    with pytest.raises(ConfigError, match=r"daemon.host: .*'bad host'.*set \[daemon\] host"):
        parse({})


def test_the_config_reserves_its_bridge_and_uplink_names():
    cfg = parse({"bridges": {"fcbr0": {"uplink": "eth0"}, "br-lan": {}}})
    assert cfg.reserved_ifnames == frozenset({"fcbr0", "eth0", "br-lan"})


@pytest.mark.parametrize("data,where", [
    ({"bridges": 5}, "[bridges] must be a table"), ({"daemon": "x"}, "[daemon] must be a table"),
    ({"bridges": {"fcbr0": 5}}, "[bridges.fcbr0] must be a table"),
])
def test_tables_that_are_not_tables_are_refused(data, where):
    with pytest.raises(ConfigError, match=re_escape(where)):
        parse(data)


@pytest.mark.parametrize("data", [
    {"bridges": {"x" * 1_000_000: {}}},
    {"bridges": {"fcbr0": {"uplink": "e" * 1_000_000}}},
    {"bridges": {"fcbr0": {"k" * 1_000_000: 1}}},
    {"daemon": {"metrics": "m" * 1_000_000}},
    {"daemon": {"host": "h" * 1_000_000}},
    {"daemon": {"host": ["h" * 1_000_000]}},
    {"t" * 1_000_000: {}},
])
def test_a_huge_value_comes_back_as_a_short_excerpt(data):
    with pytest.raises(ConfigError) as e:
        parse(data)
    assert len(str(e.value)) < 400, str(e.value)[:400]


def re_escape(text: str) -> str:
    import re
    return re.escape(text)
