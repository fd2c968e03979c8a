"""Sign-in attempts, counted per client address and user name, so passwords
cannot be guessed fast.

The rule: an attempt is counted when it starts, before its password is
checked (scrypt takes a while, and attempts sent at once would otherwise all
be checked before the first failure was counted). While five attempts of
the last five minutes are failed or still being checked, further ones are
refused without a check. A right password takes its own count back and
clears the earlier failures, so signing in never spends the budget; an
attempt that ends without an answer (the client went away) stays counted."""

from __future__ import annotations

import time

WINDOW = 300.0
ALLOWED = 5
MAX_KEYS = 10000  # bounds memory under a spray of names


class SignInThrottle:
    def __init__(self, window: float = WINDOW, allowed: int = ALLOWED):
        self.window, self.allowed = window, allowed
        self._attempts: dict[tuple[str, str], list[float]] = {}

    def begin(self, addr: str, user: str) -> int:
        """0 once the attempt is counted and may be checked, else how many
        seconds to wait (and it is not counted)."""
        key = (addr, user)
        now = time.monotonic()
        times = [t for t in self._attempts.get(key, []) if now - t < self.window]
        if len(times) >= self.allowed:
            self._attempts[key] = times
            return int(self.window - (now - times[0])) + 1
        self._attempts.pop(key, None)  # re-inserted last: the oldest key goes first below
        self._attempts[key] = times + [now]
        if len(self._attempts) > MAX_KEYS:
            self._attempts.pop(next(iter(self._attempts)))
        return 0

    def succeeded(self, addr: str, user: str) -> None:
        self._attempts.pop((addr, user), None)
