"""The console's sessions: who is logged in, carried in a signed cookie.

Logging in with an API key gives a cookie that holds the key's *id* (never the key),
a random session id and an expiry, signed with HMAC-SHA256 under a secret derived
from the server's signing secret (:meth:`inferq.config.Settings.signing_secret`, the
same for every process of a fleet). Each request reads the key again by its id, so a
revoked key ends its sessions within seconds. The cookie is HttpOnly and
SameSite=Strict (Secure over HTTPS).

Forms that change something carry a CSRF token derived from the session id, checked
on every POST together with the ``Origin`` header when the browser sends one.
Logging out deletes the cookie and remembers the session id as ended (in this
process) until its expiry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inferq.core.errors import ClientError
from inferq.core.models import ApiKey

COOKIE = "inferq_console"
#: the form field (and header) a POST carries its CSRF token in
CSRF_FIELD = "csrf"
_CONTEXT = b"inferq console session v1"


class NotLoggedIn(Exception):
    """The request has no valid console session."""


class Forbidden(ClientError):
    """The form was not sent from a console page of this session."""

    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Session:
    """A verified session cookie."""

    key_id: str
    sid: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Viewer:
    """The logged-in key, as the console's pages see it."""

    key: ApiKey
    session: Session
    csrf: str

    @property
    def admin(self) -> bool:
        return self.key.admin

    @property
    def scope(self) -> str | None:
        """The tenant whose work this viewer sees; None (every tenant) for an admin."""
        return None if self.key.admin else self.key.tenant


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session cookies and CSRF tokens.

    ``secret`` is called once, on first use (it may read or create a file).
    """

    def __init__(
        self,
        *,
        secret: Callable[[], bytes],
        lifetime: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret_source = secret
        self._secret: bytes | None = None
        self.lifetime = lifetime
        self.clock = clock
        #: session ids logged out here, with when they would have expired
        self._ended: dict[str, float] = {}

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = hmac.new(self._secret_source(), _CONTEXT, hashlib.sha256).digest()
        return self._secret

    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self.secret, b"cookie:" + payload, hashlib.sha256).digest())

    def issue(self, key: ApiKey) -> tuple[str, Session]:
        """A new session for ``key``: the cookie's value and what it says."""
        session = Session(
            key_id=key.id, sid=secrets.token_urlsafe(16), expires_at=self.clock() + self.lifetime
        )
        body: dict[str, Any] = {"k": session.key_id, "s": session.sid, "e": session.expires_at}
        payload = json.dumps(body, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}", session

    def verify(self, cookie: str | None) -> Session:
        """The session a cookie holds; :class:`NotLoggedIn` when it is missing, forged,
        expired or logged out."""
        if not cookie or cookie.count(".") != 1:
            raise NotLoggedIn
        encoded, signature = cookie.split(".")
        try:
            payload = _unb64(encoded)
        except (binascii.Error, ValueError) as exc:
            raise NotLoggedIn from exc
        if not _same(signature, self._sign(payload)):
            raise NotLoggedIn
        try:
            body = json.loads(payload)
            session = Session(key_id=str(body["k"]), sid=str(body["s"]), expires_at=body["e"])
        except (ValueError, KeyError, TypeError) as exc:
            raise NotLoggedIn from exc
        if not isinstance(session.expires_at, int | float) or session.expires_at <= self.clock():
            raise NotLoggedIn
        if session.sid in self._ended:
            raise NotLoggedIn
        return session

    def end(self, session: Session) -> None:
        """Refuse this session from now on (logout)."""
        now = self.clock()
        for sid in [sid for sid, until in self._ended.items() if until <= now]:
            del self._ended[sid]
        self._ended[session.sid] = session.expires_at

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session: only its holder can read it (from a page)."""
        mac = hmac.new(self.secret, b"csrf:" + session.sid.encode(), hashlib.sha256)
        return _b64(mac.digest())

    def check_csrf(self, session: Session, token: str | None) -> bool:
        return bool(token) and _same(str(token), self.csrf(session))


def _same(given: str, expected: str) -> bool:
    """Whether a client's text is the expected token, in constant time (compared as bytes:
    ``hmac.compare_digest`` raises on text that is not ASCII, as a client's may be)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


class KeyCache:
    """The keys by id, read at most every ``seconds`` (like the API's key cache)."""

    def __init__(self, *, seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock
        self._keys: dict[str, ApiKey] = {}
        self._until = 0.0

    def stale(self) -> bool:
        return self.clock() >= self._until

    def fill(self, keys: list[ApiKey]) -> None:
        self._keys = {key.id: key for key in keys}
        self._until = self.clock() + self.seconds

    def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    def forget(self) -> None:
        self._until = 0.0
