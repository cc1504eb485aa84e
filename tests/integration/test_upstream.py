"""The openai_upstream engine against real OpenAI-compatible servers, through inferq:
llama-cpp-python's own server on the SmolLM2 file, a second inferq instance, and a
tiny scripted upstream (uvicorn in a thread) for retries and errors.
tests/unit/test_upstream.py covers the engine's logic in detail."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import together
import uvicorn

from inferq.engines.fake import fake_vector
from inferq.engines.llamacpp import default_model_path
from tests.integration.helpers import LONG_PROMPT, new_key, start_server, wait_until
from tests.support.server import Server, free_port

pytestmark = pytest.mark.integration

LLAMA_KEY = "llama-test-key"
#: the inferq model served by llama-cpp-python's server
SMOL = "smol-upstream"
#: seconds within which the upstream must see a cancelled job's stream close
CLOSED_WITHIN = 5.0


# -- llama-cpp-python's server -------------------------------------------------------------


#: ``python -m llama_cpp.server`` with the weights in plain CPU buffers, as inferq's engine
#: keeps them: llama.cpp's extra buffer types include AMX, whose matrix multiplication
#: crashes (SIGSEGV) on some machines with AMX, and the server has no flag to turn them off
SERVER_MAIN = """
import runpy, sys
import llama_cpp.llama_cpp as lib
default = lib.llama_model_default_params
def params():
    p = default()
    p.use_extra_bufts = False
    return p
lib.llama_model_default_params = params
sys.argv[0] = "llama_cpp.server"
runpy.run_module("llama_cpp.server", run_name="__main__")
"""


class LlamaServer:
    """``python -m llama_cpp.server`` on the SmolLM2 GGUF, on a free port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> LlamaServer:
        args = [
            sys.executable,
            "-c",
            SERVER_MAIN,
            "--model",
            str(default_model_path()),
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "2048",
            "--n_threads",
            "1",
            "--api_key",
            LLAMA_KEY,
            # by default a new request cuts the stream being generated short
            "--interrupt_requests",
            "false",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        headers = {"authorization": f"Bearer {LLAMA_KEY}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"llama_cpp.server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/models", headers=headers, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"llama_cpp.server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path_factory.mktemp("llama") / "llama.log")
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory, llama: LlamaServer) -> Iterator[Server]:
    """inferq whose model is served by the llama-cpp-python server (one at a time)."""
    models = f"""\
[models."{SMOL}"]
engine = "openai_upstream"
context_length = 2048
[[models."{SMOL}".endpoints]]
base_url = "{llama.url}"
api_key_env = "LLAMA_KEY"
model = "smollm2"
max_concurrency = 1
"""
    server = start_server(
        tmp_path_factory.mktemp("front"), models=models, env={"LLAMA_KEY": LLAMA_KEY}
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def front_key(front: Server) -> str:
    return new_key(front, "upstream")


def test_chat_through_llama_cpp_server(front: Server, front_key: str) -> None:
    with openai.OpenAI(api_key=front_key, base_url=front.url + "/v1") as client:
        messages: Any = [{"role": "user", "content": "Name a colour."}]
        reply = client.chat.completions.create(
            model=SMOL, messages=messages, max_tokens=8, temperature=0
        )
        choice = reply.choices[0]
        assert choice.message.content and choice.message.content.strip()
        assert choice.finish_reason in ("stop", "length")
        assert reply.usage is not None
        assert 0 < reply.usage.completion_tokens <= 8
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

        pieces: list[str] = []
        usage = None
        for chunk in client.chat.completions.create(
            model=SMOL,
            messages=messages,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        # not compared with the first answer: llama-cpp-python reuses the cached prompt,
        # which changes the logits' last bits and can flip even greedy decoding
        assert "".join(pieces).strip()
        assert usage is not None and 0 < usage.completion_tokens <= 8


def test_prompt_beyond_the_upstream_context_is_a_400(front: Server, front_key: str) -> None:
    with (
        openai.OpenAI(api_key=front_key, base_url=front.url + "/v1", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as info,
    ):
        client.chat.completions.create(
            model=SMOL,
            messages=[{"role": "user", "content": "word " * 3000}],
            max_tokens=8,
        )
    assert info.value.status_code == 400
    assert "context" in str(info.value)


def test_queue_job_runs_and_cancel_closes_the_upstream_stream(
    front: Server, front_key: str, llama: LlamaServer
) -> None:
    with together.Together(api_key=front_key, base_url=front.url) as client:
        queue = client.beta.jig.queue

        def job(request_id: str) -> Any:
            return queue.retrieve(model=SMOL, request_id=request_id)

        payload = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
        short = queue.submit(model=SMOL, payload=payload).request_id
        done = wait_until(
            lambda: (s := job(short)).status == "done" and s,
            timeout=60,
            what="the queued job to finish",
        )
        assert done.outputs["choices"][0]["message"]["content"].strip()
        assert 0 < done.outputs["usage"]["completion_tokens"] <= 8

        disconnects = llama.log().count("Disconnected from client")
        long = {"messages": [{"role": "user", "content": LONG_PROMPT}], "max_tokens": 1500}
        blocker = queue.submit(model=SMOL, payload=long).request_id
        wait_until(
            lambda: (s := job(blocker)).status == "running" and s.info.get("progress", 0) > 0,
            timeout=60,
            what="the long job to stream tokens",
        )
        assert queue.cancel(model=SMOL, request_id=blocker).status == "canceled"
        wait_until(
            lambda: llama.log().count("Disconnected from client") > disconnects,
            timeout=CLOSED_WITHIN,
            what="llama_cpp.server to see the stream closed",
        )
    # the slot and the upstream are free again
    with openai.OpenAI(api_key=front_key, base_url=front.url + "/v1") as oai:
        reply = oai.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content


# -- a second inferq, and a scripted upstream ---------------------------------------------------


class ScriptedUpstream:
    """A tiny OpenAI-compatible chat server; the last user message says what it does:
    ``flaky…`` answers 503 the first time, ``limited…`` 429 the first time,
    ``too long`` a context-length 400; anything else streams ``scripted: <message>``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls: Counter[str] = Counter()
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            lifespan="off",
            interface="asgi3",
            ws="none",
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ScriptedUpstream:
        self.thread.start()
        wait_until(lambda: self.server.started, timeout=10, what="the scripted upstream")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if scope["method"] == "GET":
            await _send_json(send, 200, {"object": "list", "data": [{"id": "scripted"}]})
            return
        text = json.loads(body)["messages"][-1]["content"]
        self.calls[text] += 1
        if text.startswith("flaky") and self.calls[text] == 1:
            await _send_json(
                send, 503, {"error": {"message": "overloaded"}}, [(b"retry-after", b"0")]
            )
        elif text.startswith("limited") and self.calls[text] == 1:
            await _send_json(send, 429, {"error": {"message": "slow down", "type": "rate_limit"}})
        elif text == "too long":
            error = {
                "message": "This model's maximum context length is 512 tokens.",
                "code": "context_length_exceeded",
            }
            await _send_json(send, 400, {"error": error})
        else:
            await _send_stream(send, f"scripted: {text}")


async def _send_json(
    send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _send_stream(send: Any, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    words = text.split(" ")
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
    chunks += [
        {"choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w}}]}
        for i, w in enumerate(words)
    ]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": len(words)}})
    for chunk in chunks:
        event = f"data: {json.dumps(chunk)}\n\n".encode()
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


A_MODELS = """\
[models.fake]
engine = "fake"
context_length = 512
slots = 4

[models.emb]
engine = "fake"
embedding = true
dimensions = 8
context_length = 512
slots = 2
"""


@pytest.fixture(scope="module")
def inferq_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("inferq-a"), models=A_MODELS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def dead_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def inferq_b(
    tmp_path_factory: pytest.TempPathFactory,
    inferq_a: Server,
    scripted: ScriptedUpstream,
    dead_port: int,
) -> Iterator[Server]:
    """inferq whose models are served by inferq A, a dead port and the scripted upstream."""
    a = f"{inferq_a.url}/v1"
    models = f"""\
[models.relay]
engine = "openai_upstream"
context_length = 512
[[models.relay.endpoints]]
base_url = "{a}"
api_key_env = "A_KEY"
model = "fake"
max_concurrency = 2
priority = "sglang"

[models."relay-embed"]
engine = "openai_upstream"
embedding = true
context_length = 512
[[models."relay-embed".endpoints]]
base_url = "{a}"
api_key_env = "A_KEY"
model = "emb"
max_concurrency = 2

[models.failover]
engine = "openai_upstream"
context_length = 512
[[models.failover.endpoints]]
base_url = "http://127.0.0.1:{dead_port}/v1"
max_concurrency = 2
[[models.failover.endpoints]]
base_url = "{a}"
api_key_env = "A_KEY"
model = "fake"
max_concurrency = 2

[models.scripted]
engine = "openai_upstream"
context_length = 512
backoff = 0.05
[[models.scripted.endpoints]]
base_url = "http://127.0.0.1:{scripted.port}/v1"
max_concurrency = 2
"""
    a_key = new_key(inferq_a, "relay")
    server = start_server(tmp_path_factory.mktemp("inferq-b"), models=models, env={"A_KEY": a_key})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def b_client(inferq_b: Server) -> Iterator[openai.OpenAI]:
    key = new_key(inferq_b, "client")
    with openai.OpenAI(api_key=key, base_url=inferq_b.url + "/v1", max_retries=0) as client:
        yield client


def test_chat_through_a_second_inferq(b_client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "hello relay"}]
    reply = b_client.chat.completions.create(model="relay", messages=messages, max_tokens=8)
    assert reply.choices[0].message.content == "echo: hello relay"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    # A's fake engine counts the words (+1 per message) and the words it said
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 3)

    pieces, usage = [], None
    for chunk in b_client.chat.completions.create(
        model="relay",
        messages=messages,
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert "".join(pieces) == "echo: hello"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 2)


def test_embeddings_through_a_second_inferq(b_client: openai.OpenAI) -> None:
    texts = ["the cat sat", "stock markets fell"]
    response = b_client.embeddings.create(model="relay-embed", input=texts, encoding_format="float")
    for text, item in zip(texts, response.data, strict=True):
        assert item.embedding == pytest.approx(list(fake_vector(text, 8)), abs=1e-6)
    assert response.usage.prompt_tokens == 6


def test_a_dead_endpoint_is_taken_out_and_requests_still_succeed(
    b_client: openai.OpenAI, inferq_b: Server, dead_port: int
) -> None:
    for i in range(4):
        reply = b_client.chat.completions.create(
            model="failover", messages=[{"role": "user", "content": f"try {i}"}], max_tokens=8
        )
        assert reply.choices[0].message.content == f"echo: try {i}"
    assert f"upstream http://127.0.0.1:{dead_port}/v1 is down" in inferq_b.log()


def test_503_and_429_are_retried(b_client: openai.OpenAI, scripted: ScriptedUpstream) -> None:
    for text in ("flaky one", "limited one"):
        reply = b_client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": text}], max_tokens=8
        )
        assert reply.choices[0].message.content == f"scripted: {text}"
        assert reply.usage is not None and reply.usage.prompt_tokens == 5
        assert scripted.calls[text] == 2


def test_upstream_context_length_error_is_a_400(
    b_client: openai.OpenAI, scripted: ScriptedUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        b_client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "too long"}], max_tokens=8
        )
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"
    assert "maximum context length" in info.value.message
    assert scripted.calls["too long"] == 1  # not retried
