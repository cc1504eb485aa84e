"""``POST /v1/completions`` and the chat body's structured fields in-process (memory
store, fake engine): what is refused, in OpenAI's error shape, before anything runs.
The answers themselves are checked on the real model in
tests/integration/test_structured.py."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_api import CHAT, client  # noqa: F401 - the fixture

COMPLETION = {"model": "fake", "prompt": "Once upon", "max_tokens": 3}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def error_of(response: Any, param: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    return error


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"suffix": "!"}, "suffix"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"best_of": 3}, "best_of"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"echo": True, "logprobs": 1}, "logprobs"),
        ({"stream": True, "n": 2}, "stream"),
        ({"stream": True, "prompt": ["a", "b"]}, "stream"),
        ({"stream": True, "logprobs": 0}, "logprobs"),
    ],
)
def test_completions_refuse_what_cannot_run(
    client: TestClient,  # noqa: F811
    change: dict[str, Any],
    param: str,
) -> None:
    error_of(client.post("/v1/completions", json={**COMPLETION, **change}), param)


def test_a_model_that_serves_chat_only_refuses_a_plain_prompt(
    client: TestClient,  # noqa: F811
) -> None:
    error = error_of(client.post("/v1/completions", json=COMPLETION), "model")
    assert "plain text prompts" in error["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stream": True, "n": 2}, "n"),
        ({"stream": True, "logprobs": True}, "logprobs"),
        (
            {"messages": [{"role": "tool", "content": "5C"}]},
            "messages.0.tool_call_id",
        ),
    ],
)
def test_chat_refuses_structured_fields_it_cannot_meet(
    client: TestClient,  # noqa: F811
    change: dict[str, Any],
    param: str,
) -> None:
    error_of(client.post("/v1/chat/completions", json={**CHAT, **change}), param)


def test_an_engine_that_ignores_tools_answers_in_text(client: TestClient) -> None:  # noqa: F811
    body = client.post("/v1/chat/completions", json={**CHAT, "tools": [WEATHER]}).json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: hi there"}
