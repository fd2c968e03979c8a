"""dnsmasq.Dnsmasq's supervision, with a stand-in for dnsmasq (a small
script that writes its pidfile and logs each SIGHUP with the hosts file it
would re-read): starting, one SIGHUP for a burst of lease changes, restart
of a killed process without a zombie left, stop, a failed start."""

import asyncio
import os
import pwd
import signal
import sys
import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from fcnetd import dnsmasq
from fcnetd.errors import Internal

FAKE = f"""#!{sys.executable}
import os, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
log = os.environ["FAKE_LOG"]
if os.environ.get("FAKE_FAIL"):
    sys.exit(3)
def hup(*_):
    with open(args["dhcp-hostsfile"]) as f, open(log, "a") as out:
        out.write("hup " + f.read().replace("\\n", ";") + "\\n")
signal.signal(signal.SIGHUP, hup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
with open(args["pid-file"], "w") as f:
    f.write(f"{{os.getpid()}}\\n")
while True:
    time.sleep(60)
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "dnsmasq"
    script.write_text(FAKE)
    script.chmod(0o755)
    monkeypatch.setattr(dnsmasq, "DNSMASQ", str(script))
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr(dnsmasq, "user", lambda: (me, "root"))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "hups.log"))
    (tmp_path / "state").mkdir()
    return tmp_path


def server(tmp: "os.PathLike") -> dnsmasq.Dnsmasq:
    state = os.path.join(tmp, "state")
    return dnsmasq.ChildDnsmasq(state, os.path.join(state, "nat"), "net-1", "fcbr0", "fcbr0",
                           IPv4Network("10.213.0.0/24"), IPv4Address("10.213.0.1"))


async def until(predicate, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def hups(tmp) -> list[str]:
    try:
        with open(os.path.join(tmp, "hups.log")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def state(pid: int) -> str:
    """The process's state letter (Z: a zombie), or "" once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def test_a_burst_of_lease_changes_is_one_write_and_one_sighup(fake):
    async def go():
        s = server(fake)
        await s.start({})
        with open(s.hosts_file) as f:
            assert f.read() == ""
        burst = [{"02:00:00:00:00:01": "10.213.0.5"},
                 {"02:00:00:00:00:01": "10.213.0.5", "02:00:00:00:00:02": "10.213.0.6"},
                 {"02:00:00:00:00:02": "10.213.0.6"}]
        await asyncio.gather(*(s.update(hosts) for hosts in burst))
        await until(lambda: hups(fake), "the SIGHUP")
        await s.update({"02:00:00:00:00:02": "10.213.0.6"})  # no change: no SIGHUP
        await s.stop()
        return s
    s = asyncio.run(go())
    assert hups(fake) == ["hup 02:00:00:00:00:02,10.213.0.6;"]
    assert not os.path.exists(s.pid_file)


def test_a_killed_dnsmasq_is_started_again_and_reaped(fake):
    async def go():
        s = server(fake)
        await s.start({"02:00:00:00:00:01": "10.213.0.5"})
        old = s.pid
        os.kill(old, signal.SIGKILL)
        await until(lambda: s.pid not in (None, old) and dnsmasq.read_pid(s.pid_file) == s.pid, "a new process")
        assert state(old) == "", f"the killed process is left as a zombie ({state(old)})"
        assert s.restarts == 1
        new = s.pid
        await s.stop()
        assert state(new) == ""
    asyncio.run(go())


def test_a_failed_start_says_so_and_leaves_nothing_running(fake, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")

    async def go():
        s = server(fake)
        with pytest.raises(Internal, match="dnsmasq for network fcbr0 exited at start with status 3"):
            await s.start({})
        assert s.pid is None
    asyncio.run(go())


def test_after_stop_a_late_update_writes_no_file(fake):
    async def go():
        s = server(fake)
        await s.start({})
        await s.stop()
        s.remove_files()
        await s.update({"02:00:00:00:00:01": "10.213.0.5"})
        return s
    s = asyncio.run(go())
    assert os.listdir(s.directory) == []


def test_reap_ends_the_process_of_a_gone_network_and_removes_its_files(fake, monkeypatch):
    # reap knows fcnetd's dnsmasq by its argv; the stand-in's argv[0] is the
    # interpreter, so it is shown under dnsmasq's name.
    real = dnsmasq.cmdline
    monkeypatch.setattr(dnsmasq, "cmdline", lambda pid: ["dnsmasq", *real(pid)[1:]])

    async def go():
        s = server(fake)
        await s.start({})
        pid = s.pid
        s._supervisor.cancel()  # as after a daemon crash: nobody supervises it
        assert await dnsmasq.reap(s.directory, keep=set()) == ["net-1"]
        await until(lambda: state(pid) in ("", "Z"), "its exit")
        os.waitpid(pid, 0)  # the test's own child; a killed daemon's orphan is init's to reap
        return s
    s = asyncio.run(go())
    assert os.listdir(s.directory) == []
