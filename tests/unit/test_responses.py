"""OpenAI's Responses API in-process (memory store, fake engine): the exact bodies, the
event sequence and its numbering, background runs, resumes and the errors.

tests/integration/test_responses.py runs the same through the official SDK against a
real server and model.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.api.openai.responses_schemas import (
    Record,
    ResponseCreate,
    chat_request,
    input_items,
    record,
    render_response,
)
from inferq.api.openai.responses_stream import ended_transcript, replay, transcripts, units
from inferq.config import Settings
from inferq.core.events import JobEvents
from inferq.core.keys import KeyService
from inferq.core.models import Job, Lease
from inferq.core.ports import ClaimOrder
from inferq.core.service import JobService
from inferq.core.states import JobState, ServiceClass
from inferq.core.structured import Tool, ToolCall, ToolChoice
from inferq.core.work import ChatMessage, ChatRequest, ChatResult, Usage
from inferq.engines.base import ModelSpec
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore

URL = "/v1/responses"
BODY: dict[str, Any] = {"model": "fake", "input": "hello there world", "max_output_tokens": 20}
ENDED = {"completed", "incomplete", "failed", "cancelled"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = MemoryStore()
    registry = ModelRegistry(
        {
            "fake": ModelSpec(name="fake", engine="fake", context_length=256, slots=2),
            # one word every 50 ms
            "slow": ModelSpec(
                name="slow",
                engine="fake",
                context_length=256,
                slots=1,
                options={"token_delay": 0.05},
            ),
        }
    )
    app = create_app(Settings(data_dir=tmp_path), store=store, registry=registry)
    with TestClient(app) as test_client:
        keys = KeyService(store)
        _, secret = asyncio.run(keys.create(name="a", tenant="ta"))
        _, other = asyncio.run(keys.create(name="b", tenant="tb"))
        test_client.headers["authorization"] = f"Bearer {secret}"
        test_client.app.state.other_key = other
        yield test_client


def events(client: TestClient, method: str, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    with client.stream(method, url, **kwargs) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == [d["type"] for d in data]
    return data


def wait_status(client: TestClient, rid: str, wanted: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        body = client.get(f"{URL}/{rid}").json()
        if body["status"] in wanted:
            return body
        time.sleep(0.02)
    raise AssertionError(f"response {rid} never became {wanted}: {body}")


def text_of(body: dict[str, Any]) -> str:
    return "".join(part["text"] for item in body["output"] for part in item["content"])


def test_units_cut_only_what_more_text_cannot_change() -> None:
    text = "Hello  world,\nthis is\ta test. "
    final = units(text, final=True)
    assert "".join(final) == text
    for n in range(len(text) + 1):
        partial = units(text[:n], final=False)
        assert final[: len(partial)] == partial


def test_a_response(client: TestClient) -> None:
    extra = {"reasoning": {"effort": None, "summary": None}, "truncation": "disabled"}
    body = client.post(
        URL, json={**BODY, **extra, "instructions": "Be brief.", "metadata": {"k": "v"}}
    )
    assert body.status_code == 200, body.text
    data = body.json()
    assert data["object"] == "response" and data["id"].startswith("resp_")
    assert data["status"] == "completed" and data["background"] is False
    assert data["instructions"] == "Be brief." and data["metadata"] == {"k": "v"}
    [item] = data["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["id"].startswith("msg_") and item["status"] == "completed"
    assert text_of(data) == "echo: hello there world"
    usage = data["usage"]
    assert usage["output_tokens"] == 4
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert client.get(f"{URL}/{data['id']}").json() == data


def test_max_output_tokens_makes_it_incomplete(client: TestClient) -> None:
    data = client.post(URL, json={**BODY, "max_output_tokens": 2}).json()
    assert data["status"] == "incomplete"
    assert data["incomplete_details"] == {"reason": "max_output_tokens"}
    assert text_of(data) == "echo: hello"


def test_the_stream_ends_with_completed_and_its_deltas_make_the_text(client: TestClient) -> None:
    got = events(client, "POST", URL, json={**BODY, "stream": True})
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    kinds = [e["type"] for e in got]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [e["delta"] for e in got if e["type"] == "response.output_text.delta"]
    final = got[-1]["response"]
    assert "".join(deltas) == text_of(final) == got[-4]["text"]
    assert got[0]["response"]["status"] == "in_progress" and final["status"] == "completed"
    item_ids = {e["item_id"] for e in got if "item_id" in e}
    assert item_ids == {final["output"][0]["id"]}


def test_a_background_response_runs_in_the_queue(client: TestClient) -> None:
    created = client.post(URL, json={**BODY, "background": True}).json()
    assert created["status"] == "queued" and created["background"] is True
    assert created["output"] == [] and created["usage"] is None
    done = wait_status(client, created["id"], ENDED)
    assert done["status"] == "completed" and text_of(done) == "echo: hello there world"
    jobs = client.app.state.services.jobs
    # below sync requests, above batch rows
    assert asyncio.run(jobs.get(job_id(created["id"]), tenant="ta")).service_class is (
        ServiceClass.ASYNC
    )
    sync = client.post(URL, json=BODY).json()
    assert asyncio.run(jobs.get(job_id(sync["id"]), tenant="ta")).service_class is (
        ServiceClass.INTERACTIVE
    )


def test_a_background_stream_resumes_after_any_sequence_number(client: TestClient) -> None:
    body = {**BODY, "model": "slow", "background": True, "stream": True}
    full = events(client, "POST", URL, json=body)
    kinds = [e["type"] for e in full]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert full[0]["response"]["status"] == "queued" and kinds[-1] == "response.completed"
    rid = full[0]["response"]["id"]
    for after in (0, 3, 6, len(full) - 2):
        params = {"stream": "true", "starting_after": after}
        again = events(client, "GET", f"{URL}/{rid}", params=params)
        assert [e["sequence_number"] for e in again] == list(range(after + 1, len(full)))
        assert [(e["type"], e.get("delta")) for e in again] == [
            (e["type"], e.get("delta")) for e in full[after + 1 :]
        ]


def test_a_stream_dropped_and_resumed_while_it_runs_goes_on(client: TestClient) -> None:
    words = " ".join(["w"] * 40)
    body = {**BODY, "model": "slow", "input": words, "background": True, "stream": True,
            "max_output_tokens": 50}  # fmt: skip
    head: list[dict[str, Any]] = []
    with client.stream("POST", URL, json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                head.append(json.loads(line.removeprefix("data: ")))
            if len(head) == 8:
                break  # the connection drops mid-answer
    rid = head[0]["response"]["id"]
    rest: list[dict[str, Any]] = []
    params = {"stream": "true", "starting_after": 7}
    with client.stream("GET", f"{URL}/{rid}", params=params) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                rest.append(json.loads(line.removeprefix("data: ")))
                if len(rest) == 1:
                    # live: this process follows the response, so its text comes as it grows
                    assert rest[0]["type"] == "response.output_text.delta"
                    assert client.get(f"{URL}/{rid}").json()["status"] == "in_progress"
    got = head + rest
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    deltas = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    assert rest[-1]["type"] == "response.completed"
    assert deltas == text_of(rest[-1]["response"]) == "echo: " + words


def test_a_preempted_background_stream_starts_its_text_over_once(client: TestClient) -> None:
    """A sync request preempts the background response on the one slot; the response
    runs again from the start. The stream goes on from the units it sent (the fake
    engine writes the same text again): nothing missing, nothing twice."""
    words = " ".join(["w"] * 30)
    body = {**BODY, "model": "slow", "input": words, "background": True, "stream": True,
            "max_output_tokens": 40}  # fmt: skip
    got: list[dict[str, Any]] = []
    chat = {"model": "slow", "messages": [{"role": "user", "content": "now"}]}
    with client.stream("POST", URL, json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            got.append(json.loads(line.removeprefix("data: ")))
            if sum(e["type"] == "response.output_text.delta" for e in got) == 5 and len(got) < 12:
                answer = client.post("/v1/chat/completions", json=chat)
                assert answer.json()["choices"][0]["message"]["content"] == "echo: now"
                rid = got[0]["response"]["id"]
                assert client.get(f"{URL}/{rid}").json()["status"] in ("queued", "in_progress")
    assert got[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    deltas = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    assert deltas == text_of(got[-1]["response"]) == "echo: " + words


def test_a_stream_joined_while_it_runs_sends_the_whole_text(client: TestClient) -> None:
    """Created without a stream, so no transcript has its first pieces: the text comes
    whole at the end, cut into the same units."""
    words = " ".join(["w"] * 30)
    body = {**BODY, "model": "slow", "input": words, "background": True, "max_output_tokens": 40}
    created = client.post(URL, json={**body, "stream": False}).json()
    wait_status(client, created["id"], {"in_progress"})
    resumed = events(client, "GET", f"{URL}/{created['id']}", params={"stream": "true"})
    assert resumed[-1]["type"] == "response.completed"
    deltas = "".join(e["delta"] for e in resumed if e["type"] == "response.output_text.delta")
    assert deltas == text_of(resumed[-1]["response"])
    # created, queued, in_progress, 2 added; a delta per word ("echo:" and 30); 4 done
    assert len(resumed) == 5 + 31 + 4


def test_previous_response_id_continues_the_conversation(client: TestClient) -> None:
    first = client.post(URL, json={**BODY, "instructions": "only the first"}).json()
    second = client.post(
        URL, json={**BODY, "input": "and again", "previous_response_id": first["id"]}
    ).json()
    assert second["previous_response_id"] == first["id"] and second["instructions"] is None
    assert text_of(second) == "echo: and again"
    assert second["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    items = client.get(f"{URL}/{second['id']}/input_items", params={"order": "asc"}).json()
    roles = [(i["role"], i["content"][0]["text"]) for i in items["data"]]
    assert roles == [
        ("user", "hello there world"),
        ("assistant", "echo: hello there world"),
        ("user", "and again"),
    ]
    assert items["data"][1]["id"] == first["output"][0]["id"]
    newest = client.get(f"{URL}/{second['id']}/input_items", params={"limit": 1}).json()
    assert newest["data"][0]["content"][0]["text"] == "and again" and newest["has_more"]
    rest = client.get(
        f"{URL}/{second['id']}/input_items", params={"after": newest["last_id"]}
    ).json()
    assert [i["role"] for i in rest["data"]] == ["assistant", "user"] and not rest["has_more"]


def test_cancel_a_background_response(client: TestClient) -> None:
    long = {**BODY, "model": "slow", "input": " ".join(["w"] * 100), "max_output_tokens": 100}
    created = client.post(URL, json={**long, "background": True}).json()
    wait_status(client, created["id"], {"in_progress"})
    cancelled = client.post(f"{URL}/{created['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"{URL}/{created['id']}/cancel").json()["status"] == "cancelled"
    assert client.get(f"{URL}/{created['id']}").json()["status"] == "cancelled"
    sync = client.post(URL, json=BODY).json()
    refused = client.post(f"{URL}/{sync['id']}/cancel")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "response_id"


def test_delete_a_response(client: TestClient) -> None:
    created = client.post(URL, json=BODY).json()
    deleted = client.delete(f"{URL}/{created['id']}")
    assert deleted.json() == {"id": created["id"], "object": "response", "deleted": True}
    gone = client.get(f"{URL}/{created['id']}")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "invalid_request_error"
    assert client.delete(f"{URL}/{created['id']}").status_code == 404


def test_unstored_and_foreign_responses_are_not_found(client: TestClient) -> None:
    unstored = client.post(URL, json={**BODY, "store": False}).json()
    assert unstored["status"] == "completed" and unstored["store"] is False
    assert client.get(f"{URL}/{unstored['id']}").status_code == 404
    streamed = events(client, "POST", URL, json={**BODY, "store": False, "stream": True})
    assert streamed[-1]["type"] == "response.completed"
    jobs = client.app.state.services.jobs
    for rid in (unstored["id"], streamed[0]["response"]["id"]):
        # answered, then forgotten
        assert asyncio.run(jobs.store.get_job(job_id(rid), tenant=None)) is None
    mine = client.post(URL, json={**BODY, "background": True}).json()
    other = {"authorization": f"Bearer {client.app.state.other_key}"}
    for method, path in [
        ("GET", ""),
        ("POST", "/cancel"),
        ("DELETE", ""),
        ("GET", "/input_items"),
    ]:
        answer = client.request(method, f"{URL}/{mine['id']}{path}", headers=other)
        assert answer.status_code == 404, (method, path)
    continued = client.post(URL, json={**BODY, "previous_response_id": mine["id"]}, headers=other)
    assert continued.status_code == 404
    assert continued.json()["error"]["param"] == "previous_response_id"
    chat = client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "x"}]},
    ).json()
    assert client.get(f"{URL}/resp_{chat['id'].removeprefix('chatcmpl-')}").status_code == 404
    assert client.get(f"{URL}/resp_nothex").status_code == 404


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": None}, "input"),
        ({"input": []}, "input"),
        ({"model": "nope"}, "model"),
        ({"temperature": 3}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input.0.type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input.0.content.0.type",
        ),
        ({"background": True, "store": False}, "store"),
        ({"metadata": {"k": "v" * 600}}, "metadata.k"),
        ({"previous_response_id": "resp_0123"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
    ],
)
def test_bad_input_is_a_400_in_openais_shape(
    client: TestClient, change: dict[str, Any], param: str
) -> None:
    answer = client.post(URL, json={**BODY, **change})
    assert answer.status_code in (400, 404), answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    if answer.status_code == 400:
        assert error["type"] == "invalid_request_error"


def test_a_stream_resume_of_a_response_not_in_the_background_is_refused(
    client: TestClient,
) -> None:
    created = client.post(URL, json=BODY).json()
    answer = client.get(f"{URL}/{created['id']}", params={"stream": "true"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "stream"


# -- structured output and tools -----------------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_tools_and_text_format_reach_the_request_and_are_echoed(client: TestClient) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = {
        **BODY,
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "a", "schema": schema}},
    }
    data = client.post(URL, json=body).json()
    assert data["tools"] == [WEATHER]
    assert data["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert data["text"]["format"]["schema"] == schema
    job = asyncio.run(client.app.state.services.jobs.get(job_id(data["id"]), tenant="ta"))
    request = job.request
    assert request.tools[0].name == "get_weather" and request.tools[0].parameters
    assert (request.tool_choice.mode, request.tool_choice.name) == ("function", "get_weather")
    assert request.response_format.kind == "json_schema" and request.response_format.name == "a"


def test_include_logprobs_asks_the_engine_for_them(client: TestClient) -> None:
    body = {**BODY, "include": ["message.output_text.logprobs"], "top_logprobs": 3}
    data = client.post(URL, json=body).json()
    assert data["top_logprobs"] == 3
    job = asyncio.run(client.app.state.services.jobs.get(job_id(data["id"]), tenant="ta"))
    assert (job.request.logprobs, job.request.top_logprobs) == (True, 3)
    plain = client.post(URL, json=BODY).json()
    job = asyncio.run(client.app.state.services.jobs.get(job_id(plain["id"]), tenant="ta"))
    assert (job.request.logprobs, job.request.top_logprobs) == (False, 0)
    refused = client.post(URL, json={**BODY, "top_logprobs": 21})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "top_logprobs"


def test_function_call_items_become_messages(client: TestClient) -> None:
    items = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    data = client.post(URL, json={**BODY, "input": items, "tools": [WEATHER]}).json()
    job = asyncio.run(client.app.state.services.jobs.get(job_id(data["id"]), tenant="ta"))
    messages = job.request.messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    assert messages[1].tool_calls[0].arguments == '{"city": "Paris"}'
    assert messages[2].tool_call_id == "c1" and messages[2].content == "sunny"
    listed = client.get(f"{URL}/{data['id']}/input_items", params={"order": "asc"}).json()
    assert [i["type"] for i in listed["data"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert listed["data"][1]["id"].startswith("fc_")


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"tools": [{**WEATHER, "name": ""}]}, "tools.0.name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input.0.call_id"),
    ],
)
def test_bad_tools_and_formats_are_400s(
    client: TestClient, change: dict[str, Any], param: str
) -> None:
    answer = client.post(URL, json={**BODY, **change})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_call_is_a_function_call_item_and_its_events(tmp_path: Path) -> None:
    request = ChatRequest(
        messages=(ChatMessage("user", "weather?"),),
        tools=(Tool(name="get_weather"),),
        tool_choice=ToolChoice("required"),
    )
    job = Job(
        id="2b1f0c3e-1111-4222-8333-444455556666",
        tenant="ta",
        model="fake",
        origin="openai-responses",
        service_class=ServiceClass.ASYNC,
        priority=0,
        state=JobState.SUCCEEDED,
        request=request,
        created_at=1.0,
        finished_at=2.0,
        inputs=Record(background=True).to_dict(),
        result=ChatResult(
            text="",
            finish_reason="tool_calls",
            usage=Usage(3, 5),
            tool_calls=(ToolCall(id="call_1", name="get_weather", arguments='{"city":"Oslo"}'),),
        ),
        usage=Usage(3, 5),
    )
    data = render_response(job)
    assert data["status"] == "completed"
    assert data["output"] == [
        {
            "id": "fc_2b1f0c3e11114222833344445555666" + "6_0",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "get_weather",
            "arguments": '{"city":"Oslo"}',
        }
    ]

    async def collect() -> list[dict[str, Any]]:
        return [e async for e in replay(ended_transcript(job), after=None)]

    kinds = [e["type"] for e in asyncio.run(collect())]
    assert kinds == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]


def job_id(response_id: str) -> str:
    return str(uuid.UUID(response_id.removeprefix("resp_")))


async def test_a_run_that_ends_in_another_process_restarts_the_text_from_the_end() -> None:
    """With the worker elsewhere, no "run ended" reaches this process: the follower sees
    the new claim in the store and keeps no pieces from then on (it cannot tell whose
    run they are), and its stream sends the rest of the final text once the response
    ended; the deltas make that text. (SQLite's relay stops at a new run by itself; this
    is the follower's own guard.)"""
    store = MemoryStore()
    events = JobEvents()
    registry = ModelRegistry(
        {"fake": ModelSpec(name="fake", engine="fake", context_length=64, slots=1)}
    )
    jobs = JobService(store=store, models=registry, events=events)
    body = ResponseCreate(model="fake", input="hi", background=True, stream=True)
    items = input_items("hi")
    follow = transcripts(jobs)
    job_id = "7d1c9a2e-0000-4000-8000-000000000001"
    sub = follow.subscribe(job_id)
    job = await jobs.submit(
        tenant="ta", model="fake", request=chat_request(body, items), origin="openai-responses",
        service_class=ServiceClass.ASYNC, inputs=record(body, items).to_dict(), job_id=job_id,
    )  # fmt: skip
    transcript = follow.follow(job, sub)
    got: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in replay(transcript, after=None):
            got.append(event)

    reader = asyncio.create_task(read())
    [first] = await store.claim(ClaimOrder(owner="w1", limit=1, lease_seconds=30), now=time.time())
    for piece in ("one ", "two ", "thr"):
        events.relayed_text(job_id, piece)  # from the worker's process; no end of run here
    await asyncio.sleep(0.7)
    assert await store.requeue(Lease(job_id, "w1", first.attempt))
    await asyncio.sleep(0.01)
    [again] = await store.claim(
        ClaimOrder(owner="w2", limit=1, lease_seconds=30), now=time.time() + 1
    )
    await asyncio.sleep(0.7)  # the follower reads the store meanwhile
    for piece in ("one ", "two ", "three ", "four"):
        events.relayed_text(job_id, piece)
    await asyncio.sleep(0.3)  # the stream sends what it can meanwhile
    result = ChatResult(text="one two three four", finish_reason="stop", usage=Usage(1, 4))
    assert await store.complete(Lease(job_id, "w2", again.attempt), result, now=time.time())
    events.job_ended(job_id)
    await asyncio.wait_for(reader, 10)
    deltas = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
    assert got[-1]["type"] == "response.completed"
    assert deltas == "one two three four"
