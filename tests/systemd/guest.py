"""One Debian 12 guest under QEMU TCG with systemd as PID 1, and the channel
the tests run commands over.

The image comes from tools/systemd-image.sh (cached); it is booted with
snapshot=on, so every run starts from the same clean system and the cached
file never changes. The project's install inputs (a copy of the checkout
and a wheelhouse) reach the guest as a second disk made with mkfs.ext4 -d,
which needs neither a mount on the host nor 9p in the guest. The guest has
no network device: nothing it does can reach outside.

Commands go to tests/systemd/agent.py in the guest over a virtio-serial
port backed by a Unix socket here; each answer carries rc, stdout and
stderr. Every wait is a deadline, never a sleep.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL_MOUNT = "/mnt/install"


@dataclass
class Result:
    cmd: str
    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool

    def __str__(self) -> str:
        return (f"$ {self.cmd}\n(rc {self.rc}{', timed out' if self.timed_out else ''})\n"
                f"--- stdout\n{self.stdout[-4000:]}--- stderr\n{self.stderr[-4000:]}")

    @property
    def ok(self) -> bool:
        return self.rc == 0


class GuestError(Exception):
    pass


class Guest:
    def __init__(self, workdir: str, image: str, install_disk: str, kernel: str, initrd: str,
                 memory_mib: int = 2048, cpus: int = 2):
        self.workdir = workdir
        self.console = os.path.join(workdir, "console.log")
        sock_path = os.path.join(workdir, "agent.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(sock_path)
        self._listener.listen(1)
        # TCG only (the brief and CI machines have no KVM); -nic none: no
        # network at all; -no-reboot: a guest that panics or reboots ends.
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mib), "-smp", str(cpus),
                "-nodefaults", "-display", "none", "-no-reboot", "-nic", "none",
                "-serial", f"file:{self.console}",
                "-kernel", kernel, "-initrd", initrd,
                "-append", "root=/dev/vda rw console=ttyS0 quiet panic=-1",
                "-drive", f"file={image},format=raw,if=virtio,snapshot=on",
                "-drive", f"file={install_disk},format=raw,if=virtio,snapshot=on",
                "-device", "virtio-serial-pci",
                "-chardev", f"socket,id=agent,path={sock_path}",
                "-device", "virtserialport,chardev=agent,name=agent"]
        self.qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        self._waiting: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self._conn: socket.socket | None = None
        self._hello: queue.Queue = queue.Queue()
        self.started = time.monotonic()

    # -- start and stop -----------------------------------------------------
    def wait_agent(self, deadline_s: float) -> float:
        """Seconds from QEMU's start to the agent's hello."""
        self._listener.settimeout(deadline_s)
        try:
            self._conn, _ = self._listener.accept()   # QEMU connects at once
        except socket.timeout:
            raise GuestError(f"QEMU never connected the agent port:\n{self._qemu_output()}")
        threading.Thread(target=self._reader, daemon=True).start()
        try:
            self._hello.get(timeout=max(1.0, deadline_s - (time.monotonic() - self.started)))
        except queue.Empty:
            raise GuestError(f"no agent within {deadline_s:.0f} s; console:\n{self.console_tail()}")
        return time.monotonic() - self.started

    def stop(self) -> None:
        if self.qemu.poll() is None:
            try:
                self.run("systemctl poweroff --no-block", timeout=10)
                self.qemu.wait(timeout=30)
            except (GuestError, subprocess.TimeoutExpired):
                self.qemu.kill()
                self.qemu.wait()
        if self._conn:
            self._conn.close()
        self._listener.close()

    def console_tail(self, n: int = 6000) -> str:
        try:
            with open(self.console, errors="replace") as f:
                return f.read()[-n:]
        except FileNotFoundError:
            return "(no console output)"

    def _qemu_output(self) -> str:
        if self.qemu.poll() is None:
            return "(QEMU still running)"
        return self.qemu.stdout.read().decode(errors="replace")

    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = self._conn.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                for q in list(self._waiting.values()):
                    q.put(None)
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "hello" in msg:
                    self._hello.put(msg["hello"])
                    continue
                q = self._waiting.get(msg["id"])
                if q is not None:
                    q.put(msg)

    # -- commands -------------------------------------------------------------
    def run(self, cmd: str | list[str], timeout: float = 60, input: str = "") -> Result:
        """Runs cmd in the guest as root (a string goes to /bin/sh -c)."""
        if self._conn is None or self.qemu.poll() is not None:
            raise GuestError(f"the guest is not running; console:\n{self.console_tail()}")
        rid = next(self._ids)
        req = {"id": rid, "timeout": timeout, "input": input}
        req.update({"sh": cmd} if isinstance(cmd, str) else {"argv": cmd})
        q: queue.Queue = queue.Queue()
        self._waiting[rid] = q
        with self._lock:
            self._conn.sendall((json.dumps(req) + "\n").encode())
        try:
            msg = q.get(timeout=timeout + 30)   # the agent enforces timeout; this is the lost-guest net
        except queue.Empty:
            msg = None
        finally:
            del self._waiting[rid]
        text = cmd if isinstance(cmd, str) else shlex.join(cmd)
        if msg is None:
            raise GuestError(f"no answer to {text!r}; console:\n{self.console_tail()}")
        return Result(text, msg["rc"], msg["stdout"], msg["stderr"], msg["timed_out"])

    def ok(self, cmd: str | list[str], timeout: float = 60, input: str = "") -> str:
        """Runs cmd; its stdout, or an assertion error showing everything."""
        r = self.run(cmd, timeout, input)
        assert r.ok, str(r)
        return r.stdout

    def wait_for(self, cmd: str, deadline_s: float, what: str, interval: float = 0.2) -> Result:
        """Polls cmd until it succeeds, within deadline_s (the poll interval
        only paces the guest's CPU; the deadline decides)."""
        end = time.monotonic() + deadline_s
        while True:
            r = self.run(cmd, timeout=max(5.0, deadline_s))
            if r.ok:
                return r
            if time.monotonic() > end:
                raise AssertionError(f"{what}: not within {deadline_s} s\n{r}")
            time.sleep(interval)
