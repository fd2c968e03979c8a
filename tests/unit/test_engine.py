"""The engine against a fake kernel that yields where netlink does: the
rules that need no netlink. Races between entry points: test_engine_races."""

import asyncio

import pytest

from fcnetd import errors as E
from fcnetd.config import parse
from fcnetd.engine import Engine
from fcnetd.netlink import BridgeState, TapState
from fcnetd.registry import Registry

from .fakenetlink import YieldingNetlink


def make(tmp_path, vlan=True):
    cfg = parse({"daemon": {"host": "node1"}, "bridges": {"fcbr0": {"create": True}, "fcbr1": {}}})
    return Engine(cfg, Registry(str(tmp_path)), YieldingNetlink(vlan))


def run(coro):
    return asyncio.run(coro)


def test_auto_creation_reuses_and_names(tmp_path):
    e = make(tmp_path)

    async def go():
        net = await e.attach_vm("vm-1", "fcbr0", 10)
        again, created = await e.ensure_network("fcbr0", 10)
        return net, again, created
    net, again, created = run(go())
    assert net.name == "fcbr0-vlan-10" and net.origin == "auto" and again == net and created is False


def test_concurrent_ensure_creates_one_network(tmp_path):
    e = make(tmp_path)

    async def go():
        return await asyncio.gather(*(e.ensure_network("fcbr0", 20) for _ in range(20)))
    results = run(go())
    assert len({n.id for n, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_failed_persist_rolls_back(tmp_path, monkeypatch):
    e = make(tmp_path)

    def full(payload):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(e.registry.journal, "append", full)
    with pytest.raises(E.Internal, match="not saved.*No space left"):
        run(e.create_network("", "fcbr0", 5))
    assert e.registry.networks == {} and e.registry.by_name == {}


def test_in_use_message_counts_vms(tmp_path):
    e = make(tmp_path)

    async def go():
        for i in range(3):
            await e.attach_vm(f"vm-{i}", "fcbr0", 0)
        await e.delete_network("fcbr0")
    with pytest.raises(E.NetworkInUse, match=r"^Network has 3 attached VMs\. Remove VMs first\.$"):
        run(go())


def test_tap_name_collisions_are_retried(tmp_path, monkeypatch):
    e = make(tmp_path)
    e.netlink.devices["vmtap000001"] = TapState("vmtap000001", 5, "x", "eth0", 0, True, False)
    seq = iter([1, 1, 2])
    monkeypatch.setattr("fcnetd.engine.random.randrange", lambda n: next(seq))

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        return await e.create_tap("vm-1", "eth0")
    assert run(go()) == "vmtap000002"


def test_reconcile_adopts_and_reaps(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        e.netlink.devices["vmtap1"] = TapState("vmtap1", 3, "vm-1", "eth0", 1, True, False)
        e.netlink.devices["vmtap2"] = TapState("vmtap2", 4, "vm-gone", "eth0", 1, True, False)
        return await e.reconcile()
    result = run(go())
    assert result["adopted"] == 1 and result["reaped"] == 1
    assert e.netlink.deleted == ["vmtap2"] and list(e.taps) == [("vm-1", "eth0")]


def test_search_matches_name_bridge_vlan_and_description(tmp_path):
    e = make(tmp_path)

    async def go():
        await e.create_network("", "fcbr0", 10)
        await e.create_network("prod", "fcbr1", 30, description="Production tier")
    run(go())
    names = lambda **kw: [n.name for n in e.list_networks(**kw)]  # noqa: E731
    assert names() == ["prod", "fcbr0-vlan-10"]
    assert names(search="production") == ["prod"]
    assert names(search="10") == ["fcbr0-vlan-10"]
    assert names(kind="bridge") == []


def test_version_moves_with_everything_a_network_summary_shows(tmp_path):
    """ListNetworks keeps marshalled replies until engine.version moves."""
    e = make(tmp_path)
    seen = [e.version]

    def moved():
        seen.append(e.version)
        return seen[-1] != seen[-2]

    async def go():
        await e.attach_vm("vm-1", "fcbr0", 0)
        assert moved()  # a network and an attachment
        await e.create_tap("vm-1", "eth0")
        assert not moved()  # TAPs are not in the summary
        await e.detach_vm("vm-1", "eth0")
        assert moved()  # VM count
        e.set_bridge("fcbr0", e.bridges["fcbr0"])
        assert not moved()  # the same state again
        e.set_bridge("fcbr0", BridgeState("fcbr0", 1, False, True, 1))
        assert moved()  # status: bridge-down
        e.config = parse({"bridges": {"fcbr1": {}}})
        assert moved()  # status: bridge-not-allowed
        e.registry.replace(e.registry.snapshot())
        assert moved()  # a hand edit loaded
    run(go())
