"""Scenario 23, run by guest_checks.py inside the guest with fcnetd
running: Diagnose, DiagnoseVm and DiagnosePath of tagged networks read a
real kernel's VLANs (this host's kernel has no VLAN filtering, so the
system tier sees only untagged networks). Each check's logic, fail and
hint included, is the unit tier's (tests/unit/test_diagnose.py); what only
a VLAN-filtering kernel can show is the facts: the bridge's filtering, the
TAP's one VLAN and the uplink's tagged membership, read back as ok and
naming the VLAN. (A break of them is repaired within a second and
announced as drift, scenarios 18-21, so it cannot be held for a check.)"""

from __future__ import annotations

from fcnetd.bus import unwrap


def _checks(client, method: str, signature: str, *args) -> dict[str, dict]:
    (rows,) = client.call(method, signature, *args)
    return {r["Check"]: r for r in unwrap(rows)}


def diagnose_scenarios(report, client) -> None:
    for vm, vlan in (("dg10", 10), ("dg20", 20)):
        client.call("AttachVm", "ssqa{sv}", vm, "fcbr0", vlan, {})
        client.call("CreateTap", "ssa{sv}", vm, "eth0", {})
    try:
        net = _checks(client, "Diagnose", "s", "fcbr0-vlan-10")
        for check, naming in (("bridge.vlan-filtering", "fcbr0"), ("uplink.vlan", "VLAN 10"),
                              ("uplink.present", "upl0"), ("uplink.carrier", "upl0")):
            row = net.get(check, {})
            report.check(23, f"Diagnose fcbr0-vlan-10: {check} ok, naming {naming}",
                         row.get("Result") == "ok" and naming in row.get("Detail", ""), f"{row}")
        vm = _checks(client, "DiagnoseVm", "ss", "dg10", "eth0")
        row = vm.get("tap.vlan", {})
        report.check(23, "DiagnoseVm dg10: tap.vlan ok, in VLAN 10 only",
                     row.get("Result") == "ok" and "VLAN 10 only" in row.get("Detail", ""), f"{row}")
        report.check(23, "DiagnoseVm dg10: no check fails",
                     not [c for c, r in vm.items() if r["Result"] == "fail"], f"{vm}")
        path = _checks(client, "DiagnosePath", "ss", "dg10", "dg20")
        row = path.get("path.network", {})
        report.check(23, "DiagnosePath dg10 dg20: VLANs 10 and 20 are isolated by design",
                     row.get("Result") == "fail" and "VLAN" in row.get("Detail", ""), f"{row}")
    finally:
        for vm in ("dg10", "dg20"):
            client.call("DetachVm", "ss", vm, "eth0")
