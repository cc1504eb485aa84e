"""Helpers of the integration suite: starting servers, submitting and waiting on jobs."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import together

from tests.support.server import DEFAULT_MODEL, Server

T = TypeVar("T")

MODEL = DEFAULT_MODEL
#: a prompt SmolLM2 answers at length (greedy decoding does not stop before 1500 tokens)
LONG_PROMPT = "Write a very long story about a dragon."
#: max_tokens of a blocker: many seconds of generation, always cancelled by the test
BLOCKER_TOKENS = 1500
#: the real model with one slot: every job runs alone, in claim order. One thread, like
#: each slot of the default server: llama.cpp's threads spin-wait on each other, so two
#: threads on a busy two-core machine make every token erratically slow.
ONE_SLOT_MODELS = f"""\
[models."{MODEL}"]
engine = "llamacpp"
slots = 1
context_length = 2048
threads = 1
"""
#: what the integration servers run unless a test says otherwise: the default models,
#: the chat model with one slot, so a queued job stays pending while another runs and a
#: sync request gets its slot by preempting queued work
TEST_MODELS = (
    ONE_SLOT_MODELS
    + """
[models."smollm2-135m-embed"]
engine = "llamacpp"
embedding = true
context_length = 512
slots = 2
threads = 1
"""
)
#: seconds within which a cancelled or timed-out generation must have given its slot back;
#: one that kept going would hold it for many seconds more (BLOCKER_TOKENS, or 500 tokens)
ABORT_WITHIN = 2.0
#: how long a test waits for jobs to get where it needs them (not a timing assertion)
PATIENCE = 120.0
#: the Together statuses a job never leaves
FINAL = frozenset({"done", "failed", "canceled"})
#: wide enough that ``inferq jobs list`` never truncates a job id
CLI_ENV = {"COLUMNS": "400"}

_names = itertools.count()


def start_server(
    root: Path,
    *,
    models: str | None = None,
    env: dict[str, str] | None = None,
) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    models_file = root / "models.toml"
    models_file.write_text(TEST_MODELS if models is None else models)
    srv = Server(root / "data", models_file=models_file, env={**CLI_ENV, **(env or {})})
    try:
        return srv.start()
    except BaseException:
        srv.kill()
        raise


def new_key(server: Server, tenant: str) -> str:
    """A fresh key of ``tenant`` (key names are unique per server)."""
    return server.create_key(f"{tenant}-{next(_names)}", tenant)


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float = PATIENCE,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}")
        time.sleep(interval)


def chat_payload(
    content: str = "Say hello.", *, max_tokens: int = 8, **extra: Any
) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


def blocker_payload() -> dict[str, Any]:
    return chat_payload(LONG_PROMPT, max_tokens=BLOCKER_TOKENS)


def submit(client: together.Together, payload: dict[str, Any], **kwargs: Any) -> str:
    request_id = client.beta.jig.queue.submit(model=MODEL, payload=payload, **kwargs).request_id
    assert isinstance(request_id, str) and request_id
    return request_id


def status(client: together.Together, request_id: str) -> Any:
    return client.beta.jig.queue.retrieve(model=MODEL, request_id=request_id)


def wait_status(
    client: together.Together, request_id: str, wanted: set[str], *, timeout: float = PATIENCE
) -> Any:
    def reached() -> Any:
        job = status(client, request_id)
        if job.status in FINAL - wanted:
            raise AssertionError(
                f"job {request_id} ended {job.status}, not {sorted(wanted)}: {job}"
            )
        return job.status in wanted and job

    return wait_until(reached, timeout=timeout, what=f"job {request_id} to be {sorted(wanted)}")


def metrics(client: together.Together) -> Any:
    return client.beta.jig.queue.metrics(model=MODEL)


def start_blocker(client: together.Together, **kwargs: Any) -> str:
    """A long job, returned once a worker runs it."""
    request_id = submit(client, blocker_payload(), **kwargs)
    wait_status(client, request_id, {"running"})
    return request_id


def cancel_quietly(client: together.Together, request_id: str) -> None:
    """Cancel a job that may already have ended (test cleanup)."""
    with contextlib.suppress(together.ConflictError):
        client.beta.jig.queue.cancel(model=MODEL, request_id=request_id)


def drain(client: together.Together) -> None:
    """Wait until the caller's tenant has nothing running (cleanup between tests)."""
    client.beta.jig.queue.clear(model=MODEL)
    wait_until(lambda: metrics(client).messages_running == 0, what="the running jobs to end")


def jobs_of(server: Server, tenant: str, state: str | None = None) -> list[list[str]]:
    """Rows (id, tenant, model, origin, class, prio, state, ...) of ``inferq jobs list``."""
    args = ["jobs", "list", "--tenant", tenant, "--limit", "1000"]
    if state is not None:
        args += ["--state", state]
    rows = []
    for line in server.cli(*args).splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) >= 7 and cells[1] == tenant:
            rows.append(cells)
    return rows


def raw(server: Server, key: str | None = None, *, dialect: str = "bearer") -> httpx.Client:
    """An httpx client with the key in the header a dialect's clients send."""
    headers = {}
    if key is not None:
        headers = {"api_key": key} if dialect == "infera" else {"authorization": f"Bearer {key}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)
