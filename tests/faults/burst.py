"""Concurrent bursts whose answers can be checked against the model.

Calls are grouped so that calls of different groups commute: each call
claims what it reads ("r") and changes ("w") — a VM NIC, a bridge's network,
a network name — and a call joins a group only if it conflicts with that one
group alone. A group (at most MAX_GROUP calls) is then checked in every
order: its answers must be those of SOME serial order, and the state the
daemon and the kernel show must be the end state of such orders. Dropping calls that would tie groups together keeps
the check exact without enumerating the orders of a whole burst."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations, product

from .model import Model, Op, Outcome

MAX_GROUP = 3


def claims(model: Model, op: Op) -> dict[tuple, str]:
    """What `op` reads and writes, judged from the state before the burst."""
    a = op.args
    if op.method == "AttachVm":
        vm, nic, bridge, _ = a
        # attaching to an existing network only bumps its VM count (which
        # commutes); auto-creating one takes the bridge and the auto name
        mode = "r" if model.on_bridge(bridge) is not None else "w"
        return {("vm", (vm, nic)): "w", ("net", bridge): mode, ("name", bridge): mode}
    if op.method in ("DetachVm", "CreateTap", "DeleteTap"):
        out = {("vm", a): "w"}
        if op.method != "DeleteTap" and a in model.attachments:
            out[("net", model.networks[model.attachments[a]].bridge)] = "r"
        return out
    if op.method == "CreateNetwork":
        name, bridge, vlan = a
        return {("net", bridge): "w", ("name", name or bridge): "w"}
    if op.method == "DeleteNetwork":
        out = {("name", a[0]): "w"}
        if a[0] in model.networks:
            out[("net", model.networks[a[0]].bridge)] = "w"
        return out
    raise ValueError(op.method)


def _conflict(x: dict, y: dict) -> bool:
    return any(k in y and "w" in (mode, y[k]) for k, mode in x.items())


@dataclass
class Group:
    ops: list[Op] = field(default_factory=list)
    claims: dict = field(default_factory=dict)

    def add(self, op: Op, wants: dict) -> None:
        self.ops.append(op)
        for k, mode in wants.items():
            self.claims[k] = "w" if "w" in (mode, self.claims.get(k, "r")) else "r"


def group(model: Model, candidates: list[Op], size: int) -> list[Group]:
    """Up to `size` of the candidates, in independent groups."""
    groups: list[Group] = []
    taken = 0
    for op in candidates:
        if taken == size:
            break
        wants = claims(model, op)
        hits = [g for g in groups if _conflict(g.claims, wants)]
        if not hits:
            groups.append(Group())
            hits = groups[-1:]
        if len(hits) == 1 and len(hits[0].ops) < MAX_GROUP:
            hits[0].add(op, wants)
            taken += 1
    return groups


def explanations(model: Model, grp: Group, outcomes: list[Outcome]) -> list[tuple[int, ...]]:
    """The serial orders of the group that explain every answer, one per
    distinct end state (answers alone may not tell a TAP deleted before its
    re-creation from one deleted after). AssertionError if none does."""
    found, ends, tried = [], [], []
    for order in permutations(range(len(grp.ops))):
        m = model.copy()
        for i in order:
            why = m.apply(grp.ops[i], outcomes[i])
            if why is not None:
                tried.append(f"  order {[str(grp.ops[j]) for j in order]}: at {grp.ops[i]}: {why}")
                break
        else:
            if m not in ends:
                found.append(order)
                ends.append(m)
    if not found:
        answers = "\n".join(f"  {op} -> {out}" for op, out in zip(grp.ops, outcomes))
        raise AssertionError("concurrent calls answered in a way no serial order explains:\n"
                             + answers + "\n" + "\n".join(tried))
    return found


def settle(model: Model, groups: list[Group], outcomes: list[list[Outcome]], differences) -> Model:
    """The state after the burst: a serial order per group that explains its
    answers and, all groups together, what the daemon and kernel now show
    (`differences(model)` lists what does not match)."""
    options = [explanations(model, g, outs) for g, outs in zip(groups, outcomes)]
    first = None
    for combo in product(*options):
        m = model.copy()
        for g, order, outs in zip(groups, combo, outcomes):
            for i in order:
                m.apply(g.ops[i], outs[i])
        diff = differences(m)
        if not diff:
            return m
        first = first or diff
    calls = "\n".join(f"  {op} -> {out}" for g, outs in zip(groups, outcomes) for op, out in zip(g.ops, outs))
    raise AssertionError("after a burst the daemon or the kernel shows a state that no serial order of "
                         "the answered calls leads to:\n" + calls + "\nagainst the first such order:\n  "
                         + "\n  ".join(first))
