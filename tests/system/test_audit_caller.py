"""A method handler sees its own caller (caller.current), set by the access
gate just before dbus-fast dispatches the call, also while calls of two
connections are in flight together, in the tasks it starts, and with an
actor one call sets that the other does not see. A real dbus-daemon, the
real gate, a real second process (busctl)."""

import asyncio
import os

from fcnetd import caller
from fcnetd.access import AccessGate
from fcnetd.bus import ServiceInterface, call, connect, method, request_name
from fcnetd.names import BUS_NAME, MANAGER_PATH

IFACE = "org.fcnetd.Network1.Test"


class Who(ServiceInterface):
    """Holds every call until `expected` calls are in flight at once, then
    answers what it sees as its caller, before and after the others ran,
    and in a task it starts (as the engine's auto-creation does)."""

    def __init__(self):
        super().__init__(IFACE)
        self.in_flight = 0
        self.expected = 2
        self.together = asyncio.Event()

    @method()
    async def Whoami(self, tag: "s") -> "s":
        caller.acting_for(tag)
        before = caller.current.get()
        self.in_flight += 1
        if self.in_flight == self.expected:
            self.together.set()
        await asyncio.wait_for(self.together.wait(), 10)
        await asyncio.sleep(0.05)  # the other call's handler runs meanwhile
        after = caller.current.get()
        in_task = await asyncio.ensure_future(self._current())
        assert before == after == in_task, (before, after, in_task)
        return f"{after.uid} {after.pid} {after.sender} {after.actor}"

    async def _current(self):
        return caller.current.get()

    def next_round(self) -> None:
        self.in_flight = 0
        self.together = asyncio.Event()


def test_each_handler_sees_its_own_caller_under_concurrent_calls(bus):
    async def go():
        server = await connect(bus.address)
        AccessGate(server, {}).install()
        who = Who()
        server.export(MANAGER_PATH, who)
        assert await request_name(server, BUS_NAME)
        mine = await connect(bus.address)

        async def from_here(tag):
            (answer,) = await call(mine, BUS_NAME, MANAGER_PATH, IFACE, "Whoami", "s", [tag])
            return answer

        async def from_busctl(tag):
            proc = await asyncio.create_subprocess_exec(
                "busctl", f"--address={bus.address}", "call", BUS_NAME, MANAGER_PATH, IFACE, "Whoami", "s", tag,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            return proc.pid, out.decode().strip()

        try:
            # Round 1: both connections' first calls, held by the gate for
            # the credential lookup and then dispatched from its task.
            # Round 2: this connection's verdict is cached (dispatched from
            # the bus reader), busctl's is a new connection again.
            for round_ in (1, 2):
                who.next_round()
                here, (busctl_pid, there) = await asyncio.gather(from_here(f"here-{round_}"),
                                                                 from_busctl(f"there-{round_}"))
                assert here == f"{os.getuid()} {os.getpid()} {mine.unique_name} here-{round_}"
                uid, pid, sender, actor = there.split('"')[1].split(" ")
                assert (int(uid), int(pid), actor) == (os.getuid(), busctl_pid, f"there-{round_}")
                assert sender.startswith(":") and sender != mine.unique_name
        finally:
            mine.disconnect()
            server.disconnect()

    asyncio.run(go())
