"""``kill -9`` of the server while background responses run: none is lost, none runs twice.

A server on the real model (one slot, a short worker lease; on SQLite, then on
PostgreSQL) gets four background responses, one of them streamed. Once the first one is
generating (its stream has sent text), the server is killed; it restarts on the same
data directory (and database). Then every response must end ``completed`` or
``incomplete`` with exactly one answer; the job table must hold exactly those four
responses, the one running at the kill retried; the server log must record one success
per response; and the stream, resumed after the restart from the last event the client
had, must go on where it stopped: greedy decoding gives the same text again, so the
deltas from before and after the kill make the final text, none missing, none twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Late
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.acceptance.cluster import schema_url
from tests.integration.helpers import MODEL, jobs_of, start_server, wait_until
from tests.support.postgres import server_schema
from tests.support.server import Server

pytestmark = pytest.mark.integration

#: worker lease; a response whose server died is re-claimed this long after its last beat
LEASE_SECONDS = "2"
ENDED = {"completed", "incomplete", "failed", "cancelled"}
DELTA = "response.output_text.delta"
#: how long the resumed stream may take in all (the server sends keepalives meanwhile,
#: so the client's read timeout never ends a stream that waits for its rerun)
RESUME_DEADLINE = 180.0


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=0, timeout=60)


def job_id(response_id: str) -> str:
    """The job behind a response (its id is the job's UUID in hex)."""
    return str(uuid.UUID(response_id.removeprefix("resp_")))


def create(oai: openai.OpenAI, n: int, *, max_output_tokens: int = 40, **extra: Any) -> Any:
    return oai.responses.create(
        model=MODEL,
        input=f"Write a short poem about the number {n}.",
        max_output_tokens=max_output_tokens,
        temperature=0,
        background=True,
        **extra,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The server's store: its own SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield {}
        return
    with server_schema() as name:
        yield {"INFERQ_DATABASE_URL": schema_url(name)}


def resume(server: Server, oai: openai.OpenAI, rid: str, last: int) -> list[Any]:
    """The events of ``rid``'s stream after ``last``, read within the deadline; past it,
    the failure says how the response and its job stood (the server's log comes with
    every failed test)."""
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(
            lambda: list(oai.responses.retrieve(rid, stream=True, starting_after=last))
        )
        try:
            return reading.result(timeout=RESUME_DEADLINE)
        except Late:
            found = oai.responses.retrieve(rid)
            rows = [r for r in jobs_of(server, "crash") if r[0] == job_id(rid)]
            server.kill()  # ends the stuck read
            raise AssertionError(
                f"the resumed stream did not end in {RESUME_DEADLINE:.0f} s; the response"
                f" is {found.status}, its job {rows}"
            ) from None


@pytest.mark.slow
def test_kill_9_during_a_background_response(tmp_path: Path, database: dict[str, str]) -> None:
    server = start_server(tmp_path, env={"INFERQ_LEASE_SECONDS": LEASE_SECONDS, **database})
    try:
        key = server.create_key("crash", "crash")
        with client(server, key) as oai:
            # long enough that it is still generating when the kill comes, after the
            # three other responses are created (40 tokens took 0.4 s here: on a busy
            # machine it ended before the kill, and nothing was left to run again)
            stream = create(oai, 0, stream=True, max_output_tokens=120)
            seen = []
            for event in stream:
                seen.append(event)
                if event.type == DELTA and len(seen) >= 8:
                    break  # generating: the kill comes mid-answer
            rid = seen[0].response.id
            others = [create(oai, n).id for n in (1, 2, 3)]
            server.kill()
            stream.close()

        server.start()
        with client(server, key) as oai:
            last = seen[-1].sequence_number
            rest = resume(server, oai, rid, last)
            assert [e.sequence_number for e in rest] == list(range(last + 1, last + 1 + len(rest)))
            assert rest[-1].type in ("response.completed", "response.incomplete")
            streamed = "".join(e.delta for e in [*seen, *rest] if e.type == DELTA)
            assert streamed == rest[-1].response.output_text

            ended = {}
            for response_id in [rid, *others]:
                ended[response_id] = wait_until(
                    lambda r=response_id: (
                        (found := oai.responses.retrieve(r)).status in ENDED and found
                    ),
                    what=f"response {response_id} to end",
                )
            for found in ended.values():
                assert found.status in ("completed", "incomplete"), found
                assert len(found.output) == 1 and found.output_text.strip()
            assert ended[rid].output_text == streamed

            rows = jobs_of(server, "crash")
            assert sorted(r[0] for r in rows) == sorted(map(job_id, ended))
            assert {r[3] for r in rows} == {"openai-responses"}
            assert {r[6] for r in rows} == {"succeeded"}
            log = server.log()
            for row in rows:
                assert log.count(f"job {row[0]} succeeded") == 1, row
            assert f"job {job_id(rid)} running (attempt 2" in log
    finally:
        server.kill()
