"""Regression: the registry watcher took the daemon's own grouped write for a
hand edit when it looked between the rename and the bookkeeping of that write,
reloaded the file and dropped a change made meanwhile."""

import asyncio
import threading
import time

from fcnetd import registry as registry_mod
from fcnetd.daemon import Daemon, parse_args
from fcnetd.model import Network

from .test_engine import FakeNetlink


def test_watcher_never_reloads_the_daemons_own_write(tmp_path, monkeypatch):
    config = tmp_path / "fcnetd.toml"
    config.write_text("[bridges.fcbr0]\n[bridges.fcbr1]\n")
    daemon = Daemon(parse_args(["--config", str(config), "--state-dir", str(tmp_path), "--metrics", "off"]))
    daemon.engine.netlink = FakeNetlink()
    daemon.registry.load()
    daemon.registry.save_now()
    renamed = threading.Event()
    real = registry_mod.write_atomic

    def slow_write(path, payload, mode=0o600):
        st = real(path, payload, mode)
        renamed.set()
        time.sleep(0.3)  # a slow directory fsync: the file is in place, its identity not yet recorded
        return st
    monkeypatch.setattr(registry_mod, "write_atomic", slow_write)

    async def scenario():
        first = Network.new("", "fcbr0", 0, "h", "manual")
        daemon.registry.add_network(first)
        commit = asyncio.ensure_future(daemon.registry.commit())
        while not renamed.is_set():
            await asyncio.sleep(0.01)
        second = Network.new("", "fcbr1", 0, "h", "manual")  # changed while the write is in flight
        daemon.registry.add_network(second)
        await daemon._registry_changed()  # what the file watcher does on the rename
        await commit
        await daemon.registry.commit()
        return first, second
    first, second = asyncio.run(scenario())
    assert set(daemon.registry.networks) == {first.id, second.id}
