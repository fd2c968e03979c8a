"""What fcnetd's state should be after a sequence of answered calls.

The model knows the API's rules (README: D-Bus API) for untagged networks on
a kernel without VLAN filtering, and is fed each call together with the
daemon's answer: `Model.apply` says whether that answer is one the rules
allow from the current state and, if so, moves the state on. Where the
contract leaves a choice (which of two applicable errors comes first), every
applicable answer is accepted and the model follows the one given.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

ERR = "org.fcnetd.Network1.Error."
PATH_PREFIX = "/org/fcnetd/Network1/network/"
TAP_RE = re.compile(r"vmtap\d{6}")


@dataclass(frozen=True)
class Op:
    """One call: method, arguments (plain values), and which connection sends it."""
    method: str
    args: tuple
    conn: int = 0

    def __str__(self) -> str:
        return f"{self.method}{self.args}@conn{self.conn}"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    value: object = None  # the reply body's first value when ok
    error: str = ""       # the D-Bus error name when not ok
    text: str = ""

    def __str__(self) -> str:
        return f"ok {self.value!r}" if self.ok else f"{self.error}: {self.text[:200]}"


@dataclass
class Net:
    bridge: str
    origin: str  # auto | manual
    path: str


@dataclass
class Model:
    allowed: set[str]
    networks: dict[str, Net] = field(default_factory=dict)            # name -> network
    attachments: dict[tuple[str, str], str] = field(default_factory=dict)  # (vm, nic) -> network name
    taps: dict[tuple[str, str], str] = field(default_factory=dict)     # (vm, nic) -> TAP name
    bridges: set[str] = field(default_factory=set)                    # bridges fcnetd has made

    def copy(self) -> "Model":
        return copy.deepcopy(self)

    def on_bridge(self, bridge: str) -> str | None:
        """The untagged network on a bridge, by name."""
        return next((n for n, net in self.networks.items() if net.bridge == bridge), None)

    def vm_count(self, name: str) -> int:
        return sum(1 for n in self.attachments.values() if n == name)

    def status(self, name: str) -> str:
        return "active" if self.networks[name].bridge in self.allowed else "bridge-not-allowed"

    # -- the rules -------------------------------------------------------------
    def apply(self, op: Op, out: Outcome) -> str | None:
        """None if `out` is an answer the rules allow for `op` now (the state
        then reflects it); otherwise why not."""
        return getattr(self, "_" + op.method)(out, *op.args)

    @staticmethod
    def _errors(out: Outcome, applicable: dict[str, bool]) -> str | None:
        """An error is expected iff one of the conditions holds; it must be one of those."""
        wanted = {name for name, holds in applicable.items() if holds}
        if not wanted:
            return None if out.ok else f"expected success, got {out}"
        if out.ok:
            return f"expected one of {sorted(wanted)}, got {out}"
        if out.error not in {ERR + w for w in wanted}:
            return f"expected one of {sorted(wanted)}, got {out}"
        return ""  # an allowed error: nothing changes

    def _CreateNetwork(self, out: Outcome, name: str, bridge: str, vlan: int) -> str | None:
        final = name or (f"{bridge}-vlan-{vlan}" if vlan else bridge)
        why = self._errors(out, {
            "BridgeNotAllowed": bridge not in self.allowed,
            "NetworkExists": final in self.networks or (not vlan and self.on_bridge(bridge) is not None),
            "VlanUnsupported": bool(vlan),
        })
        if why is not None:
            return why or None
        if not (isinstance(out.value, str) and out.value.startswith(PATH_PREFIX)):
            return f"CreateNetwork answered {out.value!r}, not a network path"
        self.networks[final] = Net(bridge, "manual", out.value)
        self.bridges.add(bridge)
        return None

    def _DeleteNetwork(self, out: Outcome, name: str) -> str | None:
        count = self.vm_count(name) if name in self.networks else 0
        why = self._errors(out, {"NoSuchNetwork": name not in self.networks, "NetworkInUse": count > 0})
        if why == "" and out.error == ERR + "NetworkInUse":
            text = f"Network has {count} attached VM{'s' if count != 1 else ''}. Remove VMs first."
            if out.text != text:
                return f"NetworkInUse said {out.text!r}, expected {text!r}"
        if why is not None:
            return why or None
        del self.networks[name]  # the bridge stays
        return None

    def _AttachVm(self, out: Outcome, vm: str, nic: str, bridge: str, vlan: int) -> str | None:
        existing = None if vlan else self.on_bridge(bridge)
        attached = (vm, nic) in self.attachments
        if existing is not None and bridge not in self.allowed and not attached and not out.ok:
            # The contract does not say whether a network already recorded on a
            # bridge since taken off the allow-list still takes attachments.
            return None if out.error == ERR + "BridgeNotAllowed" else f"unexpected {out}"
        why = self._errors(out, {
            "NicAttached": attached,
            "VlanUnsupported": bool(vlan),
            "BridgeNotAllowed": bridge not in self.allowed and existing is None,
            "NetworkExists": existing is None and not vlan and bridge in self.networks,
        })
        if why is not None:
            return why or None
        if existing is None:
            existing = bridge
            self.networks[bridge] = Net(bridge, "auto", out.value)
            self.bridges.add(bridge)
        if out.value != self.networks[existing].path:
            return f"AttachVm answered {out.value!r}, the network's path is {self.networks[existing].path!r}"
        self.attachments[(vm, nic)] = existing
        return None

    def _DetachVm(self, out: Outcome, vm: str, nic: str) -> str | None:
        why = self._errors(out, {"NoSuchVm": (vm, nic) not in self.attachments})
        if why is not None:
            return why or None
        del self.attachments[(vm, nic)]
        self.taps.pop((vm, nic), None)  # detaching destroys the TAP
        return None

    def _CreateTap(self, out: Outcome, vm: str, nic: str) -> str | None:
        net = self.attachments.get((vm, nic))
        running = self.taps.get((vm, nic))
        why = self._errors(out, {
            "NoSuchVm": net is None,
            "BridgeNotAllowed": net is not None and running is None
            and self.networks[net].bridge not in self.allowed,
        })
        if why is not None:
            return why or None
        if running is not None:
            return None if out.value == running else f"a retried CreateTap answered {out.value!r}, not {running!r}"
        if not (isinstance(out.value, str) and TAP_RE.fullmatch(out.value)):
            return f"CreateTap answered {out.value!r}, not a vmtapNNNNNN name"
        if out.value in self.taps.values():
            return f"CreateTap answered {out.value!r}, which another VM NIC's TAP has"
        self.taps[(vm, nic)] = out.value
        return None

    def _DeleteTap(self, out: Outcome, vm: str, nic: str) -> str | None:
        if not out.ok:
            return f"DeleteTap is idempotent, got {out}"
        self.taps.pop((vm, nic), None)
        return None

    # -- what the daemon and the kernel should show ---------------------------
    def listed(self) -> dict[str, tuple]:
        """ListNetworks, by name: (Bridge, Vlan, Origin, VmCount, Status, Path)."""
        return {name: (net.bridge, 0, net.origin, self.vm_count(name), self.status(name), net.path)
                for name, net in self.networks.items()}

    def vms_of(self, name: str) -> set[tuple]:
        """GetNetwork's Vms: (VmId, Nic, Tap, State)."""
        return {(vm, nic, self.taps.get((vm, nic), ""), "running" if (vm, nic) in self.taps else "stopped")
                for (vm, nic), n in self.attachments.items() if n == name}

    def kernel_taps(self) -> dict[str, tuple[str, str]]:
        """TAP name -> (ifalias, master bridge)."""
        return {tap: (f"fcnetd:{vm}:{nic}", self.networks[self.attachments[(vm, nic)]].bridge)
                for (vm, nic), tap in self.taps.items()}
