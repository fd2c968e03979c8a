"""The physical floor of CreateTap (bench/tapfloor.c), built with the system
C compiler into a temporary directory, never into the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "tapfloor.c")


class NoCompiler(RuntimeError):
    pass


def build(workdir: str | None = None) -> str:
    """Compiles tapfloor.c; returns the program's path."""
    cc = shutil.which("cc")
    if cc is None:
        raise NoCompiler("the CreateTap floor needs a C compiler: no `cc` on PATH "
                         "(on Debian: apt-get install gcc libc6-dev, which tools/bootstrap.sh should install)")
    out = os.path.join(workdir or tempfile.mkdtemp(prefix="fcnetd-floor-"), "tapfloor")
    res = subprocess.run([cc, "-O2", "-Wall", "-Werror", "-o", out, SOURCE], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"cc could not build {SOURCE}:\n{res.stderr}")
    return out


def create(program: str, netns: str, n: int, bridge: str, prefix: str, start: int, uid: int) -> list[float]:
    """Seconds per TAP for PREFIX%06d, START..START+n-1, made inside netns."""
    res = subprocess.run(["ip", "netns", "exec", netns, program, str(n), bridge, prefix, str(start), str(uid)],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"tapfloor failed: {res.stderr.strip()}")
    return json.loads(res.stdout)["create"]
