"""Kernel tier: VLAN isolation proved with frames in a real Debian kernel.

This machine's kernel has no bridge VLAN filtering, so the tier boots
Debian's linux-image-amd64 under QEMU (TCG) with virtme-ng, once for all
scenarios, and runs guest_checks.py there. Each scenario below asserts the
checks the guest recorded; a failure prints which frame arrived where.
Run just this tier: ./run-tests tests/kernel
Only the nat scenarios (11-15), on one boot, in about half the time:
FCNETD_KERNEL_ONLY=nat ./run-tests tests/kernel

The guest loads the modules systemd/fcnetd.modules-load.conf names, as
systemd-modules-load does when a host boots (it does not run in the guest,
and fcnetd itself may not load modules: its unit has ProtectKernelModules).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.prereq import require

pytestmark = pytest.mark.kernel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCENARIOS = {
    1: "same network: broadcast and unicast arrive",
    2: "different VLANs on one bridge: nothing arrives",
    3: "untagged vs tagged on one bridge: nothing arrives",
    4: "a tagged network's TAP is in its own VLAN only, never VLAN 1",
    5: "uplink trunk carries 802.1Q tags and follows the VLANs in use",
    6: "two bridges never see each other",
    7: "kill -9 and restart keep isolation; old TAPs can be deleted",
    8: "foreign untagged ports keep working when filtering comes on",
    9: "VLAN filtering turned off behind fcnetd's back is turned on again",
    10: "a restart's reconcile grows linearly with the tagged TAPs it adopts (1,000 then 2,000 more)",
    11: "a tagged nat network beside an untagged one: each guest's DHCP lease is its own network's",
    12: "nat DHCP answers only in its own VLAN: a DISCOVER from another VLAN gets nothing",
    13: "a tagged nat network's gateway is a VLAN device; out through masquerade; no routing between",
    14: "DeleteNetwork of a tagged nat network leaves no VLAN device, address, dnsmasq or nft rule",
    15: "a reconcile puts the bridge back in a tagged nat network's VLAN and keeps the rest as it is",
    16: "a running VM moved from VLAN 10 to VLAN 20 keeps its TAP and reaches only VLAN 20",
    17: "the isolation probe: ok on a sound bridge, fails naming the VLAN a frame leaked into, ok once fixed",
    18: "an extra VLAN on a TAP, made with `bridge vlan add`, is taken off from its link event and announced",
    19: "a TAP's VLAN deleted or another PVID given behind fcnetd's back is put back from its link event",
    20: "the uplink losing a VLAN in use gets it back from its link event, and it is announced",
    21: "VLAN filtering turned off is turned on again and announced within seconds",
    22: "MoveVm's own re-plug between VLANs is never announced as drift",
    23: "Diagnose, DiagnoseVm and DiagnosePath of tagged networks read the real kernel's VLANs",
}
NAT_SCENARIOS = {11, 12, 13, 14, 15}
ONLY = os.environ.get("FCNETD_KERNEL_ONLY", "")  # "nat": just NAT_SCENARIOS
MODULES_LOAD = os.path.join(ROOT, "systemd", "fcnetd.modules-load.conf")
BOOT_TIMEOUT = 1200  # s: a hang guard for the whole guest run (about 6 min alone, 10 under load)


def _kernel() -> str | None:
    images = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
    return images[-1] if images else None


def _missing() -> list[str]:
    missing = []
    vng = shutil.which("vng") or os.path.join(os.path.dirname(sys.executable), "vng")
    if not os.path.exists(vng):
        missing.append("vng (pip install virtme-ng)")
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (apt qemu-system-x86)")
    if _kernel() is None:
        missing.append("a Debian kernel in /boot (apt linux-image-amd64)")
    if shutil.which("busybox") is None:
        missing.append("busybox (apt busybox-static; virtme-ng builds its initramfs with it)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@pytest.fixture(scope="module")
def guest_results():
    require("kernel", _missing())
    rwdir = tempfile.mkdtemp(prefix="fcnetd-kernel-")
    out = os.path.join(rwdir, "results.json")
    with open(MODULES_LOAD) as f:
        modules = [line.strip() for line in f if line.strip() and not line.startswith(("#", ";"))]
    only = f" --only {ONLY}" if ONLY else ""
    guest_cmd = (f"modprobe -a {' '.join(modules)} && ip netns add kt && "
                 f"ip netns exec kt env PYTHONPATH={ROOT} {sys.executable} "
                 f"{ROOT}/tests/kernel/guest_checks.py --netns kt --out {out}{only} > {rwdir}/guest.log 2>&1")
    vng = shutil.which("vng") or os.path.join(os.path.dirname(sys.executable), "vng")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + ":" + os.environ.get("PATH", "")}
    proc = subprocess.run([vng, "--disable-kvm", "--memory", "2G", "--cpus", "2", "--rwdir", rwdir,
                           "--run", _kernel(), "--exec", guest_cmd],
                          capture_output=True, text=True, timeout=BOOT_TIMEOUT, env=env,
                          stdin=subprocess.DEVNULL)
    log = open(os.path.join(rwdir, "guest.log")).read() if os.path.exists(os.path.join(rwdir, "guest.log")) else ""
    if not os.path.exists(out):
        pytest.fail(f"the guest wrote no results (vng exit {proc.returncode}).\nvng: {proc.stderr[-3000:]}\n"
                    f"guest log: {log[-5000:]}", pytrace=False)
    results = json.load(open(out))
    results["log"] = log
    return results


def test_guest_ran_the_real_kernel_without_error(guest_results):
    assert guest_results["kernel"].endswith("-amd64"), guest_results["kernel"]
    assert guest_results["error"] is None, guest_results["error"] + guest_results["log"][-3000:]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS), ids=[f"{k}-{v.split(':')[0]}" for k, v in sorted(SCENARIOS.items())])
def test_scenario(guest_results, scenario):
    if ONLY == "nat" and scenario not in NAT_SCENARIOS:
        pytest.skip("FCNETD_KERNEL_ONLY=nat")
    checks = [c for c in guest_results["checks"] if c["scenario"] == scenario]
    assert checks, f"scenario {scenario} ({SCENARIOS[scenario]}) recorded no checks; guest log:\n" + \
        guest_results["log"][-3000:]
    failed = [f"{c['name']}: {c['detail']}" for c in checks if not c["ok"]]
    assert not failed, f"scenario {scenario} ({SCENARIOS[scenario]}) failed:\n  " + "\n  ".join(failed)
