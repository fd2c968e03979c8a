"""The demo as a new user meets it after a crash (issue 13): killed with
SIGKILL (a closed terminal, an OOM kill) it leaves nothing running, the
next run comes up, a taken port is named with a way out, and a child that
exits is named. Each demo here runs under an instance name of its own, so
it never meets a person's ./demo on the same machine."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from tests.system.harness import REPO, run, wait_for
from tests.webstack import free_port


def start_time(pid: int) -> str | None:
    """A process's start time: with its PID, who it is (PIDs are reused)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below pid, each with its start time."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if (started := start_time(child)) is not None:
                found[child] = started
                todo.append(child)
    return found


def alive(procs: dict[int, str]) -> dict[int, str]:
    """Those of procs still running (a zombie is not)."""
    left = {}
    for pid, started in procs.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if start_time(pid) == started and state != "Z":
            left[pid] = started
    return left


def netns_names() -> set[str]:
    return {line.split()[0] for line in run(["ip", "netns", "list"]).stdout.splitlines() if line.strip()}


class Demo:
    def __init__(self, tmp_path, instance: str, port: int, *args: str):
        self.instance, self.url = instance, f"http://127.0.0.1:{port}"
        self.err_path = tmp_path / f"demo-{time.monotonic_ns()}.err"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fcnetd.demo", "--instance", instance, "--listen", f"127.0.0.1:{port}", *args],
            stdout=subprocess.PIPE, stderr=open(self.err_path, "wb"), stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO)
        self.out = b""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def ready(self, timeout: float = 90) -> str:
        """Its output up to "fcnetd demo is running." and the lines after it."""
        deadline = time.monotonic() + timeout
        while b"Ctrl-C stops it" not in self.out:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the demo did not come up ({self.proc.poll()}): {self.out.decode()}\n"
                                     f"{self.stderr()}")
            if select.select([self.proc.stdout], [], [], 0.5)[0]:
                self.out += os.read(self.proc.stdout.fileno(), 65536)
        return self.out.decode()

    def namespaces(self) -> set[str]:
        return {n for n in netns_names() if n == self.instance or n.startswith(self.instance + "-")}

    def webui_answers(self) -> bool:
        with urllib.request.urlopen(self.url + "/login", timeout=5) as r:
            return r.status == 200 and b"Sign in to fcnetd" in r.read()


def test_a_killed_demo_leaves_nothing_running_and_the_next_run_comes_up(tmp_path):
    instance, port = f"fcdemo{os.getpid() % 100000}", free_port()
    first = Demo(tmp_path, instance, port)
    try:
        first.ready()
        assert first.webui_answers()
        assert first.namespaces() == {instance, f"{instance}-vm", f"{instance}-out"}
        below = descendants(first.proc.pid)
        names = {open(f"/proc/{pid}/comm").read().strip() for pid in below}
        assert {"dbus-daemon", "dnsmasq"} <= names, names  # and fcnetd, the relay, the web UI
        first.proc.kill()
        first.proc.wait(10)
        wait_for(lambda: not alive(below), timeout=20, what=f"the killed demo's processes to end: {alive(below)}")
        wait_for(lambda: not first.namespaces(), timeout=10, what="the killed demo's namespaces to go")
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    second = Demo(tmp_path, instance, port)
    try:
        second.ready()
        assert second.webui_answers()
        # a third start while the second runs is refused, naming it, and disturbs nothing
        third = subprocess.run([sys.executable, "-m", "fcnetd.demo", "--instance", instance,
                                "--listen", f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": REPO}, cwd=REPO, timeout=60)
        assert third.returncode == 1
        assert f"already running as pid {second.proc.pid}" in third.stderr, third.stderr
        assert second.webui_answers()
        below = descendants(second.proc.pid)
        second.proc.send_signal(signal.SIGINT)  # Ctrl-C, as the README says
        assert second.proc.wait(60) == 0, second.stderr()
        assert not second.namespaces()
        wait_for(lambda: not alive(below), timeout=5, what=f"its guard to end too: {alive(below)}")
    finally:
        if second.proc.poll() is None:
            second.proc.kill()


def test_a_port_in_use_is_named_with_a_way_out(tmp_path):
    instance = f"fcdemo{os.getpid() % 100000}p"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        demo = Demo(tmp_path, instance, port, "--no-nat", "--no-seed")
        assert demo.proc.wait(60) == 1
    err = demo.stderr()
    assert f"127.0.0.1:{port} is in use by python" in err and f"pid {os.getpid()}" in err, err
    assert "--listen 127.0.0.1:PORT" in err
    assert not demo.namespaces()


def test_a_child_that_exits_is_named(tmp_path):
    instance = f"fcdemo{os.getpid() % 100000}c"
    demo = Demo(tmp_path, instance, free_port(), "--no-nat", "--no-seed")
    try:
        demo.ready()
        below = descendants(demo.proc.pid)
        webui = next(pid for pid in below if "fcnetd-webui" in open(f"/proc/{pid}/cmdline").read())
        os.kill(webui, signal.SIGKILL)
        assert demo.proc.wait(60) == 1
        assert f"fcnetd-demo: the web UI (fcnetd-webui, pid {webui}) was killed by SIGKILL; stopping" \
            in demo.stderr(), demo.stderr()
        assert not demo.namespaces()
        wait_for(lambda: not alive(below), timeout=5, what=f"the rest to end: {alive(below)}")
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
