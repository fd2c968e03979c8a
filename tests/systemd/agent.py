#!/usr/bin/python3
"""The systemd tier's agent inside the guest: reads one JSON request a line
from a virtio-serial port, runs it, answers one JSON line.

Request:  {"id": 1, "argv": [...]} or {"id": 1, "sh": "..."},
          optional "timeout" (s), "input" (text for stdin)
Answer:   {"id": 1, "rc": 0, "stdout": "...", "stderr": "...", "timed_out": false}

Each request runs in its own thread, so a command that waits (a D-Bus call
that activates fcnetd) does not hold up the next one. Written for the
guest's Debian python3, standard library only; it is baked into the cached
image by tools/systemd-image.sh.
"""

import json
import os
import subprocess
import sys
import threading

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
       "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "TERM": "dumb"}


def main(port: str) -> None:
    fd = os.open(port, os.O_RDWR)
    lock = threading.Lock()

    def send(obj) -> None:
        data = (json.dumps(obj) + "\n").encode()
        with lock:
            while data:
                data = data[os.write(fd, data):]

    def run(req) -> None:
        argv = req.get("argv") or ["/bin/sh", "-c", req["sh"]]
        try:
            p = subprocess.run(argv, input=req.get("input", ""), capture_output=True, text=True,
                               errors="replace", timeout=req.get("timeout", 60), env=ENV, cwd="/root")
            send({"id": req["id"], "rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr,
                  "timed_out": False})
        except subprocess.TimeoutExpired as e:
            send({"id": req["id"], "rc": None, "timed_out": True,
                  "stdout": _text(e.stdout), "stderr": _text(e.stderr)})
        except OSError as e:
            send({"id": req["id"], "rc": 127, "stdout": "", "stderr": str(e), "timed_out": False})

    send({"hello": os.uname().release})
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:   # the host is not connected (yet, or any more)
            threading.Event().wait(0.2)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                threading.Thread(target=run, args=(json.loads(line),), daemon=True).start()


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


if __name__ == "__main__":
    main(sys.argv[1])
