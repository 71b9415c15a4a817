"""Console log-in, sessions, CSRF tokens and role guards.

- A session is an opaque random token in an HttpOnly, SameSite=Strict cookie scoped to
  ``/console`` (Secure when the broker's ``public_url`` is https, when the request came over
  https or when ``SESSION_COOKIE_SECURE`` is set); the server keeps only its hash
  (:class:`broker.users.UserStore`), so logging out, disabling a user or going idle ends it at
  once.
- Every state-changing form carries the session's CSRF token, compared with
  :func:`hmac.compare_digest`; the log-in form carries a token bound to a pre-session cookie
  (HMAC under a key derived from the broker's signing key), so no secret file is added.
- :func:`require` both enforces the roles a view allows and records them as its guard
  (:mod:`ibex.guards`), so the route-guard test sees exactly what is enforced.
"""

from __future__ import annotations

import functools
import hmac
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nacl.encoding
import nacl.hash
from flask import abort, current_app, g, redirect, request, url_for
from nacl.signing import SigningKey
from werkzeug.wrappers import Response as BaseResponse

from broker.users import DEFAULT_COST, ROLES, Session, UserStore
from ibex.guards import guard
from ibex.store import Connection, load_db_key, open_encrypted

SESSION_COOKIE = "ibex_console"
LOGIN_COOKIE = "ibex_console_login"
COOKIE_PATH = "/console"
DEFAULT_IDLE_SECONDS = 15 * 60
DEFAULT_MAX_SECONDS = 8 * 3600

F = TypeVar("F", bound=Callable[..., Any])


def derive_secret(signing_key: SigningKey, purpose: bytes) -> bytes:
    """A 32-byte key for one console purpose, derived from the broker's signing key (BLAKE2b
    keyed hash with a personalisation string), so the console needs no secret file of its own."""
    return bytes(
        nacl.hash.blake2b(
            purpose,
            digest_size=32,
            key=bytes(signing_key),
            person=b"ibex-console",
            encoder=nacl.encoding.RawEncoder,
        )
    )


def setting(name: str, default: Any) -> Any:
    """A console setting from the app's config (``IBEX_CONSOLE_…``), e.g. in tests."""
    return current_app.config.get(name, default)


class ConsoleAuth:
    """The console's users and sessions, on a connection to ``broker.db`` opened lazily in the
    process that serves (after gunicorn forks)."""

    def __init__(
        self,
        db_path: Path,
        key_file: Path | None,
        key_env: str | None,
        key: SigningKey,
        *,
        https: bool = False,
    ) -> None:
        self._https = https  # the broker's public URL is https: cookies are Secure
        self._db_path = db_path
        self._key_file = key_file
        self._key_env = key_env
        self._login_secret = derive_secret(key, b"login-csrf")
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._users: UserStore | None = None

    def users(self) -> UserStore:
        with self._lock:
            if self._users is None:
                db_key = load_db_key(self._key_file, self._key_env)
                self._conn = open_encrypted(self._db_path, db_key, create=True)
                cost = str(setting("IBEX_CONSOLE_PWHASH_COST", DEFAULT_COST))
                self._users = UserStore(self._conn, cost=cost)
            return self._users

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn, self._users = None, None

    # --- sessions --------------------------------------------------------------------------

    def current(self) -> Session | None:
        """This request's session (cached on ``g``), or None."""
        if "console_session" in g:
            cached: Session | None = g.console_session
            return cached
        token = request.cookies.get(SESSION_COOKIE, "")
        found: Session | None = None
        if 20 <= len(token) <= 128:
            found = self.users().session(
                token,
                idle_seconds=float(setting("IBEX_CONSOLE_IDLE_SECONDS", DEFAULT_IDLE_SECONDS)),
                max_seconds=float(setting("IBEX_CONSOLE_MAX_SECONDS", DEFAULT_MAX_SECONDS)),
            )
        g.console_session = found
        return found

    def start(self, response: BaseResponse, token: str) -> None:
        self._cookie(response, SESSION_COOKIE, token)
        response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)

    def end(self, response: BaseResponse) -> None:
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            self.users().close_session(token)
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        g.console_session = None

    def _cookie(self, response: BaseResponse, name: str, value: str) -> None:
        configured = current_app.config.get("SESSION_COOKIE_SECURE")
        secure = self._https or bool(configured) or request.is_secure
        # No Max-Age: a browser session cookie; the server enforces the idle and total limits.
        response.set_cookie(
            name, value, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=secure
        )

    # --- CSRF ------------------------------------------------------------------------------

    def login_csrf(self) -> tuple[str, str | None]:
        """The log-in form's CSRF token, and a new pre-session cookie value to set (or None
        when the browser already holds one)."""
        pre = request.cookies.get(LOGIN_COOKIE, "")
        fresh = None
        if not 20 <= len(pre) <= 128:
            pre = fresh = secrets.token_urlsafe(32)
        return self._login_mac(pre), fresh

    def set_login_cookie(self, response: BaseResponse, value: str) -> None:
        self._cookie(response, LOGIN_COOKIE, value)

    def _login_mac(self, pre: str) -> str:
        mac = hmac.new(self._login_secret, pre.encode("ascii", "replace"), "sha256")
        return mac.hexdigest()

    def check_login_csrf(self) -> None:
        pre = request.cookies.get(LOGIN_COOKIE, "")
        sent = request.form.get("csrf", "")
        if not pre or not hmac.compare_digest(sent.encode(), self._login_mac(pre).encode()):
            abort(403, "The log-in form has expired or did not come from this console. "
                       "Reload the page and try again.")  # fmt: skip

    @staticmethod
    def check_csrf(session: Session) -> None:
        sent = request.form.get("csrf", "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            abort(403, "The form has expired or did not come from this console. "
                       "Reload the page and try again.")  # fmt: skip


def auth() -> ConsoleAuth:
    found: ConsoleAuth = current_app.extensions["ibex_console"]
    return found


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a path inside the console, never another site."""
    default = url_for("console.home")
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target or target.startswith("//"):
        return default
    if not parts.path.startswith(COOKIE_PATH + "/") and parts.path != COOKIE_PATH:
        return default
    return target


def require(*roles: str) -> Callable[[F], F]:
    """Allow the view to users holding one of ``roles`` (checked on every request, with the
    CSRF token on every POST), and record the roles as the view's guard."""
    allowed = frozenset(roles)
    if not allowed or not allowed <= set(ROLES):
        raise ValueError(f"console roles are {', '.join(ROLES)}")

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            session = auth().current()
            if session is None:
                if request.method == "GET":
                    back = request.full_path if request.query_string else request.path
                    return redirect(url_for("console.login", next=back))
                abort(401, "Your session has ended. Log in again.")
            if session.user.role not in allowed:
                abort(403, f"Your role ({session.user.role}) cannot use this page.")
            if request.method == "POST":
                auth().check_csrf(session)
            return view(*args, **kwargs)

        return guard(*sorted(allowed))(wrapper)  # type: ignore[return-value]

    return decorate
