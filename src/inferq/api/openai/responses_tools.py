"""Structured output and function tools in the Responses API's shapes.

``text.format`` (``text``, ``json_object``, ``json_schema`` with its ``name``,
``schema`` and ``strict`` at the top level), flat ``tools`` (``{"type": "function",
"name", "parameters", ...}``) and ``tool_choice`` become core's
:mod:`~inferq.core.structured` objects; ``function_call`` and ``function_call_output``
items become messages; a result's calls become ``function_call`` output items.
Engines do the rest (a llama.cpp model decodes under a grammar; an upstream gets them
passed through), and refuse what they cannot do with a 400.
"""

from __future__ import annotations

import uuid
from typing import Any

from inferq.core.errors import InvalidRequest
from inferq.core.models import Job
from inferq.core.structured import (
    JSON_OBJECT,
    JSON_SCHEMA,
    TOOL_AUTO,
    TOOL_FUNCTION,
    TOOL_MODES,
    TOOL_NONE,
    OutputFormat,
    Tool,
    ToolCall,
    ToolChoice,
)
from inferq.core.tool_text import call_id
from inferq.core.work import ChatMessage, ChatResult

#: item types that carry a function call and its result
CALL = "function_call"
CALL_OUTPUT = "function_call_output"


def _invalid(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _text(raw: dict[str, Any], key: str, param: str, *, required: bool = True) -> str:
    value = raw.get(key)
    if isinstance(value, str) and (value or not required):
        return value
    if value is None and not required:
        return ""
    raise _invalid(f"{param}.{key}", "must be a non-empty string")


def output_format(text: dict[str, Any] | None) -> OutputFormat | None:
    """``text.format`` as core's OutputFormat (None: free text)."""
    fmt = (text or {}).get("format") or {"type": "text"}
    if not isinstance(fmt, dict):
        raise _invalid("text.format", "must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == JSON_OBJECT:
        return OutputFormat(kind=JSON_OBJECT)
    if kind != JSON_SCHEMA:
        raise _invalid("text.format.type", f"{kind!r} is not one of text, json_object, json_schema")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _invalid("text.format.schema", "a json_schema format needs its schema (an object)")
    name = _text(fmt, "name", "text.format")
    return OutputFormat(kind=JSON_SCHEMA, schema=schema, name=name, strict=bool(fmt.get("strict")))


def tools(raw: list[dict[str, Any]] | None) -> tuple[Tool, ...]:
    found = []
    for n, tool in enumerate(raw or ()):
        where = f"tools.{n}"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _invalid(f"{where}.type", f"only function tools are supported, not {kind!r}")
        parameters = tool.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise _invalid(f"{where}.parameters", "must be a JSON schema (an object)")
        found.append(
            Tool(
                name=_text(tool, "name", where),
                description=_text(tool, "description", where, required=False),
                parameters=parameters,
                strict=bool(tool.get("strict")),
            )
        )
    return tuple(found)


def tool_choice(raw: str | dict[str, Any] | None, has_tools: bool) -> ToolChoice:
    """``auto``, ``none``, ``required`` or ``{"type": "function", "name": ...}``; the
    default is ``auto`` with tools and ``none`` without."""
    if raw is None:
        return ToolChoice(TOOL_AUTO if has_tools else TOOL_NONE)
    if isinstance(raw, str):
        if raw not in TOOL_MODES - {TOOL_FUNCTION}:
            raise _invalid("tool_choice", f"{raw!r} is not one of auto, none, required")
        return ToolChoice(raw)
    if raw.get("type") != "function":
        raise _invalid("tool_choice.type", "only a function may be named")
    return ToolChoice(TOOL_FUNCTION, _text(raw, "name", "tool_choice"))


# -- items ------------------------------------------------------------------------------


#: the fields of each call item type, and its id prefix
_CALL_FIELDS = {
    CALL: ("fc_", ("call_id", "name", "arguments")),
    CALL_OUTPUT: ("fco_", ("call_id", "output")),
}
#: fields that may be empty
_MAY_BE_EMPTY = frozenset({"arguments", "output"})


def call_item(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """A ``function_call`` (an earlier answer's call) or ``function_call_output`` (what
    the call returned) input item, stored with its id."""
    prefix, fields = _CALL_FIELDS[raw["type"]]
    item = {"id": raw.get("id") or prefix + uuid.uuid4().hex, "type": raw["type"]}
    item["status"] = "completed"
    for key in fields:
        item[key] = _text(raw, key, where, required=key not in _MAY_BE_EMPTY)
    return item


def item_message(item: dict[str, Any]) -> ChatMessage:
    """A stored item as the message the model reads."""
    if item["type"] == CALL:
        call = ToolCall(id=item["call_id"], name=item["name"], arguments=item["arguments"])
        return ChatMessage("assistant", "", tool_calls=(call,))
    if item["type"] == CALL_OUTPUT:
        return ChatMessage("tool", item["output"], tool_call_id=item["call_id"])
    return ChatMessage(item["role"], "".join(part["text"] for part in item["content"]))


def call_items(job: Job) -> list[dict[str, Any]]:
    """The ``function_call`` output items of a finished job's answer."""
    result = job.result
    if not isinstance(result, ChatResult):
        return []
    return [
        {
            "id": f"fc_{uuid.UUID(job.id).hex}_{n}",
            "type": CALL,
            "status": "completed",
            "call_id": call.id or call_id(job.id, n),
            "name": call.name,
            "arguments": call.arguments,
        }
        for n, call in enumerate(result.tool_calls)
    ]
