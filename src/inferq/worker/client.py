"""The node protocol's client: its JSON calls on connections of its own
(:mod:`inferq.worker.wire`), file uploads through httpx; the node token on each."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from inferq import __version__
from inferq.core.node_messages import PROTOCOL
from inferq.worker.wire import Wire, wire_for

#: bytes per piece of an uploaded file
UPLOAD_CHUNK = 1 << 20


class ServerRefused(Exception):
    """The server answered with an error the node cannot fix by retrying."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def bad_token(self) -> bool:
        return self.status == 401


class NodeClient:
    """Calls of the node protocol (version :data:`PROTOCOL`)."""

    def __init__(self, server: str, token: str, *, timeout: float = 30.0) -> None:
        self.session = uuid.uuid4().hex
        self.timeout = timeout
        headers = {"authorization": f"Bearer {token}", "user-agent": f"inferq-node/{__version__}"}
        self.http = httpx.AsyncClient(
            base_url=server.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_keepalive_connections=64, max_connections=128),
        )
        #: the JSON calls' own connections (None: through httpx, for a proxy)
        self.wire = (
            Wire(self.http.base_url, headers | {"accept": "application/json"}, connect_timeout=10.0)
            if wire_for(self.http.base_url)
            else None
        )

    async def close(self) -> None:
        if self.wire is not None:
            await self.wire.close()
        await self.http.aclose()

    async def _post(self, path: str, body: dict[str, Any], *, timeout: float | None = None) -> Any:
        if self.wire is None:
            response = await self.http.post(
                path,
                json={"session": self.session, **body},
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
            return _answer(response)
        data = json.dumps({"session": self.session, **body}, separators=(",", ":")).encode()
        status, answer = await self.wire.post(
            path, data, timeout=self.timeout if timeout is None else timeout
        )
        return _decode(status, answer)

    async def hello(self, models: dict[str, int]) -> dict[str, Any]:
        body = {"protocol": PROTOCOL, "version": __version__, "models": models}
        answer: dict[str, Any] = await self._post("/node/v1/hello", body)
        return answer

    async def claim(
        self, free: dict[str, int], *, wait: float, running: int, max_class: str = "batch"
    ) -> list[dict[str, Any]]:
        body = {"free": free, "wait": wait, "running": running, "max_class": max_class}
        answer = await self._post("/node/v1/claim", body, timeout=wait + 30.0)
        jobs: list[dict[str, Any]] = answer["jobs"]
        return jobs

    async def heartbeat(self, jobs: list[dict[str, Any]]) -> tuple[set[str], set[str]]:
        answer = await self._post("/node/v1/heartbeat", {"jobs": jobs})
        return set(answer["held"]), set(answer["cancelled"])

    async def results(
        self, items: list[dict[str, Any]], *, free: dict[str, int] | None = None, running: int = 0
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Report ended attempts (``{id, attempt, result | error, retry, text, info}``),
        claiming for ``free`` slots without waiting; each one's fate (``ok``, or the
        ``code`` and ``message`` that refused it) and the jobs claimed."""
        body = {"results": items, "free": free or {}, "running": running}
        answer = await self._post("/node/v1/results", body)
        return answer["results"], answer["jobs"]

    async def release(self, leases: list[tuple[str, int]]) -> list[str]:
        jobs = [{"id": job_id, "attempt": attempt} for job_id, attempt in leases]
        answer = await self._post("/node/v1/release", {"jobs": jobs})
        released: list[str] = answer["released"]
        return released

    async def bye(self) -> None:
        """The process stops: its node no longer counts as connected for its models."""
        await self._post("/node/v1/bye", {})

    async def upload(self, job_id: str, attempt: int, name: str, path: Path) -> str:
        """Upload an output file; return the URL the job's tenant reads it at."""
        params: dict[str, str | int] = {"session": self.session, "attempt": attempt}
        response = await self.http.put(
            f"/node/v1/jobs/{job_id}/files/{name}", params=params, content=_read(path)
        )
        url: str = _answer(response)["url"]
        return url


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while data := f.read(UPLOAD_CHUNK):
            yield data


def _answer(response: httpx.Response) -> Any:
    return _decode(response.status_code, response.content)


def _decode(status: int, body: bytes) -> Any:
    """The JSON of a successful answer; :class:`ServerRefused` for any other."""
    if 200 <= status < 300:
        try:
            return json.loads(body)
        except ValueError as exc:
            raise httpx.DecodingError(f"the server's answer is not JSON: {exc}") from exc
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", body[:500].decode("utf-8", "replace")
    raise ServerRefused(status, code, message)
