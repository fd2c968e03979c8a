"""The web UI's config: where to listen, the users file, and the hosts.

/etc/fcnetd/webui.toml, every key optional:

    listen = "127.0.0.1:8080"
    users = "/etc/fcnetd/webui-users.json"    # root manages it: fcnetd-webui user ...

    [hosts.node1]
    bus = "system"                      # or a D-Bus address
    [hosts.node2]
    ssh = "fcnet@node2"                 # that host's system bus over ssh (fcnetd/sshbus.py)
    port = 22                           # optional, as are the two below
    identity = "/etc/fcnetd/webui-ssh/id_ed25519"
    known_hosts = "/etc/fcnetd/webui-ssh/known_hosts"

Without hosts, one host on the local system bus.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fcnetd.config import ConfigError, read_toml
from fcnetd.sshbus import SshTarget, check_destination

from .users import DEFAULT_PATH as DEFAULT_USERS

DEFAULT_PATH = "/etc/fcnetd/webui.toml"


@dataclass(frozen=True)
class WebConfig:
    listen: str = "127.0.0.1:8080"
    users: str = DEFAULT_USERS
    hosts: dict[str, str | SshTarget] = field(default_factory=dict)  # label -> local bus or ssh target


SSH_KEYS = {"ssh", "port", "identity", "known_hosts"}


def _host(target: str, name: str, table) -> str | SshTarget:
    """One [hosts.NAME] table: a local bus, or a remote host's bus over ssh."""
    where = f"{target}: [hosts.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table with bus = \"system\" or an address, or ssh = \"USER@HOST\"")
    if extra := set(table) - SSH_KEYS - {"bus"}:
        raise ConfigError(f"{where}: unknown key(s) {sorted(extra)[:8]}")
    if "ssh" not in table:
        if set(table) & SSH_KEYS:
            raise ConfigError(f"{where}: port, identity and known_hosts go with ssh = \"USER@HOST\"")
        if not isinstance(table.get("bus", "system"), str):
            raise ConfigError(f"{where}: bus must be \"system\" or a D-Bus address")
        return table.get("bus", "system")
    if "bus" in table:
        raise ConfigError(f"{where}: give bus (a local bus) or ssh (a remote host's system bus), not both")
    try:
        destination = check_destination(table["ssh"])
    except ValueError as e:
        raise ConfigError(f"{where}: ssh: {e}") from None
    port = table.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise ConfigError(f"{where}: port must be a number from 1 to 65535")
    for key in ("identity", "known_hosts"):
        value = table.get(key, "")
        if not isinstance(value, str) or (value and not value.startswith("/")) or len(value) > 4096:
            raise ConfigError(f"{where}: {key} must be an absolute file path")
    return SshTarget(destination, port, table.get("identity", ""), table.get("known_hosts", ""))


def load(path: str | None) -> WebConfig:
    data, target = read_toml(path, DEFAULT_PATH)
    if data is None:
        return WebConfig()
    if extra := set(data) - {"listen", "users", "hosts"}:
        raise ConfigError(f"{target}: unknown key(s) {sorted(extra)}")
    if not isinstance(data.get("hosts", {}), dict):
        raise ConfigError(f"{target}: hosts must be tables [hosts.NAME]")
    hosts = {name: _host(target, name, table) for name, table in data.get("hosts", {}).items()}
    return WebConfig(listen=data.get("listen", WebConfig.listen), users=data.get("users", WebConfig.users),
                     hosts=hosts)
