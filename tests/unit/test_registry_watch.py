"""Regression: the registry watcher took the daemon's own write of
registry.json (today: a compaction) for a hand edit when it looked between the
rename and the bookkeeping of that write, reloaded the file and dropped a
change made meanwhile.

The write is held in that window (the file renamed into place, its identity
not yet recorded, as during a slow directory fsync) until the watcher has
looked: by an event the test sets, not by a sleep."""

import asyncio
import threading

from fcnetd import registry as registry_mod
from fcnetd.daemon import Daemon, parse_args
from fcnetd.model import Network

from .fakenetlink import YieldingNetlink, run_until_blocked


def test_watcher_never_reloads_the_daemons_own_write(tmp_path, monkeypatch):
    config = tmp_path / "fcnetd.toml"
    config.write_text("[bridges.fcbr0]\n[bridges.fcbr1]\n")
    daemon = Daemon(parse_args(["--config", str(config), "--state-dir", str(tmp_path), "--metrics", "off"]))
    daemon.engine.netlink = YieldingNetlink()
    daemon.registry.load()
    daemon.registry.save_now()
    renamed, fsynced = threading.Event(), threading.Event()
    real = registry_mod.write_atomic

    def slow_write(path, payload, mode=0o600):
        st = real(path, payload, mode)
        renamed.set()
        if not fsynced.wait(30):  # the test lets it finish once the watcher has looked
            raise AssertionError("the held registry write was never released")
        return st
    monkeypatch.setattr(registry_mod, "write_atomic", slow_write)
    monkeypatch.setattr(registry_mod, "COMPACT_MIN_BYTES", 0)  # the first change starts a compaction
    reg = daemon.registry

    async def scenario():
        loop = asyncio.get_running_loop()
        first = Network.new("", "fcbr0", 0, "h", "manual")
        await reg.commit(reg.change("add_network", first))
        assert await loop.run_in_executor(None, renamed.wait, 30), "the compaction never wrote"
        second = Network.new("", "fcbr1", 0, "h", "manual")  # changed while the write is in flight
        await reg.commit(reg.change("add_network", second))
        watcher = asyncio.ensure_future(daemon._registry_changed())  # what the file watcher does on the rename
        # It either finishes looking inside the window or waits for the write.
        await run_until_blocked(watcher)
        fsynced.set()
        await watcher
        while reg._compacting is not None:
            await reg._compacting
        return first, second
    first, second = asyncio.run(scenario())
    assert set(daemon.registry.networks) == {first.id, second.id}
