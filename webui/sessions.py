"""Server-side sessions: random ids in an HttpOnly cookie, each with its own
CSRF token; idle and absolute expiry."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

IDLE_SECONDS = 30 * 60
MAX_SECONDS = 12 * 3600


@dataclass
class Session:
    user: str
    role: str
    credential: str = ""  # the user's password hash when signed in: a new password ends the session
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf)


class Sessions:
    def __init__(self, idle: float = IDLE_SECONDS, maximum: float = MAX_SECONDS):
        self.idle, self.maximum = idle, maximum
        self._by_id: dict[str, Session] = {}

    def create(self, user: str, role: str, credential: str = "") -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = Session(user, role, credential)
        return sid, self._by_id[sid]

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        if s is None:
            return None
        now = time.monotonic()
        if now - s.seen > self.idle or now - s.created > self.maximum:
            del self._by_id[sid]
            return None
        s.seen = now
        return s

    def end(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)

    def end_user(self, user: str) -> None:
        for sid in [k for k, s in self._by_id.items() if s.user == user]:
            del self._by_id[sid]
