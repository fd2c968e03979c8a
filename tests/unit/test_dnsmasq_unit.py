"""A nat network's dnsmasq as a systemd unit (dnsmasq_unit.UnitDnsmasq),
against a stand-in for systemd's D-Bus API that keeps each unit's state
and main pid; and systemd1.Systemd's job tracking, where the JobRemoved
signal may be dispatched before the StartUnit reply is acted on. The real
systemd is the systemd tier's (tests/systemd/test_3_operations.py)."""

import asyncio
import functools
import os
import pwd
import signal
from ipaddress import IPv4Address, IPv4Network

import pytest

from fcnetd import dnsmasq, dnsmasq_unit, systemd1
from fcnetd.bus import Message, MessageType
from fcnetd.errors import Internal


def synchronous(test):
    """An async test run to its end in a loop of its own."""
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))
    return run


class FakeSystemd:
    """Units by name: (ActiveState, MainPID, NRestarts); what was asked, in order."""

    def __init__(self, fail_start: bool = False):
        self.units: dict[str, tuple[str, int, int]] = {}
        self.asked: list[tuple] = []
        self.fail_start = fail_start
        self.watched: dict[str, object] = {}
        self._pid = 1000

    def _up(self, unit: str) -> None:
        self._pid += 1
        _, _, restarts = self.units.get(unit, ("inactive", 0, 0))
        self.units[unit] = ("active", self._pid, restarts)

    async def start(self, unit):
        self.asked.append(("start", unit))
        if self.fail_start:
            raise systemd1.UnitFailed(f"StartUnit {unit} ended with result 'failed'")
        self._up(unit)

    async def restart(self, unit):
        self.asked.append(("restart", unit))
        self._up(unit)

    async def stop(self, unit):
        self.asked.append(("stop", unit))
        self.units[unit] = ("inactive", 0, self.units.get(unit, ("", 0, 0))[2])

    async def signal(self, unit, signo):
        self.asked.append(("signal", unit, signo))
        return self.units.get(unit, ("inactive", 0, 0))[0] == "active"

    async def state(self, unit):
        return self.units.get(unit, ("inactive", 0, 0))

    async def watch(self, unit, changed):
        self.watched[unit] = changed

    def unwatch(self, unit):
        self.watched.pop(unit, None)

    def died_and_restarted(self, unit) -> None:
        """What Restart=on-failure does: a new main pid, one more restart."""
        self._pid += 1
        self.units[unit] = ("active", self._pid, self.units[unit][2] + 1)
        self.watched[unit]()


@pytest.fixture
def state(tmp_path, monkeypatch):
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr(dnsmasq, "user", lambda: (me, "root"))
    (tmp_path / "state").mkdir()
    return str(tmp_path / "state")


def server(systemd, state: str) -> dnsmasq_unit.UnitDnsmasq:
    return dnsmasq_unit.UnitDnsmasq(systemd, state, os.path.join(state, "nat"), "net-1", "natnet", "fcbr0",
                                    IPv4Network("10.213.0.0/24"), IPv4Address("10.213.0.1"))


UNIT = "fcnetd-dnsmasq@net-1.service"


def hosts_file(state: str) -> str:
    with open(os.path.join(state, "nat", "net-1.hosts")) as f:
        return f.read()


@synchronous
async def test_start_writes_the_conf_and_hosts_files_then_starts_the_unit(state):
    systemd = FakeSystemd()
    s = server(systemd, state)
    await s.start({"02:00:00:00:00:01": "10.213.0.2"})
    assert systemd.asked == [("start", UNIT)]
    with open(os.path.join(state, "nat", "net-1.conf")) as f:
        conf = f.read()
    assert "interface=fcbr0\n" in conf and "dhcp-hostsfile=" in conf
    assert hosts_file(state) == "02:00:00:00:00:01,10.213.0.2\n"
    assert await s.live_pid() == systemd.units[UNIT][1]


@synchronous
async def test_a_lease_change_is_a_sighup_through_systemd_and_stop_stops_the_unit(state):
    systemd = FakeSystemd()
    s = server(systemd, state)
    await s.start({})
    await asyncio.gather(*(s.update({f"02:00:00:00:00:0{i}": f"10.213.0.{i + 1}"}) for i in range(1, 4)))
    assert systemd.asked[1:] == [("signal", UNIT, signal.SIGHUP)], "one SIGHUP for the burst"
    await s.stop()
    assert systemd.asked[-1] == ("stop", UNIT) and UNIT not in systemd.watched
    await s.update({"02:00:00:00:00:09": "10.213.0.9"})  # after stop: answers, tells nobody
    assert systemd.asked[-1] == ("stop", UNIT)


@synchronous
async def test_a_running_unit_with_the_same_conf_is_adopted_and_told_again(state):
    systemd = FakeSystemd()
    await server(systemd, state).start({})
    again = server(FakeSystemd(), state)
    again.systemd.units = dict(systemd.units)
    assert await again.adopt({"02:00:00:00:00:01": "10.213.0.2"}) == "adopted"
    assert again.systemd.asked == [("signal", UNIT, signal.SIGHUP)], "re-read: its memory is unknown"


@synchronous
async def test_a_unit_running_other_settings_is_restarted_and_none_running_is_not_adopted(state):
    systemd = FakeSystemd()
    await server(systemd, state).start({})
    with open(os.path.join(state, "nat", "net-1.conf"), "a") as f:
        f.write("dhcp-range=10.99.0.0,static\n")  # what an older fcnetd wrote
    s = server(systemd, state)
    assert await s.adopt({}) == "replaced"
    assert systemd.asked[-1] == ("restart", UNIT)
    assert "10.99" not in open(os.path.join(state, "nat", "net-1.conf")).read()
    await systemd.stop(UNIT)
    assert await server(systemd, state).adopt({}) == ""


@synchronous
async def test_a_restart_by_systemd_is_counted_and_swept(state):
    """dnsmasq loaded the leases file as it was: a lease a detach released
    while it was down is released again."""
    systemd = FakeSystemd()
    s = server(systemd, state)
    await s.start({"02:00:00:00:00:01": "10.213.0.2"})
    sent = []
    s._release = lambda leases: sent.extend(leases)
    with open(s.lease_file, "w") as f:
        f.write("1795916260 02:00:00:00:00:07 10.213.0.7 * *\n")
    systemd.died_and_restarted(UNIT)
    for _ in range(100):
        if sent:
            break
        await asyncio.sleep(0.01)
    assert sent == [("02:00:00:00:00:07", "10.213.0.7")]
    assert s.restarts == 1
    assert ("signal", UNIT, signal.SIGHUP) in systemd.asked


@synchronous
async def test_a_failed_start_says_which_network_and_unit_stops_it_and_is_retried(state):
    """Stopped: systemd's Restart=on-failure would go on starting it for a
    network whose creation is undone. retry() starts it again later."""
    systemd = FakeSystemd(fail_start=True)
    s = server(systemd, state)
    with pytest.raises(Internal, match="natnet.*StartUnit fcnetd-dnsmasq@net-1.service ended with result 'failed'"):
        await s.start({})
    assert systemd.asked == [("start", UNIT), ("stop", UNIT)]
    systemd.fail_start = False
    s.retry()
    for _ in range(300):
        if systemd.units.get(UNIT, ("",))[0] == "active":
            break
        await asyncio.sleep(0.01)
    assert systemd.asked[-1] == ("start", UNIT) and systemd.units[UNIT][0] == "active"
    await s.stop()


# -- systemd1.Systemd: jobs ---------------------------------------------------------
def job_removed(job: str, unit: str, result: str) -> Message:
    return Message(message_type=MessageType.SIGNAL, sender=":1.1", path=systemd1.MANAGER_PATH,
                   interface=systemd1.MANAGER, member="JobRemoved", signature="uoss", body=[7, job, unit, result])


@pytest.mark.parametrize("early", [True, False], ids=["signal-before-the-reply-is-acted-on", "signal-after"])
@synchronous
async def test_a_job_ends_with_its_jobremoved_whenever_it_is_dispatched(monkeypatch, early):
    sd = systemd1.Systemd(conn=None, prefix="fcnetd-dnsmasq@")

    async def call(conn, dest, path, iface, member, sig="", body=None):
        job = "/org/freedesktop/systemd1/job/7"
        if early:
            sd._on_message(job_removed(job, UNIT, "done"))
        else:
            asyncio.get_running_loop().call_soon(sd._on_message, job_removed(job, UNIT, "done"))
        return [job]

    monkeypatch.setattr(systemd1, "call", call)
    await asyncio.wait_for(sd.start(UNIT), 5)


@synchronous
async def test_a_job_that_failed_is_an_error_naming_the_unit_and_the_journal(monkeypatch):
    sd = systemd1.Systemd(conn=None, prefix="fcnetd-dnsmasq@")

    async def call(conn, dest, path, iface, member, sig="", body=None):
        asyncio.get_running_loop().call_soon(sd._on_message, job_removed("/j/8", UNIT, "failed"))
        return ["/j/8"]

    monkeypatch.setattr(systemd1, "call", call)
    with pytest.raises(systemd1.UnitFailed, match=r"StartUnit .*'failed' \(journalctl -u fcnetd-dnsmasq@net-1"):
        await sd.start(UNIT)


def test_other_units_job_ends_are_not_kept():
    sd = systemd1.Systemd(conn=None, prefix="fcnetd-dnsmasq@")
    for i in range(200):
        sd._on_message(job_removed(f"/j/{i}", "apt-daily.service", "done"))
        sd._on_message(job_removed(f"/k/{i}", UNIT, "done"))
    assert len(sd._ended) == systemd1.ENDED_KEPT and all(j.startswith("/k/") for j in sd._ended)
