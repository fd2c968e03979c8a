"""A bulk reader that does not keep up: keeps DEPTH calls (Describe,
ObjectManager.GetManagedObjects on /, ListNetworks of everything) waiting
on one connection and reads their replies at RATE a second, sending a new
call for each reply read. Prints "flooding" once the first DEPTH calls are
sent; on SIGTERM prints {"replies": n, "errors": {name: count}}.

  flood.py BUS_ADDRESS [--depth 100] [--rate 10]
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
import time

from common import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, MessageType, WireClient, decode

CALLS = (
    (MANAGER_PATH, MANAGER_IFACE, "Describe", "", []),
    ("/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", []),
    (MANAGER_PATH, MANAGER_IFACE, "ListNetworks", "a{sv}", [{}]),
)


def main(args) -> None:
    wire = WireClient(args.address)
    replies, errors = 0, collections.Counter()

    def report(*_):
        print(json.dumps({"replies": replies, "errors": errors}), flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, report)
    for i in range(args.depth):
        wire.send(BUS_NAME, *CALLS[i % len(CALLS)])
    print("flooding", flush=True)
    sent = args.depth
    while True:
        time.sleep(1 / args.rate)  # the pace of a slow reader, not a synchronisation
        raw = wire.reply()
        replies += 1
        if raw[1] == MessageType.ERROR.value:
            errors[decode(raw).error_name] += 1
        wire.send(BUS_NAME, *CALLS[sent % len(CALLS)])
        sent += 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("address")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0)
    main(ap.parse_args())
