"""A remote host's system bus through OpenSSH, the way `busctl --host` reaches
it: ssh runs systemd-stdio-bridge on the far side, which connects to that
host's system bus as the login user and relays messages over ssh's stdin and
stdout; here those are one end of a socketpair, and the D-Bus connection
(fcnetd.bus.connect_stream) runs on the other end. Used by the web UI and
by fcnetctl --host.

Why the bridge and not a forwarded socket (ssh -L local.sock:/run/dbus/
system_bus_socket, or -W): the far bus authenticates a client by the
credentials of the process that connected, which for a forwarded socket is
sshd's child running as the login user, while the local client's EXTERNAL
authentication names its own local uid; the two differ and the bus refuses.
The bridge authenticates on the far host as the login user, so fcnetd there
sees an ordinary member of its group fcnet and checks it as any local
caller. A forwarded socket would also be a file that any local user could
connect through, borrowing the remote login; a socketpair belongs to this
process alone. The bus never listens on TCP.

ssh is run strictly: host keys checked against the given known_hosts file
only (StrictHostKeyChecking=yes, nothing learnt), no password prompt
(BatchMode=yes), no agent, X11 or port forwarding, no escape character, and
keepalives so that a host that vanished is noticed within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from dataclasses import dataclass

from .bus import connect_stream

BRIDGE = "systemd-stdio-bridge"
CONNECT_SECONDS = 10.0  # TCP connect, key exchange, login and the D-Bus handshake, together
ALIVE_SECONDS, ALIVE_COUNT = 2, 3  # ssh gives up on a silent server after about 6 s
# [user@]host: a host name, an IPv4 address or a bracketless IPv6 address;
# never an option (a leading '-') and nothing ssh_config would expand.
_DESTINATION = re.compile(r"(?:[A-Za-z0-9._][A-Za-z0-9._-]{0,31}@)?[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")


class SshError(OSError):
    """The remote bus could not be reached; the message is ssh's own reason
    where it gave one ('Connection refused', 'Host key verification failed')."""


def check_destination(text: str) -> str:
    """A config's or a command line's [USER@]HOST; ValueError names the rule."""
    if not isinstance(text, str) or not _DESTINATION.fullmatch(text):
        shown = repr(text[:64]) if isinstance(text, str) else type(text).__name__
        raise ValueError(f"{shown} must be [USER@]HOST: a host name or address, optionally after a user name "
                         "and '@' (letters, digits, '.', '_', '-'; not starting with '-')")
    return text


@dataclass(frozen=True)
class SshTarget:
    destination: str  # [user@]host
    port: int | None = None
    identity: str = ""  # a private key file; default: ssh's own
    known_hosts: str = ""  # the only known_hosts file consulted; default: ssh's own

    def command(self) -> list[str]:
        cmd = ["ssh", "-xT", "-a", "-e", "none",
               "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no",
               "-o", "ForwardAgent=no", "-o", "ForwardX11=no", "-o", "ClearAllForwardings=yes",
               "-o", "PermitLocalCommand=no", "-o", f"ConnectTimeout={int(CONNECT_SECONDS)}",
               "-o", f"ServerAliveInterval={ALIVE_SECONDS}", "-o", f"ServerAliveCountMax={ALIVE_COUNT}"]
        if self.port:
            cmd += ["-p", str(self.port)]
        if self.identity:
            cmd += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            cmd += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        return [*cmd, "--", self.destination, BRIDGE]

    def __str__(self) -> str:
        return f"{self.destination}:{self.port}" if self.port else self.destination


class SshBus:
    """One D-Bus connection to a remote host's bus over one ssh process.
    `conn` is a fcnetd.bus connection; `lost()` returns once it has ended,
    with the reason; `close()` ends both."""

    def __init__(self, target: SshTarget, conn, proc: asyncio.subprocess.Process, stderr: "_Tail"):
        self.target, self.conn, self._proc, self._stderr = target, conn, proc, stderr

    async def lost(self) -> str:
        """Waits until the connection ends; the reason, as ssh or the bus gave it."""
        try:
            await self.conn.wait_for_disconnect()
            why = "the connection was closed"
        except Exception as e:  # the library's own error for a connection that broke
            why = str(e) or type(e).__name__
        return await _reason(self.target, self._proc, self._stderr) or why

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.disconnect()
        await _end(self._proc)


class _Tail:
    """Keeps the last lines ssh wrote to its stderr (its reasons), reading
    all of it so that ssh never blocks on a full pipe."""

    def __init__(self, stream: asyncio.StreamReader):
        self.lines: list[str] = []
        self.task = asyncio.get_running_loop().create_task(self._read(stream))

    async def _read(self, stream) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").strip().removeprefix("ssh: ")
            if text:
                self.lines = (self.lines + [text[:200]])[-3:]

    def text(self) -> str:
        return " ".join(self.lines)


async def _reason(target: SshTarget, proc, stderr: _Tail) -> str:
    """ssh's account of why it stopped, once it has (briefly waited for)."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), 2)
        await asyncio.wait_for(asyncio.shield(stderr.task), 1)
    text = stderr.text()
    return f"ssh {target}: {text}" if text else ""


async def _end(proc) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 3)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def connect(target: SshTarget, timeout: float = CONNECT_SECONDS) -> SshBus:
    """Starts ssh and makes a D-Bus connection over it. SshError with ssh's
    reason when the host, the login or the bridge fails."""
    ours, theirs = socket.socketpair()
    try:
        proc = await asyncio.create_subprocess_exec(
            *target.command(), stdin=theirs, stdout=theirs, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, env={**os.environ, "LC_ALL": "C"})
    except OSError as e:
        ours.close()
        raise SshError(f"cannot run ssh: {e.strerror or e}") from None
    finally:
        theirs.close()
    stderr = _Tail(proc.stderr)
    try:
        conn = await asyncio.wait_for(connect_stream(ours), timeout)
    except Exception as e:  # refused, timed out, or the far side closed during the handshake
        ours.close()
        reason = await _reason(target, proc, stderr)
        await _end(proc)
        if isinstance(e, asyncio.TimeoutError):
            reason = reason or f"ssh {target}: no D-Bus connection within {timeout:g} s"
        raise SshError(reason or f"ssh {target}: {e or type(e).__name__}") from None
    return SshBus(target, conn, proc, stderr)
