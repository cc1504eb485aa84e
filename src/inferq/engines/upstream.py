"""The upstream engine: a model served by OpenAI-compatible servers over HTTP.

Any server that speaks ``/v1/chat/completions`` (and ``/v1/embeddings`` for an
embedding model) works: vLLM, SGLang, llama.cpp's server, llama-cpp-python,
Ollama, TGI, a hosted provider, or another inferq. Configured in the models file
(settings: :mod:`inferq.engines.upstream_config`)::

    [models."qwen-7b"]
    engine = "openai_upstream"
    context_length = 8192
    [[models."qwen-7b".endpoints]]
    base_url = "http://gpu1:8000/v1"
    api_key_env = "GPU1_KEY"          # the key is read from this variable at start
    model = "Qwen/Qwen2.5-7B-Instruct"  # the upstream's name; default: the inferq name
    max_concurrency = 16
    priority = "vllm"                 # "vllm", "sglang" or "none" (the default)

How it behaves:

- ``slots`` is the sum of the endpoints' ``max_concurrency``, so the runner keeps
  every endpoint full. Each request goes to the healthy endpoint with the most free
  capacity (ties in turn); when the healthy ones are full it waits for one.
- One ``httpx.AsyncClient`` per endpoint. A health loop GETs ``{base_url}/models``
  every ``health_interval`` seconds: ``unhealthy_after`` failures in a row (a
  connection error, a timeout, a 5xx, a 401 or 403) take the endpoint out, one
  success puts it back. A request that cannot connect takes its endpoint out at once
  and goes to another. With no healthy endpoint a request waits up to
  ``wait_for_endpoint`` seconds, then fails as :class:`EngineUnavailable`
  (retryable: the job goes back to the queue). The engine is ``ready`` once started,
  reachable or not, so the API keeps queueing jobs while every upstream is down.
- 429, 408, 5xx and transport errors are retried, on another endpoint when there is
  one, up to ``max_attempts`` tries in all, after an exponential backoff with full
  jitter (``Retry-After`` wins when the upstream sends it); then
  :class:`EngineUnavailable`. A context-length error is :class:`PromptTooLong`
  (a 400 for the client, never retried); any other 4xx is a non-retryable
  :class:`EngineError` with the upstream's message. Nothing is retried here once
  text has been streamed: that failure is retryable for the runner instead.
- Chat streams (``stream_options.include_usage``), feeding ``on_text`` per delta.
  Usage comes from the usage chunk (``prompt_tokens_details.cached_tokens`` as the
  cached tokens); an upstream that sends none (llama-cpp-python) gets its content
  chunks counted as completion tokens and no prompt tokens. A stream that breaks
  before its first event is asked again without streaming, so an upstream that
  only fails inside the stream (llama-cpp-python checks the context there) still
  reports its error.
- Abort closes the upstream connection at once, whether or not a token is arriving:
  the upstream sees the disconnect and stops generating.
- Priority: engines get one "higher is more urgent" number
  (:func:`inferq.engines.base.urgency`). ``priority = "vllm"`` sends it negated as
  ``priority`` (vLLM runs lower values first; start it with
  ``--scheduling-policy priority``); ``"sglang"`` sends it as is (SGLang runs
  higher values first with ``--enable-priority-scheduling``; with
  ``--schedule-low-priority-values-first`` choose ``"vllm"``; an inferq upstream
  also runs higher first: ``"sglang"``); ``"none"`` sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from inferq import __version__
from inferq.core.errors import ConfigError, EngineError, EngineUnavailable
from inferq.core.events import cancel_and_wait, wait_event
from inferq.core.work import ChatRequest, ChatResult, EmbedRequest, EmbedResult, Usage
from inferq.engines.base import (
    ABORTED,
    AbortSignal,
    Call,
    Engine,
    ModelSpec,
    normalise,
    unless_aborted,
)
from inferq.engines.upstream_config import EndpointConfig, UpstreamSettings, parse_settings
from inferq.engines.upstream_wire import (
    UPSTREAM_ABORTS,
    ChatProgress,
    Retry,
    backoff_delay,
    chat_body,
    describe,
    feed_chunk,
    feed_completion,
    json_body,
    json_event,
    needs_whole,
    priority_field,
    raise_for_status,
    sse_data,
    usage_of,
)

__all__ = ["UpstreamEngine"]

T = TypeVar("T")
log = logging.getLogger("inferq.engines.upstream")


class _Endpoint:
    """One upstream server and what this engine knows of it."""

    def __init__(self, index: int, config: EndpointConfig, client: httpx.AsyncClient) -> None:
        self.index = index
        self.config = config
        self.client = client
        self.in_flight = 0
        self.healthy = True
        #: failed health checks in a row
        self.failures = 0
        self.last_error = ""

    @property
    def url(self) -> str:
        return self.config.base_url

    @property
    def free(self) -> int:
        return self.config.max_concurrency - self.in_flight


class UpstreamEngine(Engine):
    """A model served by one or more OpenAI-compatible endpoints."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(spec)
        self.settings: UpstreamSettings = parse_settings(spec.name, spec.options)
        self._dimensions = self.settings.dimensions
        #: for tests: one transport (e.g. ``httpx.MockTransport``) for every endpoint
        self._transport = transport
        self._rng = rng or random.Random()
        self._endpoints: list[_Endpoint] = []
        self._health: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._turn = 0

    # -- the port -----------------------------------------------------------------

    @property
    def slots(self) -> int:
        return self.settings.slots

    @property
    def ready(self) -> bool:
        # Started, not "reachable": while every upstream is down the queue still takes
        # jobs (they wait, then go back to the queue), so /readyz must not fail for it.
        return bool(self._endpoints)

    @property
    def dimensions(self) -> int | None:
        return self._dimensions if self._embeds else None

    @property
    def endpoints(self) -> list[dict[str, Any]]:
        """Each endpoint's state: url, healthy, in_flight, last_error."""
        return [
            {
                "url": e.url,
                "healthy": e.healthy,
                "in_flight": e.in_flight,
                "last_error": e.last_error,
            }
            for e in self._endpoints
        ]

    async def start(self) -> None:
        if self._endpoints:
            return
        keys = [self._api_key(config) for config in self.settings.endpoints]
        clients = [
            self._client(c, key) for c, key in zip(self.settings.endpoints, keys, strict=True)
        ]
        self._endpoints = [
            _Endpoint(i, config, client)
            for i, (config, client) in enumerate(zip(self.settings.endpoints, clients, strict=True))
        ]
        await self._check_all(first=True)
        self._health = asyncio.create_task(self._health_loop())

    async def close(self) -> None:
        if self._health is not None:
            await cancel_and_wait(self._health)
            self._health = None
        endpoints, self._endpoints = self._endpoints, []
        for endpoint in endpoints:
            await endpoint.client.aclose()
        self._notify()

    async def _generate(self, request: ChatRequest, call: Call) -> ChatResult:
        body = chat_body(request)
        progress = ChatProgress(call.on_text)
        progress.plain = needs_whole(request)

        def attempt(endpoint: _Endpoint) -> Awaitable[ChatResult]:
            return self._chat_attempt(endpoint, body, call.priority, progress)

        result = await self._call(call.abort, attempt)
        return progress.result(ABORTED) if result is None else result

    async def _embed(self, request: EmbedRequest, call: Call) -> EmbedResult:
        def attempt(endpoint: _Endpoint) -> Awaitable[EmbedResult]:
            return self._embed_attempt(endpoint, request, call.priority)

        result = await self._call(call.abort, attempt)
        return EmbedResult(vectors=(), usage=Usage()) if result is None else result

    # -- attempts -----------------------------------------------------------------

    async def _call(
        self, abort: AbortSignal, attempt: Callable[[_Endpoint], Awaitable[T]]
    ) -> T | None:
        """``attempt`` on an endpoint, retried as the module says; None once aborted."""
        limit = self.settings.max_attempts
        tried: set[int] = set()
        for number in range(1, limit + 1):
            endpoint = await self._acquire(abort, avoid=tried)
            if endpoint is None:
                return None
            try:
                return await unless_aborted(abort, attempt(endpoint))
            except Retry as exc:
                failure = exc
            finally:
                self._release(endpoint)
            tried.add(endpoint.index)
            if failure.endpoint_down:
                self._mark_down(endpoint, failure.message)
            log.warning(
                "model %s: attempt %d/%d on %s failed: %s",
                self.spec.name,
                number,
                limit,
                endpoint.url,
                failure.message,
            )
            if number == limit:
                break
            if failure.endpoint_down and self._pick(avoid=tried, strict=True) is not None:
                continue  # straight to another endpoint
            delay = backoff_delay(
                number,
                base=self.settings.backoff,
                cap=self.settings.max_backoff,
                retry_after=failure.retry_after,
                max_retry_after=self.settings.max_retry_after,
                rng=self._rng,
            )
            if await abort.wait(delay):
                return None
        raise EngineUnavailable(
            f"the upstream servers of {self.spec.name} failed {limit} attempts; "
            f"the last: {failure.message}"
        )

    async def _chat_attempt(
        self,
        endpoint: _Endpoint,
        body: dict[str, Any],
        priority: int | None,
        progress: ChatProgress,
    ) -> ChatResult:
        payload = self._payload(endpoint, body, priority)
        progress.begin()
        try:
            if progress.plain:
                response = await endpoint.client.post("chat/completions", json=payload)
                raise_for_status(response)
                feed_completion(progress, json_body(response))
            else:
                payload["stream"] = True
                payload["stream_options"] = {"include_usage": True}
                async with endpoint.client.stream(
                    "POST", "chat/completions", json=payload
                ) as response:
                    if response.is_error:
                        await response.aread()
                        raise_for_status(response)
                    async for data in sse_data(response):
                        if data == "[DONE]":
                            break
                        feed_chunk(progress, json_event(data))
        except httpx.RequestError as exc:
            raise self._transport_failure(exc, progress) from exc
        except Retry as exc:
            if progress.emitted:
                raise EngineUnavailable(f"the upstream stream failed: {exc.message}") from exc
            raise
        if progress.finish is None or progress.finish in UPSTREAM_ABORTS:
            what = "stopped the request" if progress.finish else "ended without a finish_reason"
            if progress.emitted:
                raise EngineUnavailable(f"the upstream {what} after it began to answer")
            progress.plain = progress.plain or progress.events == 0
            raise Retry(f"the upstream {what}")
        return progress.result(progress.finish)

    def _transport_failure(self, exc: httpx.RequestError, progress: ChatProgress) -> Exception:
        described = describe(exc)
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return Retry(f"cannot connect: {described}", endpoint_down=True)
        if progress.emitted:
            return EngineUnavailable(f"the upstream stream broke after it began: {described}")
        if progress.events == 0 and isinstance(exc, httpx.NetworkError | httpx.ProtocolError):
            progress.plain = True
        return Retry(described)

    async def _embed_attempt(
        self, endpoint: _Endpoint, request: EmbedRequest, priority: int | None
    ) -> EmbedResult:
        payload = self._payload(endpoint, {"input": list(request.inputs)}, priority)
        payload["encoding_format"] = "float"
        try:
            response = await endpoint.client.post("embeddings", json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Retry(f"cannot connect: {describe(exc)}", endpoint_down=True) from exc
        except httpx.RequestError as exc:
            raise Retry(describe(exc)) from exc
        raise_for_status(response, param="input")
        try:
            data = sorted(json_body(response)["data"], key=lambda item: int(item.get("index", 0)))
            vectors = tuple(normalise([float(x) for x in item["embedding"]]) for item in data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Retry(f"the upstream sent malformed embeddings: {exc!r}") from exc
        if len(vectors) != len(request.inputs):
            raise EngineError(
                f"the upstream returned {len(vectors)} vectors for {len(request.inputs)} inputs"
            )
        if vectors:
            self._dimensions = len(vectors[0])
        usage = usage_of(json_body(response).get("usage"))
        return EmbedResult(vectors=vectors, usage=Usage(prompt_tokens=usage.prompt_tokens))

    def _payload(
        self, endpoint: _Endpoint, body: dict[str, Any], priority: int | None
    ) -> dict[str, Any]:
        payload = {"model": endpoint.config.model, **body}
        value = priority_field(endpoint.config.priority, priority)
        if value is not None:
            payload["priority"] = value
        return payload

    # -- endpoints ----------------------------------------------------------------

    def _api_key(self, config: EndpointConfig) -> str | None:
        if not config.api_key_env:
            return None
        key = os.environ.get(config.api_key_env, "")
        if not key:
            raise ConfigError(
                f"model {self.spec.name!r}: endpoint {config.base_url} reads its API key "
                f"from the environment variable {config.api_key_env}, which is not set"
            )
        return key

    def _client(self, config: EndpointConfig, key: str | None) -> httpx.AsyncClient:
        headers = {"user-agent": f"inferq/{__version__}"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        s = self.settings
        return httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(s.read_timeout, connect=s.connect_timeout, pool=None),
            limits=httpx.Limits(
                max_connections=config.max_concurrency + 2,
                max_keepalive_connections=config.max_concurrency + 2,
            ),
            transport=self._transport,
        )

    def _pick(self, *, avoid: set[int], strict: bool = False) -> _Endpoint | None:
        """The healthy endpoint with the most free capacity, preferring those not in
        ``avoid`` (only those when ``strict``); ties go round in turn."""
        count = len(self._endpoints)
        order = [self._endpoints[(self._turn + i) % count] for i in range(count)]
        open_ = [e for e in order if e.healthy and e.free > 0]
        fresh = [e for e in open_ if e.index not in avoid]
        candidates = fresh if fresh or strict else open_
        return max(candidates, key=lambda e: e.free) if candidates else None

    async def _acquire(self, abort: AbortSignal, *, avoid: set[int]) -> _Endpoint | None:
        """An endpoint with a request counted on it; None once aborted."""
        deadline: float | None = None
        while True:
            if not self._endpoints:
                raise EngineUnavailable(f"the model {self.spec.name} is not started")
            endpoint = self._pick(avoid=avoid)
            if endpoint is not None:
                endpoint.in_flight += 1
                self._turn += 1
                return endpoint
            timeout: float | None = None
            if any(e.healthy for e in self._endpoints):
                deadline = None  # all busy: a request ends soon
            else:
                now = time.monotonic()
                deadline = deadline or now + self.settings.wait_for_endpoint
                if now >= deadline:
                    raise EngineUnavailable(
                        f"no upstream server of {self.spec.name} is reachable: "
                        + "; ".join(f"{e.url}: {e.last_error}" for e in self._endpoints)
                    )
                timeout = deadline - now
            if await unless_aborted(abort, wait_event(self._changed, timeout)) is None:
                return None

    def _release(self, endpoint: _Endpoint) -> None:
        endpoint.in_flight -= 1
        self._notify()

    def _notify(self) -> None:
        """Wake every request waiting for an endpoint to look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _mark_down(self, endpoint: _Endpoint, reason: str) -> None:
        endpoint.last_error = reason
        endpoint.failures = max(endpoint.failures, self.settings.unhealthy_after)
        if endpoint.healthy:
            endpoint.healthy = False
            log.warning("model %s: upstream %s is down: %s", self.spec.name, endpoint.url, reason)
            self._notify()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.health_interval)
            try:
                await self._check_all()
            except Exception:  # the loop must outlive any surprise
                log.exception("model %s: health check failed", self.spec.name)

    async def _check_all(self, *, first: bool = False) -> None:
        await asyncio.gather(*(self._check(e, first=first) for e in self._endpoints))

    async def _check(self, endpoint: _Endpoint, *, first: bool) -> None:
        problem = ""
        try:
            response = await endpoint.client.get("models", timeout=self.settings.health_timeout)
        except httpx.HTTPError as exc:
            problem = describe(exc)
        else:
            if response.status_code >= 500 or response.status_code in (401, 403):
                problem = f"GET models answered {response.status_code}"
                if response.status_code in (401, 403):
                    problem += f": check the key in {endpoint.config.api_key_env or 'api_key_env'}"
        if not problem:
            endpoint.failures = 0
            if not endpoint.healthy:
                endpoint.healthy = True
                log.info("model %s: upstream %s is back up", self.spec.name, endpoint.url)
                self._notify()
            return
        endpoint.failures += 1
        endpoint.last_error = problem
        if first or endpoint.failures >= self.settings.unhealthy_after:
            self._mark_down(endpoint, problem)
