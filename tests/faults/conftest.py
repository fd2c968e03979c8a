"""The fault tier: the real daemon, bus and kernel (as the system tier) under
faults — kills, restarts, reloads, a full state directory, concurrency."""

import grp
import importlib.util
import os
import shutil

import pytest

from tests.prereq import require
from tests.system.conftest import bus, ns  # noqa: F401  (fixtures, shared with the system tier)

REQUIRED = ["ip", "dbus-daemon", "mount", "umount"]
_report: list[str] = []


def report(line: str) -> None:
    """A figure for the end of the run (examples and steps run, ...)."""
    _report.append(line)


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: the fault tier (kills, full disks, property tests)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/faults" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter):
    if _report:
        terminalreporter.section("fault tier")
        for line in _report:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def _prerequisites():
    problems = []
    if os.geteuid() != 0:
        problems.append("the fault tier needs root (network namespaces, TAPs, tmpfs mounts)")
    if missing := [c for c in REQUIRED if shutil.which(c) is None]:
        problems.append(f"missing commands: {', '.join(missing)}")
    try:
        grp.getgrnam("fcnet")
    except KeyError:
        problems.append("group fcnet is missing (groupadd --system fcnet, as .ci/run does)")
    if importlib.util.find_spec("hypothesis") is None:
        problems.append("python package hypothesis (pip install -e '.[test]')")
    require("faults", problems)
