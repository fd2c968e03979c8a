"""Waiting in the guest with a deadline, never a bare sleep."""

from __future__ import annotations

import time


def wait_until(predicate, timeout: float) -> bool:
    """Polls predicate() until it is true (True) or `timeout` s pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False
