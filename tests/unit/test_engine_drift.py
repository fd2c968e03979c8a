"""Issue 9, items 6 and 7: bridge state follows the kernel, and a reload
always ends in READY=1."""

import asyncio

from fcnetd.daemon import Daemon, parse_args
from fcnetd.netlink import BridgeState

from .test_engine import make


def test_vlan_filtering_turned_off_behind_our_back_is_drift_and_is_restored(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 10)
        calls = e.netlink.calls["ensure_bridge"]
        off = BridgeState("fcbr0", 1, True, False, 1)  # what the link event says
        assert e.bridge_changed("fcbr0", off) is True
        assert e.status(e.find_network("fcbr0-vlan-10")) == "vlan-filtering-off"
        assert e.stats.reconcile["drift"] == 1
        await e.restore_vlan_filtering("fcbr0")
        assert e.netlink.calls["ensure_bridge"] == calls + 1  # turned on again, with vlan_filtering
        assert e.status(e.find_network("fcbr0-vlan-10")) == "active"
    asyncio.run(go())


def test_filtering_off_on_a_bridge_without_tagged_networks_is_left_alone(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 0)
        assert e.bridge_changed("fcbr0", BridgeState("fcbr0", 1, True, False, 1)) is False
        assert e.stats.reconcile["drift"] == 0
    asyncio.run(go())


def test_a_reload_that_fails_still_ends_in_ready(tmp_path, monkeypatch):
    config = tmp_path / "fcnetd.toml"
    config.write_text("[bridges.fcbr0]\n")
    daemon = Daemon(parse_args(["--config", str(config), "--state-dir", str(tmp_path), "--metrics", "off"]))
    sent = []
    monkeypatch.setattr(daemon.notifier, "_send", sent.append)

    class Gate:
        def reload(self):
            pass
    daemon.gate = Gate()

    async def broken():
        raise RuntimeError("netlink went away")
    monkeypatch.setattr(daemon.engine, "reconcile", broken)
    asyncio.run(daemon.reload())
    assert sent[0] == "RELOADING=1"
    assert sent[-1].startswith("READY=1\nSTATUS=reload failed (netlink went away)"), sent
