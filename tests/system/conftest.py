import grp
import os
import shutil

import pytest

from fcnetd.registry import read_registry
from fcnetd.testbus import PrivateBus
from tests.prereq import require

from .harness import Client, Daemon, Netns

REQUIRED = ["ip", "dbus-daemon", "busctl", "setpriv", "nft", "dnsmasq", "tcpdump", "busybox"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/system" in str(item.fspath):
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session", autouse=True)
def _prerequisites():
    missing = [c for c in REQUIRED if shutil.which(c) is None]
    problems = []
    if os.geteuid() != 0:
        problems.append("the system tier needs root (network namespaces, TAPs)")
    if missing:
        problems.append(f"missing commands: {', '.join(missing)}")
    try:
        grp.getgrnam("fcnet")
    except KeyError:
        problems.append("group fcnet is missing (groupadd --system fcnet, as .ci/run does)")
    require("system", problems)


@pytest.fixture
def ns():
    n = Netns()
    yield n
    n.delete()


@pytest.fixture
def bus():
    b = PrivateBus().start()
    yield b
    b.stop()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "fcnetd.toml"
    path.write_text('[daemon]\nhost = "node1"\n\n[bridges.fcbr0]\ncreate = true\n\n[bridges.fcbr1]\ncreate = true\n')
    return str(path)


@pytest.fixture
def daemon(ns, bus, tmp_path, config):
    d = Daemon(ns, bus, str(tmp_path / "state"), config).start()
    yield d
    d.stop()


@pytest.fixture
def client(bus):
    return Client(bus.address)


@pytest.fixture
def stored(daemon, client):
    """A known state (a bridge network with a VM); each test that uses it
    proves its refused call left the registry and the list as they were."""
    client.call("CreateNetwork", "ssqa{sv}", "", "fcbr0", 0, {})
    client.call("AttachVm", "ssqa{sv}", "vm-1", "fcbr0", 0, {})
    before = read_registry(daemon.state_dir)[0]
    yield
    after = read_registry(daemon.state_dir)[0]
    assert (after.networks, after.attachments) == (before.networks, before.attachments), \
        "a refused call changed the registry"
    assert [n["Name"] for n in client.call("ListNetworks", "a{sv}", {})[0]] == ["fcbr0"]
