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


@pytest.mark.parametrize("text,message", [
    ("[bridges.fcbr0]\ncreate = 1\n", "bridges.fcbr0.create: must be a bool"),
    ("[bridges.fcbr0]\nmtu = 10\n", "out of range"),
    ("[bridges.fcbr0]\ncolour = 1\n", "unknown key"),
    ('[bridges."a/b"]\n', "must not contain"),
    ("[daemon]\nmetrics = \"nope\"\n", "HOST:PORT"),
    ("[nat]\n", "unknown table"),
    ("[bridges.fcbr0\n", "fcnetd.toml"),
])
def test_bad_config_is_explained(tmp_path, text, message):
    p = tmp_path / "fcnetd.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load(str(p))
