"""A private system-like bus for the demo and the tests: the same default
deny rules and the same limits as Debian's system.conf, plus the project's
own policy file."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dbus",
                      "org.fcnetd.Network1.conf")

# No <limit> on purpose. Debian 12's /usr/share/dbus-1/system.conf sets none
# (each one is there only as a comment), so a real system bus runs on
# dbus-daemon's built-in defaults, and so does this one: among them
# max_replies_per_connection 128 (calls one connection may have waiting for
# a reply), max_connections_per_user 256, max_incoming_bytes and
# max_outgoing_bytes 127 MiB, max_message_size 32 MiB. A test that needs
# more than 128 calls in flight spreads them over several connections, as a
# pool of VM launchers would (tests/system/harness.py, Pool).
TEMPLATE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <deny own="*"/>
  </policy>
  {include}
</busconfig>
"""


class PrivateBus:
    """dbus-daemon on a socket in `directory`; policy=False leaves out the
    project's policy file (to prove the daemon checks callers itself)."""

    def __init__(self, directory: str | None = None, policy: bool = True):
        # The socket must be reachable by the unprivileged callers the tests
        # and the demo run, so it lives in its own world-searchable directory.
        directory = directory or tempfile.mkdtemp(prefix="fcnetd-bus-")
        os.chmod(directory, 0o755)
        self.directory = directory
        self.socket = os.path.join(directory, "bus.sock")
        self.address = f"unix:path={self.socket}"
        self.conf = os.path.join(directory, "bus.conf")
        include = f"<include>{POLICY}</include>" if policy else ""
        if not policy:  # still let root own the name
            include = '<policy user="root"><allow own="org.fcnetd.Network1"/></policy>' \
                      '<policy context="default"><allow send_destination="org.fcnetd.Network1"/></policy>'
        with open(self.conf, "w") as f:
            f.write(TEMPLATE.format(socket=self.socket, include=include))
        self.proc: subprocess.Popen | None = None

    def start(self, netns: str | None = None) -> "PrivateBus":
        cmd = ["dbus-daemon", f"--config-file={self.conf}", "--nofork", "--nopidfile", "--nosyslog"]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dbus-daemon did not start (config {self.conf})")
            time.sleep(0.02)
        os.chmod(self.socket, 0o666)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        shutil.rmtree(self.directory, ignore_errors=True)
