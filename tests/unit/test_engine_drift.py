"""Issue 9, items 6 and 7: bridge state follows the kernel, and a reload
always ends in READY=1."""

import asyncio
import dataclasses

import pytest

from fcnetd.errors import ConfigInvalid
from fcnetd.daemon import Daemon, parse_args
from fcnetd.netlink import BridgeState

from .test_engine import make


def test_vlan_filtering_turned_off_behind_our_back_is_drift_and_is_restored(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 10)
        calls = e.netlink.calls["ensure_bridge"]
        off = BridgeState("fcbr0", 1, True, False, 1)  # what the link event says
        repair = e.bridge_changed("fcbr0", off)
        assert repair is not None
        assert e.status(e.find_network("fcbr0-vlan-10")) == "vlan-filtering-off"
        assert e.stats.reconcile["drift"] == 1
        await repair()
        assert e.netlink.calls["ensure_bridge"] == calls + 1  # turned on again, with vlan_filtering
        assert e.status(e.find_network("fcbr0-vlan-10")) == "active"
    asyncio.run(go())


def test_filtering_off_on_a_bridge_without_tagged_networks_is_left_alone(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 0)
        assert e.bridge_changed("fcbr0", BridgeState("fcbr0", 1, True, False, 1)) is None
        assert e.stats.reconcile["drift"] == 0
    asyncio.run(go())


def reloadable(tmp_path, monkeypatch) -> tuple[Daemon, list[str], object]:
    """A daemon (not started) on a config allowing fcbr0; what it tells systemd; its config file."""
    config = tmp_path / "fcnetd.toml"
    config.write_text("[bridges.fcbr0]\n")
    daemon = Daemon(parse_args(["--config", str(config), "--state-dir", str(tmp_path), "--metrics", "off"]))
    sent = []
    monkeypatch.setattr(daemon.notifier, "_send", sent.append)
    return daemon, sent, config


def test_a_reload_that_fails_still_ends_in_ready(tmp_path, monkeypatch):
    daemon, sent, _ = reloadable(tmp_path, monkeypatch)

    class Gate:
        def reload(self):
            pass
    daemon.gate = Gate()

    async def broken():
        raise RuntimeError("netlink went away")
    monkeypatch.setattr(daemon.engine, "reconcile", broken)
    with pytest.raises(RuntimeError, match="netlink went away"):  # the Reload call's answer
        asyncio.run(daemon.reload())
    assert sent[0] == "RELOADING=1"
    assert sent[-1].startswith("READY=1\nSTATUS=reload failed (netlink went away)"), sent


def test_a_config_error_on_reload_is_configinvalid_and_keeps_the_config_in_force(tmp_path, monkeypatch):
    daemon, sent, config = reloadable(tmp_path, monkeypatch)
    config.write_text("[bridges.fcbr0]\nuplink = 7\n")
    with pytest.raises(ConfigInvalid, match="uplink.*the config in force stays"):
        asyncio.run(daemon.reload())
    assert list(daemon.config.bridges) == ["fcbr0"] and daemon.config.bridges["fcbr0"].uplink == ""
    assert sent[-1].startswith("READY=1\nSTATUS=config not reloaded ("), sent


def test_a_failed_uplink_sync_refuses_the_network_instead_of_answering_an_error_after_storing_it(tmp_path):
    """Item 7: the uplink was synced after the commit, so an uplink EBUSY made
    CreateNetwork answer an error for a network that was stored (and the
    retry answered NetworkExists). Now the trunk gets the VLAN first."""
    from fcnetd import errors as E
    from fcnetd.config import parse
    from fcnetd.engine import Engine
    from fcnetd.registry import Registry

    from .fakenetlink import YieldingNetlink

    cfg = parse({"daemon": {"host": "node1"}, "bridges": {"fcbr0": {"create": True, "uplink": "eth9"}}})
    kernel = YieldingNetlink(True)

    async def uplink_index(name):
        return 42

    async def busy(index, wanted, what, current=None):
        raise E.Internal(f"{what}: it is held by another master device")
    kernel.link_index, kernel.set_port_vlans = uplink_index, busy
    e = Engine(cfg, Registry(str(tmp_path)), kernel)

    async def go():
        with pytest.raises(E.Internal, match="held by another master"):
            await e.create_network("", "fcbr0", 10)
        assert e.registry.networks == {}  # nothing stored, so the retry is not NetworkExists
        kernel.set_port_vlans = YieldingNetlink.set_port_vlans.__get__(kernel)
        return await e.create_network("", "fcbr0", 10)
    assert asyncio.run(go()).name == "fcbr0-vlan-10"


def test_a_bridge_carrying_networks_that_vanishes_and_returns_asks_for_reconciles(tmp_path):
    """Deleted behind fcnetd's back: a reconcile makes it again (create =
    true) or waits; back (by anyone's hand, or as one event with a new
    index): a reconcile puts fcnetd's ports and addresses on it again."""
    e = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 0)
        present = e.bridges["fcbr0"]
        assert e.bridge_changed("fcbr0", None) == e.reconcile_drift
        assert e.stats.reconcile["drift"] == 1
        assert e.bridge_changed("fcbr0", present) == e.reconcile_drift  # back
        assert e.bridge_changed("fcbr0", present) is None  # nothing new
        assert e.bridge_changed("fcbr0", dataclasses.replace(present, index=present.index + 7)) == e.reconcile_drift
        assert e.bridge_changed("fcbr1", None) is None  # carries no network
        e.set_bridge("fcbr0", None)
        await e.reconcile()
        assert e.bridges["fcbr0"] is not None, "reconcile makes a create = true bridge carrying networks again"
    asyncio.run(go())
