"""Function calls as text, for engines that generate text only (llama.cpp).

Such a model is told about the tools in a system message (:func:`tools_prompt`)
and calls one by answering with one JSON object in a fixed shape
(:func:`call_text`)::

    {"name": "get_weather", "arguments": {"city": "Paris"}}

Its decoding is constrained to that shape when a call is required (and to
either that shape or text not starting with ``{`` when it may choose), so the
answer can be split back into text and calls exactly (:func:`split_answer`),
whole or while it streams (:class:`CallStream`). Earlier calls in a
conversation are written back in the same shape, so the model sees its own
habit. One answer holds at most one call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from inferq.core.errors import InvalidRequest
from inferq.core.structured import (
    TOOL_AUTO,
    TOOL_FUNCTION,
    TOOL_NONE,
    TOOL_REQUIRED,
    Tool,
    ToolCall,
    ToolChoice,
)

#: how a call starts, up to its function's name
CALL_OPEN = '{"name": "'
#: what separates the name from the arguments
ARGS_OPEN = '", "arguments": '
#: how a call ends, after its arguments
CALL_CLOSE = "}"


def call_text(name: str, arguments: str) -> str:
    """The text of one call of ``name`` with ``arguments`` (JSON text)."""
    return f"{CALL_OPEN}{name}{ARGS_OPEN}{arguments.strip() or '{}'}{CALL_CLOSE}"


def call_id(job_id: str, index: int) -> str:
    """The id of a job's ``index``-th call when its engine gave it none."""
    return f"call_{job_id}_{index}"


def check_tools(tools: tuple[Tool, ...], choice: ToolChoice) -> None:
    """InvalidRequest unless ``choice`` can be met with ``tools``: unique names, a
    required call with tools to call, a named function that is among them."""
    if not tools and choice.mode not in (TOOL_REQUIRED, TOOL_FUNCTION):
        return  # most requests: nothing to check
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise InvalidRequest("tools: every function needs a name of its own", param="tools")
    if choice.mode in (TOOL_REQUIRED, TOOL_FUNCTION) and not tools:
        raise InvalidRequest(
            f"tool_choice: {choice.mode!r} needs tools to call, and none were given",
            param="tool_choice",
        )
    if choice.mode == TOOL_FUNCTION and choice.name not in names:
        raise InvalidRequest(
            f"tool_choice: the function {choice.name!r} is not among the tools "
            f"({', '.join(names)})",
            param="tool_choice",
        )


def may_call(tools: tuple[Tool, ...], choice: ToolChoice) -> bool:
    """Whether an answer to a request with ``tools`` and ``choice`` may be a call."""
    return bool(tools) and choice.mode != TOOL_NONE


def callable_tools(tools: tuple[Tool, ...], choice: ToolChoice) -> tuple[Tool, ...]:
    """The tools an answer may call: the named one, or all of them (none with ``none``)."""
    if choice.mode == TOOL_NONE:
        return ()
    if choice.mode == TOOL_FUNCTION:
        return tuple(t for t in tools if t.name == choice.name)
    return tools


def tools_prompt(tools: tuple[Tool, ...], choice: ToolChoice) -> str:
    """The system message that tells a text-only model which functions it may call."""
    offered = callable_tools(tools, choice)
    lines = ["You can call these functions:"]
    for tool in offered:
        spec = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        lines.append(json.dumps(spec, ensure_ascii=False))
    example = call_text("function_name", '{"argument": "value"}')
    lines.append(f"To call one, answer with only this JSON object: {example}")
    if choice.mode == TOOL_AUTO:
        lines.append("If no function is needed, answer in plain text.")
    elif choice.mode in (TOOL_REQUIRED, TOOL_FUNCTION):
        lines.append("You must call a function now.")
    return "\n".join(lines)


def split_answer(
    text: str, tools: tuple[Tool, ...], choice: ToolChoice
) -> tuple[str, ToolCall | None]:
    """``text`` as an answer: the call it makes (with an empty id) and no text, or
    the text and no call. Text that only looks like a call (unknown function,
    arguments that are not an object, cut short) stays text."""
    if not may_call(tools, choice) or not text.startswith(CALL_OPEN):
        return text, None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text, None
    names = {t.name for t in callable_tools(tools, choice)}
    if not isinstance(data, dict) or set(data) != {"name", "arguments"}:
        return text, None
    name, arguments = data["name"], data["arguments"]
    if name not in names or not isinstance(arguments, dict):
        return text, None
    return "", ToolCall(id="", name=name, arguments=json.dumps(arguments, ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class StreamPiece:
    """A piece of a streamed answer: text, the start of a call (``name``), or more
    of a call's arguments (``arguments``)."""

    text: str = ""
    name: str | None = None
    arguments: str = ""


class CallStream:
    """Splits a streamed answer into text and a call as its pieces arrive.

    Text that may still turn out to be the start of a call is held back until it
    is known; a call's closing brace is held back to the end, so that the
    arguments streamed are exactly the arguments' JSON.
    """

    def __init__(self, tools: tuple[Tool, ...], choice: ToolChoice) -> None:
        self._active = may_call(tools, choice)
        self._buffer = ""
        #: None while undecided; then "text", "name" (reading it) or "arguments"
        self._mode: str | None = None if self._active else "text"
        self._name = ""

    @property
    def calling(self) -> bool:
        """Whether the answer has turned out to be a call."""
        return self._mode in ("name", "arguments")

    def feed(self, piece: str) -> Iterator[StreamPiece]:
        self._buffer += piece
        yield from self._drain()

    def finish(self) -> Iterator[StreamPiece]:
        """What is still held back, once the answer has ended. A call cut short
        before its arguments began is text after all, as :func:`split_answer` says."""
        buffer, self._buffer = self._buffer, ""
        if self._mode == "name":
            buffer = CALL_OPEN + buffer
        if self._mode != "arguments":
            if buffer:
                yield StreamPiece(text=buffer)
            return
        tail = buffer[: -len(CALL_CLOSE)] if buffer.endswith(CALL_CLOSE) else buffer
        if tail:
            yield StreamPiece(arguments=tail)

    def _drain(self) -> Iterator[StreamPiece]:
        if self._mode is None:
            if CALL_OPEN.startswith(self._buffer):
                return  # still undecided
            if self._buffer.startswith(CALL_OPEN):
                self._mode = "name"
                self._buffer = self._buffer[len(CALL_OPEN) :]
            else:
                self._mode = "text"
        if self._mode == "text":
            if self._buffer:
                yield StreamPiece(text=self._buffer)
            self._buffer = ""
            return
        if self._mode == "name":
            end = self._buffer.find(ARGS_OPEN)
            if end < 0:
                return
            self._name = self._buffer[:end]
            self._buffer = self._buffer[end + len(ARGS_OPEN) :]
            self._mode = "arguments"
            yield StreamPiece(name=self._name)
        # arguments: all but the last character, which may be the call's closing brace
        if len(self._buffer) > 1:
            yield StreamPiece(arguments=self._buffer[:-1])
            self._buffer = self._buffer[-1:]
