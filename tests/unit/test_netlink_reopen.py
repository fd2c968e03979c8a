"""Issue 9, item 1: two requests that both saw the socket overrun (ENOBUFS)
reopened it twice, the second closing the replacement the first was using."""

import asyncio
import errno

from fcnetd import netlink


class FakeIPRoute:
    made: list["FakeIPRoute"] = []

    def __init__(self):
        self.closed = False
        self.overrun = not FakeIPRoute.made  # the first socket is overrun
        FakeIPRoute.made.append(self)

    def close(self):
        self.closed = True

    async def link(self, *args, **kwargs):
        await asyncio.sleep(0)  # both requests are in flight on the socket
        if self.overrun:  # every request pending on an overrun socket fails so
            raise OSError(errno.ENOBUFS, "No buffer space available")
        await asyncio.sleep(0)
        if self.closed:
            raise OSError(errno.EBADF, "closed under a request")
        return ["ok"]


def test_concurrent_overruns_reopen_the_socket_once(monkeypatch):
    FakeIPRoute.made = []
    monkeypatch.setattr(netlink, "AsyncIPRoute", FakeIPRoute)

    async def go():
        nl = netlink.Netlink()
        nl.ipr = FakeIPRoute()
        nl._slots = asyncio.Semaphore(32)
        return await asyncio.gather(nl._rt("link", "get"), nl._rt("link", "get"))
    assert asyncio.run(go()) == [["ok"], ["ok"]]
    assert len(FakeIPRoute.made) == 2 and not FakeIPRoute.made[1].closed
