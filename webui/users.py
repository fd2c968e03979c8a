"""Local users of the web UI: scrypt password hashes and a role, in one JSON
file written atomically.

On a systemd host the file is /etc/fcnetd/webui-users.json, 0640 root:fcnet
(systemd-tmpfiles makes it, empty): root manages it with `fcnetd-webui user`,
the UI's user fcnetd-webui reads it through that group. It is read at every
sign-in, so changes count without a restart; a rewrite keeps the file's
owner and mode."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat

ROLES = ("admin", "viewer")
_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
# scrypt cost: 2^15 * 8 * 128 B = 32 MiB and ~50 ms a check, as OWASP suggests
N, R, P = 2**15, 8, 1
MAXMEM = 64 * 1024 * 1024
DEFAULT_PATH = "/etc/fcnetd/webui-users.json"
log = logging.getLogger("fcnetd-webui")


class UserError(Exception):
    pass


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAXMEM)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=MAXMEM)
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


# Compared against when the user does not exist, so a wrong name costs the same time.
_DUMMY = hash_password(secrets.token_hex(8))


class UserStore:
    def __init__(self, path: str):
        self.path = path
        self._seen: tuple | None = None  # the file's identity when `_current` was read
        self._current: dict[str, dict] = {}

    def load(self) -> dict[str, dict]:
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return {}
        except PermissionError:
            raise UserError(f"{self.path}: cannot read it as uid {os.getuid()}: it must be readable by the web UI "
                            f"(on a systemd host 0640 root:fcnet, as systemd-tmpfiles makes it)") from None
        # empty: made by systemd-tmpfiles, no user added yet
        return json.loads(text).get("users", {}) if text.strip() else {}

    def startup_note(self) -> str | None:
        """What to tell an admin at start when nobody can sign in yet."""
        try:
            if self.load():
                return None
        except UserError as e:
            return f"{e}; every sign-in is refused until it is"
        return (f"no users in {self.path}: every sign-in is refused until root adds one: "
                f"fcnetd-webui user add NAME --role admin (no restart needed)")

    def _save(self, users: dict) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"users": users}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(self.path):
            # keep what systemd-tmpfiles set (root:fcnet 0640): the UI reads it by its group
            st = os.stat(self.path)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
        os.rename(tmp, self.path)

    @staticmethod
    def check_name(name: str) -> str:
        if not _NAME.match(name or ""):
            raise UserError(f"name: {name!r} must be 1-32 characters of a-z 0-9 _ . -, starting with a letter")
        return name

    @staticmethod
    def check_password(password: str) -> str:
        if len(password) < 10:
            raise UserError("password: must be at least 10 characters")
        return password

    def add(self, name: str, password: str, role: str) -> None:
        users = self.load()
        self.check_name(name)
        if name in users:
            raise UserError(f"user {name} exists (use passwd to change the password)")
        if role not in ROLES:
            raise UserError(f"role: must be one of {', '.join(ROLES)}")
        users[name] = {"hash": hash_password(self.check_password(password)), "role": role}
        self._save(users)

    def passwd(self, name: str, password: str) -> None:
        users = self.load()
        if name not in users:
            raise UserError(f"no user {name}")
        users[name]["hash"] = hash_password(self.check_password(password))
        self._save(users)

    def delete(self, name: str) -> None:
        users = self.load()
        if users.pop(name, None) is None:
            raise UserError(f"no user {name}")
        self._save(users)

    def authenticate(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None."""
        user = self.signed_in(name, password)
        return user["role"] if user else None

    def signed_in(self, name: str, password: str) -> dict | None:
        """The user's record ({"role", "hash"}) if the password is right."""
        try:
            user = self.load().get(name)
        except UserError as e:
            log.error("sign-in of %s refused: %s", name, e)
            user = None
        if user is None:
            verify_password(password, _DUMMY)
            return None
        return user if verify_password(password, user["hash"]) else None

    def still_valid(self, name: str, role: str, credential: str) -> bool:
        """Whether a session signed in as `name` may go on: the user is still
        there, with the same role and password. The file is written by
        another process (`fcnetd-webui user del/passwd`, run by root), so it
        is looked at on each request: a stat, and a read when it changed."""
        try:
            st = os.stat(self.path)
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            seen = None
        if seen != self._seen:
            try:
                self._current = self.load()
            except (UserError, ValueError) as e:  # unreadable or broken: nobody's session goes on
                log.error("sessions end: %s", e)
                self._current = {}
            self._seen = seen
        user = self._current.get(name)
        return user is not None and user["role"] == role and user["hash"] == credential
