"""One webhook POST, signed, to an address checked before it is connected to.

Safety (an endpoint's URL is a tenant's input, the server's network is not theirs):

* The host is resolved here and every address it resolves to is checked: private,
  loopback, link-local, multicast, reserved and unspecified addresses are refused
  unless ``allow_private`` (``INFERQ_WEBHOOK_ALLOW_PRIVATE=true``). The request then
  goes to *that* address (the URL's host kept in ``Host`` and, for HTTPS, in SNI and
  the certificate check), so a name that resolves differently a moment later
  (DNS rebinding) cannot steer it elsewhere.
* Redirects are not followed (a 3xx is a failed attempt); timeouts are bounded; at
  most :data:`MAX_ANSWER` bytes of the answer are read; no connection is reused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from standardwebhooks import Webhook

#: how much of a receiver's answer is read (it is only kept as an error snippet)
MAX_ANSWER = 4096
#: the longest error text kept on a delivery
MAX_ERROR = 300

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The endpoint's address may not be reached from this server."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: an HTTP status (None: no answer) and what went wrong."""

    status: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def forbidden(address: Address) -> bool:
    """Whether ``address`` is one only the server's own network should reach."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def resolve(host: str, port: int, *, allow_private: bool) -> Address:
    """The address to connect to: the first one ``host`` resolves to, when none of them
    is forbidden (one forbidden address refuses the host: its owner chose it)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    except UnicodeError as exc:  # a label the IDNA codec refuses (empty, over 63 characters)
        raise Refused(f"cannot resolve {host[:100]}: not a valid host name") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise Refused(f"{host} resolves to no address")
    if not allow_private:
        bad = [a for a in addresses if forbidden(a)]
        if bad:
            raise Refused(
                f"{host} resolves to {bad[0]}, a private, loopback or link-local address "
                "(set INFERQ_WEBHOOK_ALLOW_PRIVATE=true to allow)"
            )
    return addresses[0]


def signed_headers(secret: str, webhook_id: str, body: bytes, now: float) -> dict[str, str]:
    """Standard Webhooks' three headers for ``body``, signed at ``now``."""
    stamp = int(now)
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(stamp, UTC), body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "inferq-webhooks",
    }


@dataclass(kw_only=True)
class Sender:
    """Posts events; one HTTP client for the process' deliverer."""

    allow_private: bool = False
    timeout: float = 10.0
    #: how receivers' certificates are checked: the system's CAs (True) or a context of
    #: one's own (a private CA)
    verify: ssl.SSLContext | bool = True

    def __post_init__(self) -> None:
        self._client = httpx.AsyncClient(
            verify=self.verify,
            follow_redirects=False,
            # a connection per attempt: pooled by address, a TLS connection verified for
            # one host name would carry another name's events to the same address
            limits=httpx.Limits(max_keepalive_connections=0),
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 5.0)),
            trust_env=False,  # no proxy from the environment: the checked address is the one
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, *, secret: str, webhook_id: str, body: bytes) -> Outcome:
        """Send one attempt; never raises for the receiver's or the network's faults."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            address = await resolve(host, port, allow_private=self.allow_private)
        except Refused as exc:
            return Outcome(None, str(exc)[:MAX_ERROR])
        literal = f"[{address}]" if address.version == 6 else str(address)
        target = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
        headers = signed_headers(secret, webhook_id, body, time.time())
        headers["host"] = parts.netloc.rpartition("@")[2]
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        request = self._client.build_request(
            "POST", target, content=body, headers=headers, extensions=extensions
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR] or type(exc).__name__)
        try:
            answer = await _head_of(response)
        finally:
            await response.aclose()
        if 200 <= response.status_code < 300:
            return Outcome(response.status_code, None)
        detail = "a redirect (not followed)" if response.is_redirect else answer
        return Outcome(response.status_code, detail[:MAX_ERROR] or None)


async def _head_of(response: httpx.Response) -> str:
    """At most :data:`MAX_ANSWER` bytes of the answer, as text."""
    taken = bytearray()
    try:
        async for piece in response.aiter_raw():
            taken += piece
            if len(taken) >= MAX_ANSWER:
                break
    except httpx.HTTPError:
        pass
    return bytes(taken[:MAX_ANSWER]).decode("utf-8", "replace")
