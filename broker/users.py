"""Console users and their sessions, in the broker's encrypted store (``broker.db``).

Passwords are hashed with Argon2id (libsodium, through PyNaCl's ``nacl.pwhash.argon2id``); the
hash string carries its own cost, so lowering the cost for tests (``cost="interactive"``) never
weakens hashes made with the default. Verifying an unknown or disabled user still costs one
hash, so the answer time does not tell which names exist.

Sessions are server-side rows keyed by the SHA-256 of a random 256-bit token that only the
browser holds (in an HttpOnly cookie): logging out, disabling a user or going idle ends the
session at once, and a copy of the database holds no usable session token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import nacl.exceptions
import nacl.pwhash

from ibex.errors import BadInput, NotFound
from ibex.store import Connection

ROLES: Final = ("legal-officer", "oversight", "admin")
# Also the audit entry's ``actor`` pattern, so a user name can be recorded as who acted.
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.@-]{1,63}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024

# Argon2id costs (libsodium's presets). "moderate" (3 passes, 256 MiB) is the default: about half
# a second here, which a person logging in does not notice and an attacker with a stolen database
# pays for every guess. "interactive" (2 passes, 64 MiB) is for tests and small machines.
COSTS: Final = {
    "interactive": (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ),
    "moderate": (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
    "sensitive": (
        nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE,
        nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE,
    ),
}
DEFAULT_COST: Final = "moderate"

# At most this many hashes at once per process: each takes its memory limit (256 MiB by default),
# and a burst of logins must not exhaust a worker's memory.
_HASHING = threading.BoundedSemaphore(2)

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS console_users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash BLOB NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS console_sessions (
    token_hash BLOB PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES console_users(name),
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    disabled: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class Session:
    """A live console session: who, and the CSRF token its forms must carry."""

    user: User
    csrf: str
    created_at: float
    last_seen: float


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise BadInput(
            "a user name is 2-64 characters: lower-case letters, digits and _ . @ -, "
            "starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadInput(f"the role must be one of {', '.join(ROLES)}")
    return role


def check_password(password: str) -> bytes:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadInput(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password.encode("utf-8")


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


class UserStore:
    """Console users (name, role, Argon2id hash) and their sessions."""

    def __init__(self, conn: Connection, *, cost: str = DEFAULT_COST) -> None:
        if cost not in COSTS:
            raise BadInput(f"the password hashing cost must be one of {', '.join(COSTS)}")
        self._conn = conn
        self._ops, self._mem = COSTS[cost]
        self._lock = threading.Lock()
        self._dummy: bytes | None = None
        with self._lock:
            self._conn.executescript(SCHEMA_SQL)

    # --- hashing ---------------------------------------------------------------------------

    def _hash(self, password: bytes) -> bytes:
        with _HASHING:
            return bytes(nacl.pwhash.argon2id.str(password, opslimit=self._ops, memlimit=self._mem))

    def _verify_hash(self, stored: bytes, password: bytes) -> bool:
        with _HASHING:
            try:
                return bool(nacl.pwhash.argon2id.verify(stored, password))
            except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError):
                return False

    def _dummy_hash(self) -> bytes:
        # A real hash of a random password at this store's cost: verifying against it takes as
        # long as verifying a real user's password, and can never succeed.
        if self._dummy is None:
            self._dummy = self._hash(secrets.token_bytes(32))
        return self._dummy

    # --- users -----------------------------------------------------------------------------

    def add(self, name: str, role: str, password: str) -> User:
        check_name(name)
        check_role(role)
        digest = self._hash(check_password(password))
        created = time.time()
        with self._lock:
            exists = self._conn.execute(
                "SELECT 1 FROM console_users WHERE name = ?", (name,)
            ).fetchone()
            if exists:
                raise BadInput(f"a console user named {name} already exists")
            self._conn.execute(
                "INSERT INTO console_users (name, role, password_hash, disabled, created_at)"
                " VALUES (?, ?, ?, 0, ?)",
                (name, role, digest, created),
            )
        return User(name, role, False, created)

    def get(self, name: str) -> User | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, disabled, created_at FROM console_users WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else User(str(row[0]), str(row[1]), bool(row[2]), row[3])

    def list(self) -> Sequence[User]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, role, disabled, created_at FROM console_users ORDER BY name"
            ).fetchall()
        return [User(str(r[0]), str(r[1]), bool(r[2]), float(r[3])) for r in rows]

    def disable(self, name: str) -> User:
        """Disable a user and end every session they have."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute(
                    "UPDATE console_users SET disabled = 1 WHERE name = ?", (name,)
                )
                if cur.rowcount != 1:
                    raise NotFound(f"there is no console user named {name}")
                self._conn.execute("DELETE FROM console_sessions WHERE user_name = ?", (name,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        user = self.get(name)
        assert user is not None
        return user

    def verify(self, name: str, password: str) -> User | None:
        """The user, if ``name`` is an enabled user and ``password`` is theirs; else None.

        Unknown names, disabled users and over-long passwords cost one hash too."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, password_hash, disabled, created_at FROM console_users"
                " WHERE name = ?",
                (name,),
            ).fetchone()
        secret = password.encode("utf-8")[: MAX_PASSWORD * 4]
        if row is None:
            self._verify_hash(self._dummy_hash(), secret)
            return None
        ok = self._verify_hash(bytes(row[2]), secret)
        if not ok or row[3]:
            return None
        return User(str(row[0]), str(row[1]), False, float(row[4]))

    # --- sessions --------------------------------------------------------------------------

    def open_session(self, user: User) -> str:
        """Start a session for ``user``; return the token the browser keeps (and only it)."""
        token = secrets.token_urlsafe(32)
        stamp = time.time()
        with self._lock:
            self._conn.execute(
                "INSERT INTO console_sessions (token_hash, user_name, csrf, created_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (_token_hash(token), user.name, secrets.token_urlsafe(32), stamp, stamp),
            )
        return token

    def session(self, token: str, *, idle_seconds: float, max_seconds: float) -> Session | None:
        """The live session for ``token``, touched; None (and the row gone) when it has expired,
        its user is disabled or it does not exist."""
        key = _token_hash(token)
        stamp = time.time()
        with self._lock:
            row = self._conn.execute(
                "SELECT s.csrf, s.created_at, s.last_seen, u.name, u.role, u.disabled,"
                " u.created_at FROM console_sessions s JOIN console_users u"
                " ON u.name = s.user_name WHERE s.token_hash = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            csrf, created, seen, name, role, disabled, user_created = row
            if disabled or stamp - seen > idle_seconds or stamp - created > max_seconds:
                self._conn.execute("DELETE FROM console_sessions WHERE token_hash = ?", (key,))
                return None
            if stamp - seen > 30:  # touching on every request would write on every page view
                self._conn.execute(
                    "UPDATE console_sessions SET last_seen = ? WHERE token_hash = ?", (stamp, key)
                )
                seen = stamp
        user = User(str(name), str(role), False, float(user_created))
        return Session(user, str(csrf), float(created), float(seen))

    def close_session(self, token: str) -> None:
        with self._lock:
            self._conn.execute(
                "DELETE FROM console_sessions WHERE token_hash = ?", (_token_hash(token),)
            )

    def purge_sessions(self, *, idle_seconds: float, max_seconds: float) -> int:
        stamp = time.time()
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM console_sessions WHERE last_seen < ? OR created_at < ?",
                (stamp - idle_seconds, stamp - max_seconds),
            )
        return int(cur.rowcount)
