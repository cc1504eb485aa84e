"""Anthropic's tool use in core's terms.

``tools`` (client tools: ``{name, description, input_schema}``) become core
:class:`~inferq.core.structured.Tool` objects and ``tool_choice`` (``auto``, ``any``,
``tool`` with a name, ``none``) a :class:`~inferq.core.structured.ToolChoice`. In the
conversation, an assistant's ``tool_use`` blocks become its message's calls and a
user's ``tool_result`` blocks become ``tool`` messages answering them. A result's calls
come back as ``tool_use`` blocks after its text, with ``stop_reason`` ``tool_use``.
Server tools (web search, code execution, ...) and other block types are refused by name.
"""

from __future__ import annotations

import json
from typing import Any

from inferq.core import structured as core
from inferq.core.errors import InvalidRequest
from inferq.core.models import Job
from inferq.core.structured import TOOL_AUTO, TOOL_FUNCTION, TOOL_NONE, Tool, ToolCall, ToolChoice
from inferq.core.tool_text import call_id, check_tools
from inferq.core.work import ChatMessage, ChatResult

#: Anthropic's tool_choice types -> core's modes
_CHOICES = {"auto": TOOL_AUTO, "any": core.TOOL_REQUIRED, "tool": TOOL_FUNCTION, "none": TOOL_NONE}


def _invalid(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _name(raw: dict[str, Any], param: str) -> str:
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{param}.name", "must be a non-empty string")
    return name


def to_tools(raw: list[dict[str, Any]] | None) -> tuple[Tool, ...]:
    found = []
    for n, tool in enumerate(raw or ()):
        where = f"tools.{n}"
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise _invalid(
                f"{where}.type",
                f"{kind!r} tools are not supported; only client tools (name, description, "
                "input_schema) are",
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema", "a tool needs its input_schema (an object)")
        description = tool.get("description") or ""
        if not isinstance(description, str):
            raise _invalid(f"{where}.description", "must be a string")
        found.append(
            Tool(
                name=_name(tool, where),
                description=description,
                parameters=schema,
                strict=bool(tool.get("strict")),
            )
        )
    return tuple(found)


def to_tool_choice(raw: dict[str, Any] | None, tools: tuple[Tool, ...]) -> ToolChoice:
    """The default is ``auto``, which without tools is no call at all."""
    if raw is None:
        choice = ToolChoice(TOOL_AUTO if tools else TOOL_NONE)
    else:
        mode = _CHOICES.get(raw.get("type", ""))
        if mode is None:
            raise _invalid("tool_choice.type", "must be one of auto, any, tool, none")
        name = _name(raw, "tool_choice") if mode == TOOL_FUNCTION else None
        choice = ToolChoice(mode if tools or mode != TOOL_AUTO else TOOL_NONE, name)
    check_tools(tools, choice)
    return choice


# -- the conversation -----------------------------------------------------------------


def _result_text(block: dict[str, Any], param: str) -> str:
    """A ``tool_result``'s content: a string, or text blocks."""
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" for part in content
    ):
        text = "".join(str(part.get("text", "")) for part in content)
    else:
        raise _invalid(f"{param}.content", "a tool result's content must be text")
    return f"Error: {text}" if block.get("is_error") else text


def _tool_use(block: dict[str, Any], param: str) -> ToolCall:
    call = block.get("id")
    if not isinstance(call, str) or not call:
        raise _invalid(f"{param}.id", "must be a non-empty string")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise _invalid(f"{param}.input", "must be an object")
    return ToolCall(call, _name(block, param), json.dumps(arguments, ensure_ascii=False))


def turn_messages(
    role: str, content: str | list[dict[str, Any]], param: str
) -> tuple[ChatMessage, ...]:
    """One Anthropic message as core messages: its text and calls, or, for a user's
    ``tool_result`` blocks, one ``tool`` message each before the user's own text."""
    if isinstance(content, str):
        return (ChatMessage(role, content),)
    text: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for n, block in enumerate(content):
        where, kind = f"{param}.{n}", block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            text.append(block["text"])
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(block, where))
        elif kind == "tool_result" and role == "user":
            answered = block.get("tool_use_id")
            if not isinstance(answered, str) or not answered:
                raise _invalid(f"{where}.tool_use_id", "must be a non-empty string")
            results.append(ChatMessage("tool", _result_text(block, where), tool_call_id=answered))
        else:
            raise InvalidRequest(
                f"{where}: content blocks of type {kind!r} are not supported in a message of "
                f"the {role}; text, tool_use (assistant) and tool_result (user) blocks are",
                param=f"{where}.type",
            )
    said = "".join(text)
    if results:
        return (*results, *((ChatMessage(role, said),) if said else ()))
    return (ChatMessage(role, said, tool_calls=tuple(calls)),)


# -- the answer ---------------------------------------------------------------------------


def tool_use_blocks(job: Job, result: ChatResult) -> list[dict[str, Any]]:
    return [
        {
            "type": "tool_use",
            "id": call.id or call_id(job.id, n).replace("call_", "toolu_", 1),
            "name": call.name,
            "input": json.loads(call.arguments or "{}"),
        }
        for n, call in enumerate(result.tool_calls)
    ]


def content_blocks(job: Job, result: ChatResult) -> list[dict[str, Any]]:
    """A result's content: its text (left out when empty beside calls), then its calls."""
    calls = tool_use_blocks(job, result)
    text = [{"type": "text", "text": result.text}] if result.text or not calls else []
    return text + calls
