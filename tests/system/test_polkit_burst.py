"""polkit (issue 11, found in review): what an outsider can do to other callers'
authorization where polkit decides."""

import subprocess
import sys

from fcnetd.bus import DBusError

from .harness import REPO
from .test_polkit import _polkitd_installed, authority, connect_as, pbus, pdaemon, users  # noqa: F401 (fixtures)

CONNECTIONS = 200  # under dbus-daemon's max_connections_per_user (256), over its max_replies_per_connection (128)
BURST = f"""
import asyncio, sys
from fcnetd.bus import DBusError, call, connect
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH

async def main(address):
    conns = await asyncio.gather(*(connect(address) for _ in range({CONNECTIONS})))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    async def one(c):
        try:
            await call(c, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListNetworks", "a{{sv}}", [{{}}])
        except DBusError as e:
            return e.text[:60]
    tasks = [asyncio.ensure_future(one(c)) for c in conns]
    for _ in range(3):  # each call written to its socket
        await asyncio.sleep(0)
    print("sent", flush=True)
    answers = await asyncio.gather(*tasks)
    print(sorted(set(answers)), flush=True)

asyncio.run(main(sys.argv[1]))
"""


def test_an_outsiders_burst_of_connections_does_not_make_a_fcnet_members_check_fail(pdaemon, pbus, users,
                                                                                     connect_as):
    """Each new connection costs fcnetd one CheckAuthorization. dbus-daemon
    allows one connection 128 calls awaiting a reply (max_replies_per_
    connection, the system bus default), fcnetd's own connection included:
    with every check in flight at once, the bus refused fcnetd's next
    CheckAuthorization (LimitsExceeded) and a fcnet member's call was
    refused with "access check failed". fcnetd now keeps at most
    access.POLKIT_CHECKS in flight and queues the rest."""
    member = connect_as("member", fcnet_group=True)
    uid = users.uid("outsider")
    attacker = subprocess.Popen(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable,
                                 "-c", BURST, pbus.address], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env={"PYTHONPATH": REPO, "PATH": "/usr/bin:/bin"}, cwd="/")
    try:
        assert attacker.stdout.readline().strip() == "ready"
        attacker.stdin.write("go\n")
        attacker.stdin.flush()
        assert attacker.stdout.readline().strip() == "sent"
        try:
            member.call("ListNetworks", "a{sv}", {})
            refused = None
        except DBusError as e:
            refused = e
        outcome = attacker.stdout.readline().strip()
        assert refused is None, f"the fcnet member was refused during the burst: {refused.text} (outsiders got {outcome})"
    finally:
        attacker.kill()
        attacker.wait(10)
