"""The systemd tier's one guest: built (cached), booted once for the whole
tier, with fcnetd installed by the README's own commands.

Run just this tier: ./run-tests tests/systemd
The boot and install times are printed at the end of the tier; the guest's
journal and console are kept in artifacts/systemd/."""

from __future__ import annotations

import configparser
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.prereq import require

from .guest import INSTALL_MOUNT, ROOT, Guest, GuestError

CACHE = os.environ.get("FCNETD_TEST_CACHE", "/var/cache/fcnetd-tests")
BOOT_DEADLINE = 300          # TCG boot to the agent: about 30 s measured; generous for a loaded CI box
INSTALL_DEADLINE = 600       # pip under TCG is the slow step
FIRST_USER_PASSWORD = "correct-horse-battery"
TIMINGS: dict[str, float] = {}
FIGURES: dict[str, str] = {}   # filled by the tests: scores, the watchdog's restart time


def _kernel() -> tuple[str, str] | None:
    kernels = sorted(glob.glob("/boot/vmlinuz-*-amd64"))
    if not kernels:
        return None
    kver = kernels[-1].removeprefix("/boot/vmlinuz-")
    initrd = f"/boot/initrd.img-{kver}"
    if not os.path.exists(initrd) or not os.path.isdir(f"/usr/lib/modules/{kver}"):
        return None
    return kernels[-1], initrd


def _missing() -> list[str]:
    missing = []
    for tool, pkg in (("qemu-system-x86_64", "qemu-system-x86"), ("debootstrap", "debootstrap"),
                      ("mkfs.ext4", "e2fsprogs")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt {pkg})")
    if _kernel() is None:
        missing.append("a Debian kernel, its initrd and its modules (apt linux-image-amd64)")
    if os.geteuid() != 0:
        missing.append("root (debootstrap and mkfs.ext4 -d keep file ownership)")
    return missing


def readme_install_blocks() -> list[str]:
    """The ```sh blocks of the README's "Install on a systemd host" section,
    exactly as written."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = re.search(r"^## Install on a systemd host\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Install on a systemd host' section"
    blocks = re.findall(r"^```sh\n(.*?)^```", section.group(1), re.S | re.M)
    assert blocks, "the README's install section has no ```sh block"
    return blocks


def _requirements() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    reqs = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    # pip's build isolation needs the build backend too (pyproject.toml)
    return reqs + ["setuptools>=61", "wheel"]


def _wheelhouse() -> str:
    """Wheels of fcnetd's dependencies for the offline guest, built once per
    requirement list. pip wheel on this host picks each package's binary
    wheel for CPython 3.11 on x86_64 glibc, which the guest's Debian 3.11
    takes; sdist-only packages come out as pure-Python wheels."""
    # Binary wheels are picked for this Python; the guest runs Debian 12's 3.11.
    if sys.version_info[:2] != (3, 11):
        pytest.fail(f"the guest's wheelhouse is built with this Python ({sys.version.split()[0]}), "
                    "which must be 3.11 like Debian 12's", pytrace=False)
    reqs = _requirements()
    key = hashlib.sha256("\n".join(reqs + [sys.version.split()[0][:4]]).encode()).hexdigest()[:16]
    house = os.path.join(CACHE, f"wheelhouse-{key}")
    if not os.path.isdir(house):
        tmp = tempfile.mkdtemp(prefix="wheelhouse.", dir=CACHE)
        p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", tmp, *reqs],
                           capture_output=True, text=True)
        if p.returncode:
            shutil.rmtree(tmp)
            pytest.fail(f"pip wheel for the guest's wheelhouse failed:\n{p.stderr[-3000:]}", pytrace=False)
        os.rename(tmp, house)
    return house


def _checkout_files() -> list[str]:
    """The files a clone of this repository has (tracked and new, not ignored):
    what an admin's `git clone` would hold, as the working tree has it now."""
    p = subprocess.run(["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard", "-z"],
                       capture_output=True, text=True, check=True)
    return [f for f in p.stdout.split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]


def _install_disk(workdir: str, wheelhouse: str) -> str:
    tree = os.path.join(workdir, "install")
    for rel in _checkout_files():
        dst = os.path.join(tree, "fcnetd", rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), dst)
    shutil.copytree(wheelhouse, os.path.join(tree, "wheelhouse"))
    image = os.path.join(workdir, "install.img")
    with open(image, "wb") as f:
        f.truncate(256 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tree, image], check=True)
    return image


@pytest.fixture(scope="session")
def booted():
    """The guest, booted, its agent answering, the install disk mounted."""
    require("systemd", _missing())
    os.makedirs(CACHE, exist_ok=True)
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(ROOT, "tools", "systemd-image.sh"), CACHE], capture_output=True, text=True)
    if p.returncode:
        pytest.fail(f"tools/systemd-image.sh failed:\n{p.stderr[-3000:]}", pytrace=False)
    image = p.stdout.strip().splitlines()[-1]
    wheelhouse = _wheelhouse()
    TIMINGS["image and wheelhouse (cache)"] = time.monotonic() - t0
    workdir = tempfile.mkdtemp(prefix="fcnetd-systemd-")
    kernel, initrd = _kernel()
    guest = Guest(workdir, image, _install_disk(workdir, wheelhouse), kernel, initrd)
    try:
        TIMINGS["boot to agent"] = guest.wait_agent(BOOT_DEADLINE)
        guest.ok(f"mkdir -p {INSTALL_MOUNT} && mount /dev/vdb {INSTALL_MOUNT}")
        # The boot is done for the tests once systemd says so (degraded counts:
        # a unit of the base image failing is not this tier's business).
        r = guest.run("systemctl is-system-running --wait", timeout=BOOT_DEADLINE)
        TIMINGS["boot to system running"] = time.monotonic() - guest.started
        assert r.stdout.strip() in ("running", "degraded"), str(r)
        yield guest
    except GuestError as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        _save_artifacts(guest)
        guest.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _save_artifacts(guest: Guest) -> None:
    """The guest's journal and serial console, for whoever reads a failure."""
    out = os.path.join(ROOT, "artifacts", "systemd")
    os.makedirs(out, exist_ok=True)
    if os.path.exists(guest.console):
        shutil.copy(guest.console, os.path.join(out, "console.log"))
    try:
        journal = guest.run("journalctl -b --no-pager -o short-monotonic", timeout=60).stdout
    except GuestError as e:
        journal = f"(no journal: {e})"
    with open(os.path.join(out, "journal.txt"), "w") as f:
        f.write(journal)


@pytest.fixture(scope="session")
def installed(booted):
    """fcnetd installed by running the README's install block in the guest,
    verbatim, from a copy of this checkout; pip reads the wheelhouse through
    its environment (the guest is offline), so the text is what an admin with
    network types. Then the web UI's first user, by the README's own path."""
    g = booted
    install, *rest = readme_install_blocks()
    # The README's last step adds the admin's VM launcher user to fcnet.
    g.ok("useradd --create-home launcher")
    t0 = time.monotonic()
    env = (f"export PIP_NO_INDEX=1 PIP_FIND_LINKS={INSTALL_MOUNT}/wheelhouse "
           "PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive\n")
    r = g.run(["bash", "-e", "-x", "-c", env + f"cd {INSTALL_MOUNT}/fcnetd\n" + install],
              timeout=INSTALL_DEADLINE)
    TIMINGS["README install block"] = time.monotonic() - t0
    assert r.ok, f"the README's install block failed in the guest:\n{r}"
    for block in rest:
        r = g.run(["bash", "-e", "-x", "-c", f"cd {INSTALL_MOUNT}/fcnetd\n" + block], timeout=120,
                  input=f"{FIRST_USER_PASSWORD}\n{FIRST_USER_PASSWORD}\n")
        assert r.ok, f"the README's install section (after the install block) failed in the guest:\n{r}"
    return g


def pytest_terminal_summary(terminalreporter):
    """The tier's figures in every run's summary: boot, install, the
    watchdog's restart and both exposure scores."""
    if TIMINGS or FIGURES:
        terminalreporter.write_sep("-", "systemd tier")
        for name, value in {**{k: f"{v:.1f} s" for k, v in TIMINGS.items()}, **FIGURES}.items():
            terminalreporter.write_line(f"{name}: {value}")


# The tier's fcnetd.toml: a trunk uplink (one end of a veth pair, as a host's
# NIC would be), a second bridge, and a bridge for the nat network.
CONFIG = """\
[bridges.fcbr0]
create = true
uplink = "uplink0"

[bridges.fcbr1]
create = true

[bridges.fcbr2]
create = true
"""


def bridges(g) -> str:
    return g.ok("busctl --system call org.fcnetd.Network1 /org/fcnetd/Network1 "
                "org.fcnetd.Network1.Manager ListBridges")


@pytest.fixture(scope="session")
def configured(installed):
    """fcnetd running on the tier's config (written, then reloaded as an
    admin would)."""
    g = installed
    g.ok("ip link add uplink0 type veth peer name uplink0p && ip link set uplink0 up && ip link set uplink0p up")
    g.ok(["sh", "-c", 'cat > /etc/fcnetd/fcnetd.toml', "fcnetd.toml"], input=CONFIG)
    g.ok("systemctl reload fcnetd")
    g.wait_for("busctl --system call org.fcnetd.Network1 /org/fcnetd/Network1 org.fcnetd.Network1.Manager "
               "ListBridges | grep -q fcbr2", 30, "the reloaded config allowing fcbr2")
    return g
