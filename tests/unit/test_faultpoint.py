"""The test-only crash hook: inert without FCNETD_FAULT_POINT, SIGKILL at
exactly the named point with it."""

import os
import signal
import subprocess
import sys

from fcnetd import faultpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(point):
    code = ("from fcnetd import faultpoint\n"
            "for name in faultpoint.POINTS:\n"
            "    print(name, flush=True)\n"
            "    faultpoint.reached(name)\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("FCNETD_FAULT_POINT", None)
    if point:
        env["FCNETD_FAULT_POINT"] = point
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)


def test_inert_without_the_variable():
    res = _run(None)
    assert res.returncode == 0 and res.stdout.split() == list(faultpoint.POINTS)


def test_killed_exactly_at_the_named_point():
    point = faultpoint.POINTS[2]
    res = _run(point)
    assert res.returncode == -signal.SIGKILL
    assert res.stdout.split() == list(faultpoint.POINTS[:3])


def test_points_are_unique():
    assert len(set(faultpoint.POINTS)) == len(faultpoint.POINTS)
