"""NAT mode's costs (issue 10, Bench), each against a baseline in the same
run, taking turns with it so noise hits both alike:

- AttachVm + CreateTap on a nat network against the same on a bridge
  network of the same daemon (target <= 1.5x: a VM costs a hosts-file write
  and a SIGHUP, never a dnsmasq restart);
- from a guest starting its DHCP client on a TAP that is up (the relay
  holds it open, as a started VM does) to the lease it gets from fcnetd's
  dnsmasq (target <= 2 s), against the same guest path on a bridge network
  served by a plain dnsmasq started by hand with the same static lease.

The guest is the system tier's (tests/system/guestnet.py): fcnetd.relay and
busybox udhcpc, so the figure includes udhcpc's own start, as a guest's
init would.
"""

from __future__ import annotations

import os
import signal
import time

from common import Client, Figure, Sandbox, p50, v
from fcnetd.bus import DBusError, unwrap
from tests.system.guestnet import DhcpServer, Guest, dnsmasq_pids

MS = 1000.0
NAT_BRIDGE, BRIDGE_BRIDGE, BASELINE_BRIDGE = "fcbr0", "fcbr1", "fcbr2"


async def _attach_and_tap(c: Client, vm: str, bridge: str) -> float:
    t = time.perf_counter()
    await c.m("AttachVm", "ssqa{sv}", vm, bridge, 0, {})
    await c.m("CreateTap", "ssa{sv}", vm, "eth0", {})
    return time.perf_counter() - t


async def _vm_entry(c: Client, bridge: str, vm: str) -> dict:
    (net,) = await c.m("GetNetwork", "s", bridge)
    return next(e for e in unwrap(net)["Vms"] if e["VmId"] == vm)


def _lease_time(sb: Sandbox, tap: str, mac: str) -> tuple[float, str]:
    """Seconds from udhcpc's start on a guest joined to `tap` to its lease; (seconds, the leased address)."""
    guest = Guest(sb.ns, tap, mac)
    try:
        t = time.perf_counter()
        lease = guest.dhcp(timeout=10)
        took = time.perf_counter() - t
        if lease is None:
            raise RuntimeError(f"no DHCP lease on {tap} ({mac}) in 10 s")
        return took, lease.ip
    finally:
        guest.close()


async def bench_nat(figures: list[Figure], workdir: str, samples: int = 60, rounds: int = 6,
                    lease_samples: int = 10) -> None:
    sb = Sandbox(os.path.join(workdir, "nat"), bridges=3, metrics=False).start()
    try:
        c = await Client(sb.bus.address).open()
        try:
            await c.m("CreateNetwork", "ssqa{sv}", "", NAT_BRIDGE, 0,
                      {"mode": v("s", "nat"), "subnet": v("s", "10.213.0.0/20")})
        except DBusError as e:
            print(f"  nat: not run, this fcnetd has no nat mode ({e.text})", flush=True)
            for name in ("AttachVm + CreateTap p50, nat network", "TAP up to the guest's DHCP lease, p50"):
                figures.append(Figure(name + " (NOT RUN: no nat mode)", float("nan"), "ms", "-", float("nan"),
                                      "-", False))
            c.close()
            return
        await c.m("CreateNetwork", "ssqa{sv}", "", BRIDGE_BRIDGE, 0, {})

        nat_t, bridge_t = [], []
        per = samples // rounds
        for r in range(rounds):
            for bridge, out in ((NAT_BRIDGE, nat_t), (BRIDGE_BRIDGE, bridge_t)):
                for i in range(per):
                    out.append(await _attach_and_tap(c, f"{bridge}-{r}-{i}", bridge))
        nat_ms, bridge_ms = p50(nat_t) * MS, p50(bridge_t) * MS
        figures.append(Figure("AttachVm + CreateTap p50, nat network", nat_ms, "ms", "bridge network", bridge_ms,
                              "<= 1.5x", nat_ms <= 1.5 * bridge_ms))
        print(f"  AttachVm + CreateTap p50: nat {nat_ms:.2f} ms, bridge {bridge_ms:.2f} ms", flush=True)

        # The baseline: the same guest path, served by a plain dnsmasq with static leases.
        macs = [f"02:fb:00:00:00:{i:02x}" for i in range(lease_samples)]
        await c.m("CreateNetwork", "ssqa{sv}", "", BASELINE_BRIDGE, 0, {})
        hosts = {mac: f"192.0.2.{10 + i}" for i, mac in enumerate(macs)}
        nat_lease, base_lease = [], []
        with DhcpServer(sb.ns, BASELINE_BRIDGE, "192.0.2.1/24", ("192.0.2.10", "192.0.2.250"), hosts):
            for i, mac in enumerate(macs):
                vm = f"lease-nat-{i}"
                await _attach_and_tap(c, vm, NAT_BRIDGE)
                entry = await _vm_entry(c, NAT_BRIDGE, vm)
                took, ip = _lease_time(sb, entry["Tap"], entry["Mac"])
                if ip != entry["Ip"]:
                    raise RuntimeError(f"{vm} was leased {ip}; fcnetd reported {entry['Ip']}")
                nat_lease.append(took)
                vm = f"lease-base-{i}"
                await _attach_and_tap(c, vm, BASELINE_BRIDGE)
                took, _ = _lease_time(sb, (await _vm_entry(c, BASELINE_BRIDGE, vm))["Tap"], mac)
                base_lease.append(took)
        nat_s, base_s = p50(nat_lease), p50(base_lease)
        figures.append(Figure("TAP up to the guest's DHCP lease, p50", nat_s, "s", "plain dnsmasq, bridge network",
                              base_s, "<= 2 s", max(nat_lease) <= 2))
        print(f"  TAP up to lease: fcnetd p50 {nat_s:.2f} s (max {max(nat_lease):.2f} s), "
              f"plain dnsmasq p50 {base_s:.2f} s", flush=True)
        c.close()
    finally:
        sb.close()
        for pid in dnsmasq_pids(sb.state):  # none after a clean stop; never leave one running
            os.kill(pid, signal.SIGKILL)
