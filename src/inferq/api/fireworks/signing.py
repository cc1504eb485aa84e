"""Signed, expiring URLs for one file of a dataset (Fireworks' signed upload/download URLs).

A token names who may do what: the tenant, the dataset, the file, the HTTP
method and the expiry (and, for uploads, the size announced beforehand). It is
the base64url of those fields, a dot, and the base64url of their HMAC-SHA256
under the server's signing secret. Changing any field breaks the signature, so
a token cannot be moved to another tenant, dataset, file, method or lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass


class BadToken(Exception):
    """The token is malformed or its signature does not match."""


class ExpiredToken(BadToken):
    """The token was valid but its time has passed."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a signed URL allows."""

    tenant: str
    dataset: str
    name: str
    #: "GET" (download) or "PUT" (upload)
    method: str
    #: Unix time (seconds) after which the token is refused
    expires: int
    #: the byte count an upload must have (uploads only)
    size: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def sign(grant: Grant, secret: bytes) -> str:
    """The URL-safe token of ``grant``."""
    fields = [grant.tenant, grant.dataset, grant.name, grant.method, grant.expires, grant.size]
    payload = _b64(json.dumps(fields, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


def verify(token: str, secret: bytes, *, method: str, now: float) -> Grant:
    """The grant of a token signed with ``secret`` for ``method``, still valid at ``now``.

    Raises :class:`BadToken` (tampered, malformed, another method) or
    :class:`ExpiredToken`.
    """
    payload, dot, mac = token.partition(".")
    # compared as bytes: a signature with non-ASCII text is simply wrong, not an error
    if not dot or not hmac.compare_digest(
        mac.encode("utf-8", "surrogatepass"), _mac(secret, payload).encode()
    ):
        raise BadToken("the signature does not match")
    try:
        tenant, dataset, name, signed_method, expires, size = json.loads(_unb64(payload))
    except (ValueError, TypeError) as exc:
        raise BadToken("the token is malformed") from exc
    grant = Grant(tenant, dataset, name, signed_method, expires, size)
    if grant.method != method:
        raise BadToken(f"the URL was signed for {grant.method}, not {method}")
    if now >= grant.expires:
        raise ExpiredToken("the URL has expired")
    return grant
