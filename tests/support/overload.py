"""A bounded overload: many clients submitting without pause to one server, while a
probe times ``/healthz``. Used by tests/acceptance/test_overload.py (seconds) and
bench/overload.py (a minute, the figures in docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: the answers a loaded server may give a submit: accepted, or "later" with Retry-After
LATER = frozenset({429, 503})


@dataclass
class Report:
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    #: 429s and 503s without a Retry-After header
    without_retry_after: int = 0
    #: transport errors (refused connections, timeouts)
    errors: list[str] = field(default_factory=list)
    #: the accepted jobs: request id -> the message submitted
    accepted: dict[str, str] = field(default_factory=dict)
    healthz_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.healthz_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())


def models_file(path: Path, execution_log: Path, *, slots: int, token_delay: float) -> Path:
    """The fake engine, logging each generation it ran to the end (one line each)."""
    path.write_text(
        f'[models.fake]\nengine = "fake"\ncontext_length = 512\nslots = {slots}\n'
        f"token_delay = {token_delay}\nexecution_log = {str(execution_log)!r}\n"
    )
    return path


async def overload(url: str, keys: list[str], *, seconds: float, clients: int) -> Report:
    """``clients`` clients (spread over ``keys``) submitting Together queue jobs back to
    back for ``seconds``, ignoring Retry-After; a probe reads ``/healthz`` every 50 ms
    on a connection of its own."""
    report = Report()
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with (
        httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client,
        httpx.AsyncClient(base_url=url, timeout=30) as probe,
    ):

        async def submitter(i: int) -> None:
            headers = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
            n = 0
            while time.monotonic() < stop:
                message = f"load {i} {n}"
                n += 1
                body = {
                    "model": "fake",
                    "payload": {"messages": [{"role": "user", "content": message}]},
                }
                try:
                    answer = await client.post("/v1/queue/submit", json=body, headers=headers)
                except httpx.HTTPError as exc:
                    report.errors.append(repr(exc))
                    continue
                report.statuses[answer.status_code] += 1
                if answer.status_code == 200:
                    report.accepted[answer.json()["requestId"]] = message
                elif answer.status_code in LATER and "retry-after" not in answer.headers:
                    report.without_retry_after += 1

        async def prober() -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                answer = await probe.get("/healthz")
                report.healthz_ms.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200
                await asyncio.sleep(0.05)

        began = time.monotonic()
        await asyncio.gather(prober(), *(submitter(i) for i in range(clients)))
        report.seconds = time.monotonic() - began
    return report


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for pid {pid}")
