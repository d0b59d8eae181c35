"""Who may see the console: admin-key login, signed session cookies and CSRF tokens.

With ``admin_keys`` set, every console page and API needs a session that a login with one of
those keys opened. The cookie holds only a random session id, its expiry and an HMAC over both
with a secret drawn fresh for each process (a restart logs everybody out). It is HttpOnly,
SameSite=Strict, scoped to ``/console`` and Secure whenever the request came over TLS. The
presented key stays in this process's memory with the session, so a key removed on reload ends
its sessions at once, and the playground can pin variants on the admin's behalf.

With no admin keys, the console is served to loopback clients only (and not when a proxy says it
forwarded the request); such clients get a session without logging in, so their forms still carry
a CSRF token. Every POST must carry the token tied to its session, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from gateway.serving.auth import KeyRing

__all__ = ["COOKIE", "LOGIN_COOKIE", "ConsoleAuth", "Session"]

COOKIE = "prefit_console"
LOGIN_COOKIE = "prefit_console_login"
_SESSION_TTL_S = 8 * 3600.0
_LOGIN_TTL_S = 3600.0
_MAX_SESSIONS = 1024
_PATH = "/console"


@dataclass(slots=True)
class Session:
    """One signed-in browser. ``key`` is the admin key it presented (None for a loopback session)."""

    id: str
    key: str | None
    expires: float
    csrf: str


def _over_tls(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


class ConsoleAuth:
    """Sessions of one gateway process, kept in memory."""

    def __init__(self, ttl_s: float = _SESSION_TTL_S) -> None:
        self._secret = secrets.token_bytes(32)
        self._ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    # -- sessions ---------------------------------------------------------------------------

    def open(self, key: str | None) -> Session:
        """A new session; the oldest ones are dropped past a fixed number."""
        now = time.time()
        for sid in [sid for sid, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= _MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        sid = secrets.token_urlsafe(24)
        session = Session(sid, key, now + self._ttl_s, self._sign("csrf", sid))
        self._sessions[sid] = session
        return session

    def close(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def cookie_value(self, session: Session) -> str:
        expires = str(int(session.expires))
        return f"{session.id}.{expires}.{self._sign('session', session.id + '.' + expires)}"

    def session(self, request: Request, admin_keys: KeyRing) -> Session | None:
        """The request's live session, if its cookie is genuine, unexpired and its key still admitted."""
        raw = request.cookies.get(COOKIE, "")
        sid, _, rest = raw.partition(".")
        expires, _, signature = rest.partition(".")
        if not (sid and expires.isdigit() and signature):
            return None
        if not hmac.compare_digest(signature, self._sign("session", f"{sid}.{expires}")):
            return None
        session = self._sessions.get(sid)
        if session is None or session.expires <= time.time():
            return None
        if admin_keys and not admin_keys.allows(session.key):
            self.close(session)
            return None
        if not admin_keys and session.key is not None:
            return None
        return session

    def set_cookie(self, response: Response, request: Request, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.cookie_value(session),
            max_age=int(session.expires - time.time()),
            path=_PATH,
            secure=_over_tls(request),
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def clear_cookie(response: Response, request: Request) -> None:
        response.delete_cookie(COOKIE, path=_PATH, secure=_over_tls(request), httponly=True, samesite="strict")

    # -- CSRF -------------------------------------------------------------------------------

    @staticmethod
    def csrf_ok(session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(session.csrf.encode(), presented.encode())

    @staticmethod
    def login_nonce(request: Request) -> str:
        """The pre-login cookie's nonce, or a fresh one (set it with ``set_login_cookie``)."""
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        return nonce if len(nonce) >= 16 else secrets.token_urlsafe(24)

    def login_token(self, nonce: str) -> str:
        """The login form's token, tied to the pre-login cookie (against login CSRF)."""
        return self._sign("login", nonce)

    @staticmethod
    def set_login_cookie(response: Response, request: Request, nonce: str) -> None:
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=int(_LOGIN_TTL_S),
            path=_PATH,
            secure=_over_tls(request),
            httponly=True,
            samesite="strict",
        )

    def login_token_ok(self, request: Request, presented: str | None) -> bool:
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        if len(nonce) < 16 or presented is None:
            return False
        return hmac.compare_digest(self._sign("login", nonce).encode(), presented.encode())

    @staticmethod
    def key_ok(admin_keys: KeyRing, presented: str) -> bool:
        """Constant-time over every configured key (``KeyRing.allows``)."""
        return bool(presented) and admin_keys.allows(presented)
