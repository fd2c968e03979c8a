"""/etc/fcnetd/fcnetd.toml: the admin's allow-list of bridges and daemon
settings. Every key is optional; without a file, fcbr0 is allowed and created."""

from __future__ import annotations

import socket
import tomllib
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from . import ipam
from .errors import InvalidArgs
from .model import HOST_RULE, check_host, check_ifname, excerpt

DEFAULT_PATH = "/etc/fcnetd/fcnetd.toml"
DEFAULT_STATE_DIR = "/var/lib/fcnetd"
DEFAULT_METRICS = "127.0.0.1:9617"
DEFAULT_NAT_POOL = IPv4Network("10.213.0.0/16")


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
    nat_pool: IPv4Network = DEFAULT_NAT_POOL  # where automatic nat subnets come from

    def bridge(self, name: str) -> BridgeConfig | None:
        return self.bridges.get(name)

    @property
    def reserved_ifnames(self) -> frozenset[str]:
        """Names fcnetd may create or enslave: no TAP may take them
        (model.check_tap_name)."""
        return frozenset(self.bridges) | {b.uplink for b in self.bridges.values() if b.uplink}


def _expect(table: dict, key: str, kind: type, where: str):
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}.{key}: must be a {kind.__name__}, got {excerpt(value)}")
    return value


def _table(data: dict, key: str, default: dict, where: str) -> dict:
    value = data.get(key, default)
    if not isinstance(value, dict):
        raise ConfigError(f"[{where}] must be a table, got {excerpt(value)}")
    return value


def _unknown(keys: set) -> str:
    """Names keys a reader did not expect, briefly: they may be anything."""
    shown = ", ".join(excerpt(k) for k in sorted(keys)[:3])
    return shown + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def parse(data: dict, path: str = "") -> Config:
    known = {"daemon", "bridges", "nat"}
    if extra := set(data) - known:
        raise ConfigError(f"unknown table(s) {_unknown(extra)}; expected [daemon], [bridges.NAME] and [nat]")
    daemon = _table(data, "daemon", {}, "daemon")
    if extra := set(daemon) - {"host", "state_dir", "metrics"}:
        raise ConfigError(f"[daemon]: unknown key(s) {_unknown(extra)}")
    host = _host(daemon)
    state_dir = _expect(daemon, "state_dir", str, "daemon") if "state_dir" in daemon else DEFAULT_STATE_DIR
    metrics = _expect(daemon, "metrics", str, "daemon") if "metrics" in daemon else DEFAULT_METRICS
    if metrics != "off":
        parse_listen(metrics, "daemon.metrics")
    bridges: dict[str, BridgeConfig] = {}
    for name, table in _table(data, "bridges", {"fcbr0": {"create": True}}, "bridges").items():
        bridges[name] = _bridge(name, table)
    _check_uplinks(bridges)
    return Config(host=host, state_dir=state_dir, metrics=metrics, bridges=bridges, path=path,
                  nat_pool=_nat_pool(_table(data, "nat", {}, "nat")))


def _nat_pool(nat: dict) -> IPv4Network:
    if extra := set(nat) - {"pool"}:
        raise ConfigError(f"[nat]: unknown key(s) {_unknown(extra)}")
    if "pool" not in nat:
        return DEFAULT_NAT_POOL
    try:
        return ipam.check_subnet(_expect(nat, "pool", str, "nat"), "nat.pool", ipam.POOL_PREFIXES)
    except InvalidArgs as e:
        raise ConfigError(str(e)) from None


def _host(daemon: dict) -> str:
    """The host recorded in every network: the same rule as in the registry."""
    if "host" in daemon:
        try:
            return check_host(_expect(daemon, "host", str, "daemon"), "daemon.host")
        except InvalidArgs as e:
            raise ConfigError(str(e)) from None
    host = socket.gethostname()
    try:
        return check_host(host, "daemon.host")
    except InvalidArgs:
        raise ConfigError(f"daemon.host: the machine's host name {excerpt(host)} is not {HOST_RULE}; "
                          "set [daemon] host") from None


def _bridge(name: str, table: object) -> BridgeConfig:
    """One [bridges.NAME] table. A bridge's name follows the interface rule,
    which keeps it a valid network name: it names its auto networks."""
    try:
        where = f"bridges.{check_ifname(name, 'bridge name')}"
    except InvalidArgs as e:
        # a refused name is shown as a TOML quoted key, clipped
        raise ConfigError(f"[bridges.{excerpt(name)}]: {e}") from None
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table, got {excerpt(table)}")
    if extra := set(table) - {"create", "uplink", "mtu"}:
        raise ConfigError(f"[{where}]: unknown key(s) {_unknown(extra)}")
    create = _expect(table, "create", bool, where) if "create" in table else False
    uplink = ""
    if "uplink" in table:
        try:
            uplink = check_ifname(_expect(table, "uplink", str, where), "uplink")
        except InvalidArgs as e:
            raise ConfigError(f"[{where}]: {e}") from None
    mtu = _expect(table, "mtu", int, where) if "mtu" in table else 0
    if mtu and not 68 <= mtu <= 65535:
        raise ConfigError(f"{where}.mtu: {excerpt(mtu)} is out of range 68-65535")
    return BridgeConfig(name, create, uplink, mtu)


def _check_uplinks(bridges: dict[str, BridgeConfig]) -> None:
    """An uplink is a port of one bridge: enslaving it to a second bridge,
    or enslaving an allowed bridge, would move it away from the first."""
    owner: dict[str, str] = {}
    for cfg in bridges.values():
        if not cfg.uplink:
            continue
        if cfg.uplink in bridges:
            raise ConfigError(f"[bridges.{cfg.name}]: uplink: {cfg.uplink!r} is an allowed bridge; "
                              "an uplink must be another interface")
        if cfg.uplink in owner:
            raise ConfigError(f"[bridges.{cfg.name}]: uplink: {cfg.uplink!r} is already the uplink of "
                              f"{owner[cfg.uplink]}; an interface can be the uplink of one bridge only")
        owner[cfg.uplink] = cfg.name


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
        raise ConfigError(f"{field_name}: {excerpt(value)} must be HOST:PORT (or 'off')")
    return host.strip("[]"), int(port)
