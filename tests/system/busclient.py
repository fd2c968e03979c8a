"""One bus connection held open by a process of another user, driven from the
test: fcnetd caches verdicts per connection, and a match rule lives as long
as its connection, so neither can be tested with a new busctl per call.

Run as `python -m tests.system.busclient ADDRESS` (UserConnection does);
it reads one JSON request per line and answers one JSON line each."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from fcnetd.bus import DBusError, MessageType, call, connect, unwrap
from fcnetd.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, PEER_IFACE


async def serve(address: str) -> None:
    conn = await connect(address)
    signals: list[dict] = []

    def collect(msg):
        if msg.message_type == MessageType.SIGNAL and msg.sender != "org.freedesktop.DBus":
            signals.append({"interface": msg.interface, "member": msg.member, "path": msg.path,
                            "body": json.loads(json.dumps(unwrap(msg.body), default=str))})
    conn.add_message_handler(collect)
    print(json.dumps({"unique_name": conn.unique_name}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        req = json.loads(line)
        try:
            if req["op"] == "call":
                answer = {"ok": unwrap(await call(conn, BUS_NAME, req["path"], req["interface"], req["member"],
                                                  req["signature"], req["body"]))}
            elif req["op"] == "match":
                await call(conn, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                           "AddMatch", "s", [req["rule"]])
                answer = {"ok": None}
            else:  # "signals": those fcnetd sent before it answered a ping sent now
                await call(conn, BUS_NAME, "/", PEER_IFACE, "Ping")
                answer, signals[:] = {"ok": list(signals)}, []
        except DBusError as e:
            answer = {"error": e.type, "text": e.text}
        print(json.dumps(answer, default=str), flush=True)


class UserConnection:
    """The process above as uid `uid` with exactly the supplementary
    `groups`; its calls return the reply body or raise DBusError."""

    def __init__(self, address: str, uid: int, gid: int | None = None, groups: list[int] = ()):
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}",
               f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
               sys.executable, "-m", "tests.system.busclient", address]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": repo}, cwd="/")
        first = self.proc.stdout.readline()
        if not first:
            raise AssertionError(f"the client as uid {uid} could not connect (exit {self.proc.wait(5)})")
        self.unique_name = json.loads(first)["unique_name"]

    def _ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise DBusError(answer["error"], answer["text"])
        return answer["ok"]

    def call(self, member: str, signature: str = "", *body, path: str = MANAGER_PATH,
             interface: str = MANAGER_IFACE):
        return self._ask(op="call", path=path, interface=interface, member=member, signature=signature,
                         body=list(body))

    def error(self, member: str, signature: str = "", *body, **kw) -> DBusError:
        try:
            result = self.call(member, signature, *body, **kw)
        except DBusError as e:
            return e
        raise AssertionError(f"{member}{body} succeeded with {result!r}; an error was expected")

    def add_match(self, rule: str) -> None:
        self._ask(op="match", rule=rule)

    def signals(self) -> list[dict]:
        """The signals received since the last look, up to all fcnetd had
        sent when it answered a ping sent now (the bus keeps one sender's
        messages in order)."""
        return self._ask(op="signals")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
