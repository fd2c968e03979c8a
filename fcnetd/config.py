"""/etc/fcnetd/fcnetd.toml: the admin's allow-list of bridges and daemon
settings. Every key is optional; without a file, fcbr0 is allowed and created."""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass, field

from .errors import InvalidArgs
from .model import check_ifname

DEFAULT_PATH = "/etc/fcnetd/fcnetd.toml"
DEFAULT_STATE_DIR = "/var/lib/fcnetd"
DEFAULT_METRICS = "127.0.0.1:9617"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class BridgeConfig:
    name: str
    create: bool = False
    uplink: str = ""
    mtu: int = 0  # 0: leave the kernel's default


@dataclass(frozen=True)
class Config:
    host: str
    state_dir: str
    metrics: str  # "HOST:PORT" or "off"
    bridges: dict[str, BridgeConfig] = field(default_factory=dict)
    path: str = ""

    def bridge(self, name: str) -> BridgeConfig | None:
        return self.bridges.get(name)


def _expect(table: dict, key: str, kind: type, where: str):
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: must be a {kind.__name__}, got {value!r}")
    return value


def parse(data: dict, path: str = "") -> Config:
    known = {"daemon", "bridges"}
    if extra := set(data) - known:
        raise ConfigError(f"unknown table(s) {sorted(extra)}; expected [daemon] and [bridges.NAME]")
    daemon = data.get("daemon", {})
    if extra := set(daemon) - {"host", "state_dir", "metrics"}:
        raise ConfigError(f"[daemon]: unknown key(s) {sorted(extra)}")
    host = _expect(daemon, "host", str, "daemon") if "host" in daemon else socket.gethostname()
    state_dir = _expect(daemon, "state_dir", str, "daemon") if "state_dir" in daemon else DEFAULT_STATE_DIR
    metrics = _expect(daemon, "metrics", str, "daemon") if "metrics" in daemon else DEFAULT_METRICS
    if metrics != "off":
        parse_listen(metrics, "daemon.metrics")
    bridges = {}
    for name, table in data.get("bridges", {"fcbr0": {"create": True}}).items():
        where = f"bridges.{name}"
        try:
            check_ifname(name)
            if not isinstance(table, dict):
                raise ConfigError(f"[{where}] must be a table")
            if extra := set(table) - {"create", "uplink", "mtu"}:
                raise ConfigError(f"[{where}]: unknown key(s) {sorted(extra)}")
            create = _expect(table, "create", bool, where) if "create" in table else False
            uplink = check_ifname(_expect(table, "uplink", str, where), f"{where}.uplink") if "uplink" in table else ""
            mtu = _expect(table, "mtu", int, where) if "mtu" in table else 0
        except InvalidArgs as e:
            raise ConfigError(f"[{where}]: {e}") from None
        if mtu and not 68 <= mtu <= 65535:
            raise ConfigError(f"{where}.mtu: {mtu} is out of range 68-65535")
        bridges[name] = BridgeConfig(name, create, uplink, mtu)
    return Config(host=host, state_dir=state_dir, metrics=metrics, bridges=bridges, path=path)


def read_toml(path: str | None, default_path: str) -> tuple[dict | None, str]:
    """(data, path read); data None when the default file is absent. A file
    named explicitly must exist."""
    target = path or default_path
    try:
        with open(target, "rb") as f:
            return tomllib.load(f), target
    except FileNotFoundError:
        if path:
            raise ConfigError(f"{target}: no such file") from None
        return None, target
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{target}: {e}") from None


def load(path: str | None) -> Config:
    """Reads the file; a missing default file means the embedded default."""
    data, target = read_toml(path, DEFAULT_PATH)
    if data is None:
        return parse({}, "")
    try:
        return parse(data, target)
    except ConfigError as e:
        raise ConfigError(f"{target}: {e}") from None


def parse_listen(value: str, field_name: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{field_name}: {value!r} must be HOST:PORT (or 'off')")
    return host.strip("[]"), int(port)
