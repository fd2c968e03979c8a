"""The web UI's config: where to listen, the users file, and the hosts.

/etc/fcnetd/webui.toml, every key optional:

    listen = "127.0.0.1:8080"
    users = "/var/lib/fcnetd-webui/users.json"

    [hosts.node1]
    bus = "system"                      # or a D-Bus address
    [hosts.node2]
    bus = "unix:path=/run/fcnetd-node2/bus.sock"

Without hosts, one host on the local system bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fcnetd.config import ConfigError, read_toml

DEFAULT_PATH = "/etc/fcnetd/webui.toml"


@dataclass(frozen=True)
class WebConfig:
    listen: str = "127.0.0.1:8080"
    users: str = "/var/lib/fcnetd-webui/users.json"
    hosts: dict[str, str] = field(default_factory=dict)  # label -> bus ("" label: ask the daemon)


def load(path: str | None) -> WebConfig:
    data, target = read_toml(path, DEFAULT_PATH)
    if data is None:
        return WebConfig()
    if extra := set(data) - {"listen", "users", "hosts"}:
        raise ConfigError(f"{target}: unknown key(s) {sorted(extra)}")
    hosts = {}
    for name, table in data.get("hosts", {}).items():
        if not isinstance(table, dict) or not isinstance(table.get("bus", "system"), str):
            raise ConfigError(f"{target}: [hosts.{name}] needs bus = \"system\" or an address")
        hosts[name] = table.get("bus", "system")
    return WebConfig(listen=data.get("listen", WebConfig.listen), users=data.get("users", WebConfig.users),
                     hosts=hosts)
