"""The private bus keeps a real system bus's limits (issue 9, item 10): one
connection may have 128 calls waiting for replies, so a burst must come
from several connections, as the harness's Pool sends it. fcnetd is
stopped (SIGSTOP) so that calls stay waiting for as long as the test needs."""

import asyncio
import signal

from fcnetd.bus import DBusError, call, connect
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH

from .harness import Pool

LIMITS_EXCEEDED = "org.freedesktop.DBus.Error.LimitsExceeded"


def paused(daemon):
    """Runs the block with fcnetd stopped; it answers everything afterwards."""
    class Paused:
        def __enter__(self):
            daemon.proc.send_signal(signal.SIGSTOP)

        def __exit__(self, *exc):
            daemon.proc.send_signal(signal.SIGCONT)
    return Paused()


def test_one_connection_may_have_128_calls_waiting(daemon, bus):
    async def flood():
        conn = await connect(bus.address)
        try:
            with paused(daemon):
                waiting = [asyncio.ensure_future(call(conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListBridges"))
                           for _ in range(128)]
                try:  # the bus answers this one itself, at once
                    await asyncio.wait_for(call(conn, BUS_NAME, MANAGER_PATH, MANAGER_IFACE, "ListBridges"), 10)
                    refused = "answered"
                except DBusError as e:
                    refused = e
                except asyncio.TimeoutError:
                    refused = "let through to fcnetd"
            answered = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), 30)
        finally:
            conn.disconnect()
        return refused, answered
    refused, answered = asyncio.run(flood())
    assert isinstance(refused, DBusError) and refused.type == LIMITS_EXCEEDED, f"the 129th call was {refused}"
    assert not [a for a in answered if isinstance(a, BaseException)], "a call under the limit failed"


def test_a_pool_keeps_each_connection_under_the_limit(daemon, bus):
    async def burst():
        async with Pool(bus.address, 3) as pool:
            with paused(daemon):
                calls = [asyncio.ensure_future(pool.call("ListBridges")) for _ in range(3 * 128 + 1)]
                await pool.flush()  # the bus holds every call the pool has sent, all waiting
            return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)
    results = asyncio.run(burst())
    assert not [r for r in results if isinstance(r, BaseException)], \
        {type(r).__name__ + ": " + str(r) for r in results if isinstance(r, BaseException)}
