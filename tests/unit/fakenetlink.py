"""A fake kernel for the unit tier that yields where real netlink does.

Every operation awaits once, at the point where the daemon's call waits for
the kernel, so other tasks run there just as they do in the daemon. A test
can stop the next call of an operation at that point and let it go later:

    gate = kernel.hold("taps")       # the next dump stops in flight
    task = asyncio.ensure_future(engine.reconcile())
    await gate.reached()             # reconcile is waiting for its dump
    ...                              # race something against it
    gate.open()

What the kernel has done when an operation stops:
- taps: the dump is read at the call and delivered after the gate, so it
  misses a TAP created meanwhile and still lists one deleted meanwhile;
- create_tap: the device exists (TUNSETIFF is synchronous) but is not yet
  tagged, enslaved or up: those requests are in flight;
- delete_link: the request is in flight; the device goes after the gate;
- every other operation: nothing yet; it takes effect after the gate.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import replace

from fcnetd import errors as E
from fcnetd.netlink import BridgeState, TapState

OPERATIONS = ("ensure_bridge", "bridge", "create_tap", "delete_link", "taps", "link_index",
              "set_master", "set_up", "set_down", "links_of_kind", "port_vlans", "all_port_vlans", "set_port_vlans")


class Gate:
    """Stops one operation at its yield point until the test opens it."""

    def __init__(self):
        self._reached = asyncio.Event()
        self._opened = asyncio.Event()

    async def reached(self) -> None:
        """Returns once the held operation is waiting at the gate."""
        await self._reached.wait()

    def open(self) -> None:
        self._opened.set()

    async def _wait(self) -> None:
        self._reached.set()
        await self._opened.wait()


class YieldingNetlink:
    """The subset of fcnetd.netlink.Netlink the engine uses, on a dict of
    devices. `devices` is the kernel: TAP name -> TapState."""

    BRIDGE_INDEX = 1  # fcbr0's; other bridges count up from it

    def __init__(self, vlan: bool = True):
        self.vlan = vlan
        self.devices: dict[str, TapState] = {}
        self.deleted: list[str] = []
        self.calls: Counter = Counter()  # operation -> how many times it was called
        self._gates: dict[str, list[Gate]] = defaultdict(list)
        self._untagged: set[str] = set()  # created, tag still in flight
        self.port_vlan_sets: list[tuple[int, dict]] = []  # (TAP index, VLANs) set, in order

    def hold(self, operation: str) -> Gate:
        """The next call of `operation` (one not already held) stops at its
        yield point until the returned gate is opened."""
        if operation not in OPERATIONS:
            raise ValueError(f"operation: {operation!r} is not one of {', '.join(OPERATIONS)}")
        gate = Gate()
        self._gates[operation].append(gate)
        return gate

    def taps_for(self, vm_id: str, nic: str) -> list[str]:
        """The names of every TAP in the kernel tagged for this VM NIC."""
        return sorted(t.name for t in self.devices.values()
                      if (t.vm_id, t.nic) == (vm_id, nic) and t.name not in self._untagged)

    async def _kernel(self, operation: str) -> None:
        self.calls[operation] += 1
        if self._gates[operation]:
            await self._gates[operation].pop(0)._wait()
        else:
            await asyncio.sleep(0)

    def _bridge_state(self, name: str) -> BridgeState:
        index = self.BRIDGE_INDEX + (int(name[4:]) if name[:4] == "fcbr" and name[4:].isdigit() else 100)
        return BridgeState(name, index, True, self.vlan, 1)

    async def ensure_bridge(self, name, create, mtu, vlan_filtering):
        await self._kernel("ensure_bridge")
        if vlan_filtering and not self.vlan:
            raise E.VlanUnsupported("no vlan filtering")
        return self._bridge_state(name)

    async def bridge(self, name):
        await self._kernel("bridge")
        return self._bridge_state(name)

    async def create_tap(self, name, vm_id, nic, bridge, vlan, uid, gid, mtu):
        if name in self.devices:
            raise E.TapExists(name)
        tap = TapState(name, len(self.devices) + 10, vm_id, nic, bridge.index, True, False)
        self.devices[name] = tap
        self._untagged.add(name)
        try:
            await self._kernel("create_tap")
        finally:
            self._untagged.discard(name)
        if self.devices.get(name) is not tap:
            raise E.Internal(f"tap {name}: deleted while it was being set up")
        return tap

    async def delete_link(self, name):
        await self._kernel("delete_link")
        self.deleted.append(name)
        self.devices.pop(name, None)

    async def taps(self):
        found = {(t.vm_id, t.nic): t for t in self.devices.values() if t.name not in self._untagged}
        await self._kernel("taps")
        return found

    async def links_of_kind(self, kind):
        await self._kernel("links_of_kind")
        return []

    async def link_index(self, name):
        await self._kernel("link_index")
        return None

    def _tap(self, index: int) -> TapState | None:
        return next((t for t in self.devices.values() if t.index == index), None)

    def _update(self, index: int, **changes) -> None:
        if (tap := self._tap(index)) is not None:
            self.devices[tap.name] = replace(tap, **changes)

    async def set_up(self, index, what):
        await self._kernel("set_up")
        self._update(index, up=True)

    async def set_down(self, index, what):
        await self._kernel("set_down")
        self._update(index, up=False)

    async def set_master(self, index, master, what, bridge=""):
        await self._kernel("set_master")
        self._update(index, master=master)

    async def port_vlans(self, index):
        await self._kernel("port_vlans")
        return {}

    async def all_port_vlans(self):
        await self._kernel("all_port_vlans")
        return {}

    async def set_port_vlans(self, index, wanted, what, current=None):
        await self._kernel("set_port_vlans")
        self.port_vlan_sets.append((index, dict(wanted)))


async def run_until_blocked(task: asyncio.Future, turns: int = 1000) -> None:
    """Lets `task` run until it finishes or can go no further without
    something the test holds. Counted in turns of the event loop, not in
    time: the fake kernel finishes any operation that is not held within a
    few turns, so a task still pending after many is waiting for a gate or
    a lock, whatever the machine's speed. (A registry write runs in a
    thread, so it may still be under way: assert only on final outcomes.)"""
    for _ in range(turns):
        if task.done():
            return
        await asyncio.sleep(0)
