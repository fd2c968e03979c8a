"""The state machine of the stateful property test (test_stateful.py).

Hypothesis drives fcnetd over D-Bus from three connections — single calls,
concurrent bursts, SIGHUP, config rewrites, graceful restarts and kill -9 —
and after every step compares what the daemon says and what the kernel has
with a model of the expected state (tests/faults/model.py).

This kernel has no bridge VLAN filtering, so networks are untagged; tagged
calls are a rule of their own and must answer VlanUnsupported and change
nothing, not even create the bridge.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter

from hypothesis import HealthCheck, Phase, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from .burst import MAX_GROUP, group, settle
from .driver import Callers, Host
from .model import Model, Op

VMS = tuple(f"vm-{i}" for i in range(1, 7))
NICS = ("eth0", "eth1")
BRIDGES = ("fcbr0", "fcbr1", "fcbr2")
OPTIONAL = ("fcbr1", "fcbr2")  # taken off and put back on the allow-list by config rewrites
NEVER = "fcbr9"                # never allowed
# "fcbr2" as a manual name on another bridge takes fcbr2's automatic name
NAMES = ("", "net-a", "net-b", "fcbr2")
CONNECTIONS = 3
MAX_BURST = 30 * MAX_GROUP  # a burst sends at most 30 calls, in at most 30 groups

# Sized to run in about 60-90 s on two shared cores; FCNETD_PROPERTY_EXAMPLES
# and FCNETD_PROPERTY_STEPS raise it for a longer hunt. Shrinking replays whole
# examples against a real daemon (minutes), so it is off unless
# FCNETD_PROPERTY_SHRINK=1; a failure still prints every step of its example.
# The examples come from a fixed seed (derandomize) so a run is repeatable and
# `./run-tests` judges the code, not the draw; FCNETD_PROPERTY_RANDOM=1 draws
# new ones for a hunt. Random hunts after the merge found three races, fixed;
# the last random CI runs still found more (see the closing note, issue 9).
SETTINGS = settings(
    derandomize=not os.environ.get("FCNETD_PROPERTY_RANDOM"),
    max_examples=int(os.environ.get("FCNETD_PROPERTY_EXAMPLES", "12")),
    stateful_step_count=int(os.environ.get("FCNETD_PROPERTY_STEPS", "30")),
    deadline=None, database=None, print_blob=True, suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("FCNETD_PROPERTY_SHRINK") else []))

keys = st.tuples(st.sampled_from(VMS), st.sampled_from(NICS))
conns = st.integers(0, CONNECTIONS - 1)
bridges = st.sampled_from(BRIDGES + (NEVER,))

VM_CALLS = ("AttachVm", "DetachVm", "CreateTap", "DeleteTap")


def vm_call(key):
    return st.builds(lambda method, k, b, c: Op(method, (*k, b, 0) if method == "AttachVm" else k, c),
                     st.sampled_from(VM_CALLS), key, bridges, conns)


network_call = st.one_of(
    st.builds(lambda n, b, c: Op("CreateNetwork", (n, b, 0), c), st.sampled_from(NAMES), bridges, conns),
    st.builds(lambda n, c: Op("DeleteNetwork", (n,), c), st.sampled_from(NAMES[1:] + BRIDGES), conns))


def burst_calls(model: Model):
    """Same-key pairs and single calls, aimed mostly at attached VM NICs
    (where calls can race) rather than spread over all of them. The draws
    have the same shape whatever the state (Hypothesis replays choices, and
    the state follows the daemon's answers); only their meaning follows it."""
    every = [(vm, nic) for vm in VMS for nic in NICS]

    def aim(hot_wanted: bool, i: int) -> tuple[str, str]:
        hot = sorted(model.attachments)
        return hot[i % len(hot)] if hot_wanted and hot else every[i]

    key = st.builds(aim, st.booleans(), st.integers(0, len(every) - 1))
    pair = key.flatmap(lambda k: st.lists(vm_call(st.just(k)), min_size=2, max_size=2))
    return pair, st.one_of(vm_call(key), vm_call(key), network_call)


class Tally:
    examples = steps = calls = bursts = restarts = reloads = 0


class FcnetdMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        Tally.examples += 1
        self.workdir = tempfile.mkdtemp(prefix="fcnetd-faults-")
        self.model = Model(allowed={"fcbr0", "fcbr1"})
        self.host = self.callers = None
        try:
            self.host = Host(self.workdir, self.model.allowed)
            self.host.start()
            self.callers = Callers(self.host.bus.address, CONNECTIONS)
        except BaseException:
            self.teardown()
            raise

    def teardown(self):
        try:
            if self.callers is not None:
                self.callers.close()
        finally:
            if self.host is not None:
                self.host.close()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def send(self, op: Op) -> None:
        Tally.steps += 1
        Tally.calls += 1
        out = self.callers.send(op)
        why = self.model.apply(op, out)
        assert why is None, f"{op} answered {out}: {why}"

    # -- single calls ------------------------------------------------------------
    @rule(name=st.sampled_from(NAMES), bridge=bridges, conn=conns)
    def create_network(self, name, bridge, conn):
        self.send(Op("CreateNetwork", (name, bridge, 0), conn))

    @rule(name=st.sampled_from(NAMES[1:] + BRIDGES), conn=conns)
    def delete_network(self, name, conn):
        self.send(Op("DeleteNetwork", (name,), conn))

    @rule(key=keys, bridge=bridges, conn=conns)
    def attach_vm(self, key, bridge, conn):
        self.send(Op("AttachVm", (*key, bridge, 0), conn))

    @rule(key=keys, conn=conns)
    def detach_vm(self, key, conn):
        self.send(Op("DetachVm", key, conn))

    @rule(key=keys, conn=conns)
    def create_tap(self, key, conn):
        self.send(Op("CreateTap", key, conn))

    @rule(key=keys, conn=conns)
    def delete_tap(self, key, conn):
        self.send(Op("DeleteTap", key, conn))

    @rule(attach=st.booleans(), key=keys, name=st.sampled_from(("", "net-t")), bridge=bridges,
          vlan=st.integers(1, 4094), conn=conns)
    def tagged_call(self, attach, key, name, bridge, vlan, conn):
        """VlanUnsupported on this kernel, and nothing changes (the model
        adds no bridge, so one made anyway shows in the kernel check)."""
        self.send(Op("AttachVm", (*key, bridge, vlan), conn) if attach
                  else Op("CreateNetwork", (name, bridge, vlan), conn))

    # -- the daemon's life ---------------------------------------------------------
    @rule()
    def sighup(self):
        Tally.steps += 1
        Tally.reloads += 1
        self.host.sighup()

    @rule(extra=st.sets(st.sampled_from(OPTIONAL)))
    def rewrite_config(self, extra):
        """fcbr0 always allowed; fcbr1 and fcbr2 come and go. A network whose
        bridge leaves the list stays, with Status bridge-not-allowed."""
        Tally.steps += 1
        Tally.reloads += 1
        self.model.allowed = {"fcbr0", *extra}
        self.host.reconfigure(self.model.allowed)

    @rule(kill=st.booleans())
    def restart(self, kill):
        """SIGTERM or SIGKILL, then a new daemon: everything is kept, TAPs are adopted."""
        Tally.steps += 1
        Tally.restarts += 1
        self.host.restart(kill)

    # -- concurrency ---------------------------------------------------------------
    @rule(data=st.data())
    def burst(self, data):
        self._burst(data)

    @rule(data=st.data())
    def burst_during_sighup(self, data):
        """The reload's reconcile runs while the calls are in flight."""
        Tally.reloads += 1
        self.host.sighup(during=lambda: self._burst(data))

    def _burst(self, data):
        pair, single = burst_calls(self.model)
        pairs = data.draw(st.lists(pair, min_size=1, max_size=4), label="same-key pairs")
        size = data.draw(st.integers(10, 30), label="calls in the burst")
        singles = data.draw(st.lists(single, min_size=size * 2, max_size=size * 2), label="more calls")
        groups = group(self.model, [op for p in pairs for op in p] + singles, size)
        rank = data.draw(st.lists(st.integers(0, 10**6), min_size=MAX_BURST, max_size=MAX_BURST),
                         label="order sent")
        slots = sorted(((gi, oi) for gi, g in enumerate(groups) for oi in range(len(g.ops))),
                       key=lambda s: rank[s[0] * MAX_GROUP + s[1]])
        answers = dict(zip(slots, self.callers.burst([groups[gi].ops[oi] for gi, oi in slots])))
        Tally.steps += 1
        Tally.bursts += 1
        Tally.calls += len(slots)
        view, kernel = self.callers.daemon_view(), self.host.kernel_view()
        self.model = settle(self.model, groups, [[answers[(gi, oi)] for oi in range(len(g.ops))]
                                                 for gi, g in enumerate(groups)],
                            lambda m: differences(m, view, kernel))

    # -- after every step ----------------------------------------------------------
    @invariant()
    def daemon_and_kernel_match_the_model(self):
        diff = differences(self.model, self.callers.daemon_view(), self.host.kernel_view())
        assert not diff, "\n".join(diff)


def differences(m: Model, view: dict, kernel: dict) -> list[str]:
    """Where the daemon's answers (`Callers.daemon_view`) and the kernel's
    devices (`Host.kernel_view`) differ from the model."""
    out = []
    if view["listed"] != m.listed():
        out.append("ListNetworks (Bridge, Vlan, Origin, VmCount, Status, Path) differs:\n"
                   f"   daemon {view['listed']}\n   model  {m.listed()}")
    for name in m.networks:
        if view["vms"].get(name) != m.vms_of(name):
            out.append(f"GetNetwork({name}).Vms (VmId, Nic, Tap, State): daemon {view['vms'].get(name)}, "
                       f"model {m.vms_of(name)}")
        want = sorted(t for k, t in m.taps.items() if m.attachments[k] == name)
        if view["taps"].get(name) != want:
            out.append(f"GetNetwork({name}).Taps: daemon {view['taps'].get(name)}, model {want}")
    if view["tap_count"] != len(m.taps):
        out.append(f"TapCount {view['tap_count']}, model {len(m.taps)}")

    taps = kernel["taps"]
    if untagged := {n: a for n, (a, _, _) in taps.items() if not a.startswith("fcnetd:")}:
        out.append(f"vmtap/TUN devices without fcnetd's tag: {untagged}")
    if twice := {a: c for a, c in Counter(a for a, _, _ in taps.values()).items() if c > 1}:
        out.append(f"more than one TAP for a VM NIC: {twice}; kernel {taps}")
    have = {n: (a, master) for n, (a, master, _) in taps.items()}
    if have != m.kernel_taps():
        out.append(f"TAPs in the kernel (name: tag, master) differ:\n   kernel {have}\n   model  {m.kernel_taps()}")
    if down := [n for n, (_, _, up) in taps.items() if not up]:
        out.append(f"TAPs down: {down}")
    if kernel["bridges"] != m.bridges:
        out.append(f"bridges in the kernel {sorted(kernel['bridges'])}, model {sorted(m.bridges)}")
    return out
