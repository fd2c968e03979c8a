"""Failed sign-ins, counted per client address and user name: after five in
five minutes, further attempts wait, so passwords cannot be guessed fast."""

from __future__ import annotations

import time

WINDOW = 300.0
ALLOWED = 5


class SignInThrottle:
    def __init__(self, window: float = WINDOW, allowed: int = ALLOWED):
        self.window, self.allowed = window, allowed
        self._failures: dict[tuple[str, str], list[float]] = {}

    def wait_seconds(self, addr: str, user: str) -> int:
        """0 if a sign-in may be tried now, else how long to wait."""
        now = time.monotonic()
        times = [t for t in self._failures.get((addr, user), []) if now - t < self.window]
        if times:
            self._failures[(addr, user)] = times
        else:
            self._failures.pop((addr, user), None)
        if len(times) < self.allowed:
            return 0
        return int(self.window - (now - times[0])) + 1

    def failed(self, addr: str, user: str) -> None:
        self._failures.setdefault((addr, user), []).append(time.monotonic())
        if len(self._failures) > 10000:  # bound memory under a spray of names
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, addr: str, user: str) -> None:
        self._failures.pop((addr, user), None)
