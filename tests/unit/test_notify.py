import asyncio
import os
import socket

from fcnetd.notify import Notifier


def test_ready_status_and_watchdog_from_the_event_loop(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.watchdog_seconds == 0.1

    async def run():
        n.ready("2 networks")
        n.start_watchdog()
        await asyncio.sleep(0.18)
        n.stopping()
    asyncio.run(run())
    got = []
    sock.settimeout(0.2)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except socket.timeout:
        pass
    assert got[0].startswith("READY=1\nSTATUS=2 networks")
    assert got.count("WATCHDOG=1") >= 3  # every half period
    assert got[-1] == "STOPPING=1"


def test_watchdog_meant_for_another_process_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_seconds == 0
