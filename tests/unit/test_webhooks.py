"""Webhooks' policy (event types, backoff, URLs), the SSRF-safe sender against real
sockets on loopback, and the deliverer on the memory store."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import openai
import pytest
import trustme

from inferq.core.errors import InvalidRequest, NotFound
from inferq.core.ports import Ending
from inferq.core.states import JobState
from inferq.core.webhooks import (
    BATCH,
    DEFAULT_KINDS,
    DELIVERED,
    FAILED,
    JOB,
    PENDING,
    RESPONSE_EVENTS,
    OutboxEntry,
    RetryPolicy,
    WebhookService,
    check_url,
)
from inferq.core.work import ChatResult, Usage
from inferq.runner.metrics import Metrics
from inferq.runner.webhook_send import MAX_ERROR, Sender, forbidden
from inferq.runner.webhooks import Deliverer, DelivererSettings
from inferq.store.memory import MemoryStore
from tests.contract.test_store_contract import make_job


def entry(source: str, origin: str, state: JobState) -> OutboxEntry:
    return OutboxEntry(
        seq=1, id="evt_1", tenant="t", source=source, subject_id="x", origin=origin,
        state=state, created_at=0.0,
    )  # fmt: skip


def test_event_types_by_kind_of_record() -> None:
    kinds = DEFAULT_KINDS
    assert kinds.event_type(entry(BATCH, "openai", JobState.SUCCEEDED)) == "batch.completed"
    assert kinds.event_type(entry(BATCH, "fireworks", JobState.EXPIRED)) == "batch.expired"
    assert kinds.event_type(entry(BATCH, "unstructured", JobState.CANCELLED)) == "job.cancelled"
    assert kinds.event_type(entry(JOB, "together", JobState.SUCCEEDED)) == "job.succeeded"
    assert kinds.event_type(entry(JOB, "infera", JobState.FAILED)) == "job.failed"
    # a workflow's node jobs and kinds nobody registered send nothing
    assert kinds.event_type(entry(JOB, "unstructured", JobState.SUCCEEDED)) is None
    # background responses: their own events, about the response's id
    response = entry(JOB, "openai-responses", JobState.EXPIRED)
    response = dataclasses.replace(response, subject_id="6f1c2e4a-0b9d-4c3e-8f7a-1d2b3c4d5e6f")
    assert kinds.event_type(response) == "response.failed"
    assert kinds.needs_job(response) and not kinds.needs_job(
        entry(JOB, "together", JobState.FAILED)
    )
    done = dataclasses.replace(response, state=JobState.SUCCEEDED)
    job = make_job().evolve(state=JobState.SUCCEEDED, result=ChatResult("hi", "length", Usage()))
    assert kinds.event_type(done, job) == "response.incomplete"
    job = job.evolve(result=ChatResult("hi", "stop", Usage()))
    assert kinds.event_type(done, job) == "response.completed"
    assert kinds.subject_id(response) == "resp_6f1c2e4a0b9d4c3e8f7a1d2b3c4d5e6f"
    assert kinds.subject_id(entry(JOB, "together", JobState.FAILED)) == "x"
    # another kind of work plugs in the same way
    later = kinds.with_jobs("later", RESPONSE_EVENTS)
    assert later.event_type(entry(JOB, "later", JobState.SUCCEEDED)) == "response.completed"
    assert "job.exploded" not in later.known() and "response.failed" in later.known()


def test_backoff_doubles_with_jitter_and_gives_up_after_max_age() -> None:
    policy = RetryPolicy(base=5, cap=60, max_age=3600)
    low, high = (lambda: 0.0), (lambda: 0.999999)
    assert policy.next_at(1, now=100, event_at=100, rand=low) == 102.5
    assert policy.next_at(1, now=100, event_at=100, rand=high) == pytest.approx(105)
    assert policy.next_at(3, now=100, event_at=100, rand=high) == pytest.approx(120)
    assert policy.next_at(10, now=100, event_at=100, rand=high) == pytest.approx(160)  # capped
    assert policy.next_at(10, now=3650, event_at=0, rand=low) is None  # past max_age
    assert RetryPolicy().max_age == 72 * 3600


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "https://",
        "https://user:pw@example.com/x",
        "https://example.com/x#frag",
        "not a url",
        "https://example.com:99999/x",
    ],
)
def test_endpoint_urls_are_checked(url: str) -> None:
    with pytest.raises(InvalidRequest):
        check_url(url)


async def test_the_service_checks_events_and_hides_other_tenants_endpoints() -> None:
    service = WebhookService(store=MemoryStore())
    with pytest.raises(InvalidRequest, match="unknown event types"):
        await service.create(tenant="t", url="https://example.com/h", events=["job.exploded"])
    made = await service.create(tenant="t", url="https://example.com/h", events=["job.failed"])
    assert made.secret.startswith("whsec_") and made.events == ("job.failed",)
    with pytest.raises(NotFound):
        await service.deliveries(made.id, tenant="other")
    with pytest.raises(NotFound):
        await service.delete(made.id, tenant="other")
    assert await service.deliveries(made.id, tenant="t") == []


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.0.9", "172.16.5.5", "169.254.169.254", "0.0.0.0",
     "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_private_loopback_and_link_local_addresses_are_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address))


def test_public_addresses_are_not() -> None:
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert not forbidden(ipaddress.ip_address(address))


# -- a real HTTP server on loopback ------------------------------------------------------


@dataclass
class Loopback:
    """A tiny HTTP/1.1 server: each request's head is kept, the answer is ``reply``."""

    reply: Callable[[bytes], Awaitable[bytes]]
    heads: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), b"0"))  # fmt: skip
        body = await reader.readexactly(length)
        self.heads.append(head + body)
        try:
            writer.write(await self.reply(head))
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def loopback() -> AsyncIterator[Callable[..., Awaitable[Loopback]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Callable[[bytes], Awaitable[bytes]]) -> Loopback:
        lb = Loopback(reply)
        server = await asyncio.start_server(lb.handle, "127.0.0.1", 0)
        lb.port = server.sockets[0].getsockname()[1]
        servers.append(server)
        return lb

    yield start
    for server in servers:
        server.close()


def answer(status: str, body: bytes = b"", extra: str = "") -> Callable[[bytes], Awaitable[bytes]]:
    async def reply(_: bytes) -> bytes:
        head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        return head.encode() + body

    return reply


async def test_loopback_is_refused_without_the_setting_and_nothing_is_sent(
    loopback: Callable[..., Awaitable[Loopback]],
) -> None:
    lb = await loopback(answer("200 OK"))
    sender = Sender(allow_private=False, timeout=2)
    try:
        for host in ("127.0.0.1", "localhost"):
            got = await sender.post(
                f"http://{host}:{lb.port}/h", secret="whsec_c2VjcmV0", webhook_id="wh_1", body=b"{}"
            )
            assert got.status is None and not got.ok
            assert got.error is not None and "loopback" in got.error
        assert lb.heads == []
        allowed = Sender(allow_private=True, timeout=2)
        got = await allowed.post(
            f"http://localhost:{lb.port}/h", secret="whsec_c2VjcmV0", webhook_id="wh_1", body=b"{}"
        )
        assert got.ok and len(lb.heads) == 1
        assert f"host: localhost:{lb.port}".encode() in lb.heads[0].lower()
        await allowed.close()
    finally:
        await sender.close()


async def test_a_host_name_the_resolver_refuses_is_a_failed_attempt() -> None:
    # an endpoint stored before its URL's host was checked at registration: each attempt
    # fails with a reason, as an unknown host does, not with an exception
    sender = Sender(allow_private=False, timeout=2)
    try:
        for host in ("a" * 64 + ".example.com", "a..b.example.com"):
            got = await sender.post(
                f"http://{host}/h", secret="whsec_c2VjcmV0", webhook_id="wh_1", body=b"{}"
            )
            assert got.status is None and not got.ok
            assert got.error is not None and "not a valid host name" in got.error
    finally:
        await sender.close()


async def test_redirects_are_not_followed_and_answers_are_cut(
    loopback: Callable[..., Awaitable[Loopback]],
) -> None:
    target = await loopback(answer("200 OK"))
    redirect = await loopback(
        answer("302 Found", extra=f"location: http://127.0.0.1:{target.port}/x\r\n")
    )
    huge = await loopback(answer("500 Internal Server Error", b"x" * 1_000_000))
    sender = Sender(allow_private=True, timeout=2)
    try:
        moved = await sender.post(
            f"http://127.0.0.1:{redirect.port}/",
            secret="whsec_c2VjcmV0",
            webhook_id="w",
            body=b"{}",
        )
        assert moved.status == 302 and not moved.ok and "redirect" in (moved.error or "")
        assert target.heads == []
        failed = await sender.post(
            f"http://127.0.0.1:{huge.port}/", secret="whsec_c2VjcmV0", webhook_id="w", body=b"{}"
        )
        assert failed.status == 500 and len(failed.error or "") <= MAX_ERROR
    finally:
        await sender.close()


async def test_a_receiver_that_never_answers_times_out(
    loopback: Callable[..., Awaitable[Loopback]],
) -> None:
    async def hang(_: bytes) -> bytes:
        await asyncio.sleep(30)
        return b""

    lb = await loopback(hang)
    sender = Sender(allow_private=True, timeout=0.5)
    try:
        started = asyncio.get_running_loop().time()
        got = await sender.post(
            f"http://127.0.0.1:{lb.port}/", secret="whsec_c2VjcmV0", webhook_id="w", body=b"{}"
        )
        assert got.status is None and "Timeout" in (got.error or "")
        assert asyncio.get_running_loop().time() - started < 5
    finally:
        await sender.close()


async def test_https_goes_to_the_checked_address_under_the_urls_name() -> None:
    """The request connects to the address that was checked, and TLS still names (SNI)
    and verifies the URL's host: a certificate for ``localhost`` passes at
    ``https://localhost``, and the same server at ``https://127.0.0.1`` is refused."""
    ca = trustme.CA()
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_side)
    client_side = ssl.create_default_context()
    ca.configure_trust(client_side)
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_side)
    port = server.sockets[0].getsockname()[1]
    sender = Sender(allow_private=True, timeout=5, verify=client_side)
    try:
        named = await sender.post(
            f"https://localhost:{port}/h", secret="whsec_c2VjcmV0", webhook_id="w", body=b"{}"
        )
        assert named.ok, named
        assert f"host: localhost:{port}".encode() in heads[0].lower()
        by_address = await sender.post(
            f"https://127.0.0.1:{port}/h", secret="whsec_c2VjcmV0", webhook_id="w", body=b"{}"
        )
        assert not by_address.ok and "CERTIFICATE" in (by_address.error or "").upper()
        assert len(heads) == 1
    finally:
        await sender.close()
        server.close()


# -- the deliverer on the memory store ---------------------------------------------------


async def end_a_job(store: MemoryStore) -> str:
    job = await store.insert_job(make_job(tenant="t").evolve(origin="together"))
    await store.finish(job.id, Ending(JobState.CANCELLED), tenant="t", now=1.0)
    return job.id


async def test_the_deliverer_retries_then_delivers_signed_and_counts(
    loopback: Callable[..., Awaitable[Loopback]],
) -> None:
    statuses = iter(["503 Service Unavailable", "200 OK"])

    async def reply(head: bytes) -> bytes:
        return await answer(next(statuses))(head)

    lb = await loopback(reply)
    store, metrics, now = MemoryStore(), Metrics(), [time.time() + 1]
    service = WebhookService(store=store)
    ep = await service.create(tenant="t", url=f"http://127.0.0.1:{lb.port}/hook")
    deliverer = Deliverer(
        store=store, sender=Sender(allow_private=True, timeout=2), metrics=metrics,
        retry=RetryPolicy(base=10), clock=lambda: now[0], rand=lambda: 0.0,
        settings=DelivererSettings(),
    )  # fmt: skip
    job_id = await end_a_job(store)
    assert await deliverer.turn() == 2  # fanned out, then attempted
    [d] = await service.deliveries(ep.id, tenant="t")
    assert (d.state, d.attempts, d.last_status, d.next_at) == (PENDING, 1, 503, now[0] + 5)
    assert await deliverer.deliver() == 0  # not due yet
    now[0] += 5
    assert await deliverer.deliver() == 1
    [d] = await service.deliveries(ep.id, tenant="t")
    assert (d.state, d.attempts, d.last_status) == (DELIVERED, 2, 200)
    first, second = lb.heads
    assert first.split(b"\r\n\r\n")[1] == second.split(b"\r\n\r\n")[1]
    raw_head, body = second.split(b"\r\n\r\n")
    headers = dict(
        line.decode().split(": ", 1) for line in raw_head.split(b"\r\n")[1:] if b": " in line
    )
    event = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9").webhooks.unwrap(
        body.decode(), headers, secret=ep.secret
    )
    assert (event.type, event.data.model_dump()["id"]) == ("job.cancelled", job_id)
    assert json.loads(body)["object"] == "event"
    samples = {
        s.labels["outcome"]: s.value
        for family in metrics.registry.collect()
        if family.name == "inferq_webhook_deliveries"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert samples == {"retried": 1.0, "delivered": 1.0}
    await deliverer.stop()


async def test_the_deliverer_gives_up_after_max_age() -> None:
    store, metrics, now = MemoryStore(), Metrics(), [time.time() + 1]
    service = WebhookService(store=store)
    # a refused address: every attempt fails at once
    ep = await service.create(tenant="t", url="http://127.0.0.1:9/hook")
    deliverer = Deliverer(
        store=store, sender=Sender(allow_private=False), metrics=metrics,
        retry=RetryPolicy(base=10, max_age=15), clock=lambda: now[0], rand=lambda: 0.0,
    )  # fmt: skip
    await end_a_job(store)
    await deliverer.turn()
    now[0] += 15
    await deliverer.turn()
    [d] = await service.deliveries(ep.id, tenant="t")
    assert (d.state, d.attempts) == (FAILED, 2)
    assert d.last_error is not None and "loopback" in d.last_error
    await deliverer.stop()
