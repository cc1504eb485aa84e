"""A job's work: the request an engine runs and the result it returns, free of any
dialect's field names.

The dialects translate their wire formats to and from these; the store keeps them as
JSON (:func:`request_to_dict`, :func:`request_from_dict`, :func:`result_from_dict`); the
engines consume :class:`ChatRequest` and produce :class:`ChatResult`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from inferq.core.records import record
from inferq.core.structured import OutputFormat, TokenLogprob, Tool, ToolCall, ToolChoice

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})


@record
class ChatMessage:
    role: str
    content: str
    #: an assistant message's function calls
    tool_calls: tuple[ToolCall, ...] = ()
    #: a tool message: the id of the call it answers
    tool_call_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            data["tool_call_id"] = self.tool_call_id
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatMessage:
        return cls(
            role=data["role"],
            content=data["content"],
            tool_calls=tuple(ToolCall(**c) for c in data.get("tool_calls", ())),
            tool_call_id=data.get("tool_call_id"),
        )


@record
class ChatRequest:
    """A chat completion request, free of any dialect's field names.

    With ``prompt`` set it is a plain text completion instead: ``prompt`` is
    continued as it is, without the chat template, and ``messages`` is empty.
    """

    messages: tuple[ChatMessage, ...]
    #: None: as many as the context allows
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: None: free text
    response_format: OutputFormat | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    #: whether to report each generated token's log probability
    logprobs: bool = False
    #: how many of the most likely alternatives to report with each token (0 to 20)
    top_logprobs: int = 0
    #: how many independent answers to generate (:attr:`ChatResult.others`)
    n: int = 1
    #: a raw text prompt (legacy completions) instead of ``messages``
    prompt: str | None = None

    def to_dict(self, *, defaults: bool = True) -> dict[str, Any]:
        """The request as plain data; without ``defaults``, only the fields that differ
        from their defaults (:meth:`from_dict` reads either back the same)."""
        # field by field: dataclasses.asdict deep-copies every value, and this runs for
        # each job submitted
        if defaults:
            data = {name: getattr(self, name) for name, _ in _REQUEST_SCALARS}
        else:
            data = {
                name: value
                for name, default in _REQUEST_SCALARS
                if (value := getattr(self, name)) != default
            }
        data["messages"] = [m.to_dict() for m in self.messages]
        if defaults or self.stop:
            data["stop"] = list(self.stop)
        if defaults or self.response_format is not None:
            data["response_format"] = (
                dataclasses.asdict(self.response_format) if self.response_format else None
            )
        if defaults or self.tools:
            data["tools"] = [dataclasses.asdict(t) for t in self.tools]
        choice = self.tool_choice
        if defaults or choice != _ANY_TOOL:
            # its fields are text: asdict's deep copy of them would only cost time
            data["tool_choice"] = {name: getattr(choice, name) for name in _TOOL_CHOICE_FIELDS}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatRequest:
        values = dict(data)
        values["messages"] = tuple(ChatMessage.from_dict(m) for m in data["messages"])
        values["stop"] = tuple(data.get("stop", ()))
        fmt = data.get("response_format")
        values["response_format"] = OutputFormat(**fmt) if fmt else None
        values["tools"] = tuple(Tool(**t) for t in data.get("tools", ()))
        values["tool_choice"] = ToolChoice(**data.get("tool_choice", {}))
        return cls(**values)


#: the fields of a ToolChoice, as a request stores them
_TOOL_CHOICE_FIELDS = tuple(f.name for f in dataclasses.fields(ToolChoice))
#: the default tool choice (none named)
_ANY_TOOL = ToolChoice()
#: the fields of a ChatRequest that are stored as they are, with their defaults
_REQUEST_SCALARS = tuple(
    (f.name, f.default)
    for f in dataclasses.fields(ChatRequest)
    if f.name not in {"messages", "stop", "response_format", "tools", "tool_choice"}
)


@record
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        # not dataclasses.asdict, which deep-copies: this runs for every stored result
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


@record
class ChatResult:
    """What an engine produced for one chat request.

    With ``n`` > 1 it is the first answer, the others in ``others`` (each with its
    own text, finish reason and completion tokens); ``usage`` counts them all.
    """

    text: str
    finish_reason: str
    usage: Usage
    #: the stop string that ended the text (cut off before it), when one did
    stop_sequence: str | None = None
    #: the function calls the answer makes (finish_reason ``tool_calls``); ``text``
    #: then holds only what the model said besides
    tool_calls: tuple[ToolCall, ...] = ()
    #: each generated token's log probability, when the request asked for them
    logprobs: tuple[TokenLogprob, ...] | None = None
    others: tuple[ChatResult, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": self.usage.to_dict(),
        }
        if self.stop_sequence is not None:
            data["stop_sequence"] = self.stop_sequence
        if self.tool_calls:
            data["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.logprobs is not None:
            data["logprobs"] = [t.to_dict() for t in self.logprobs]
        if self.others:
            data["others"] = [o.to_dict() for o in self.others]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatResult:
        logprobs = data.get("logprobs")
        return cls(
            text=data["text"],
            finish_reason=data["finish_reason"],
            usage=Usage(**data["usage"]),
            stop_sequence=data.get("stop_sequence"),
            tool_calls=tuple(ToolCall(**c) for c in data.get("tool_calls", ())),
            logprobs=None if logprobs is None else tuple(map(TokenLogprob.from_dict, logprobs)),
            others=tuple(ChatResult.from_dict(o) for o in data.get("others", ())),
        )

    @property
    def choices(self) -> tuple[ChatResult, ...]:
        """Every answer, the first included."""
        return (self, *self.others)


@record
class EmbedRequest:
    """Texts to embed, one vector each."""

    inputs: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "embed", "inputs": list(self.inputs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedRequest:
        return cls(inputs=tuple(data["inputs"]))


@record
class EmbedResult:
    """What an engine produced for one embedding request: a vector per input."""

    vectors: tuple[tuple[float, ...], ...]
    usage: Usage

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "embed",
            "vectors": [list(v) for v in self.vectors],
            "usage": self.usage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedResult:
        return cls(
            vectors=tuple(tuple(v) for v in data["vectors"]),
            usage=Usage(**data["usage"]),
        )


@record
class PayloadRequest:
    """A freeform payload for a model that a node's own Python handler serves (Together's
    Dedicated Containers): passed to the handler unchanged."""

    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "payload", "payload": self.payload}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PayloadRequest:
        return cls(payload=dict(data["payload"]))


@record
class PayloadResult:
    """What a handler returned for a :class:`PayloadRequest`: its outputs, files
    replaced by the URLs they were uploaded to."""

    outputs: dict[str, Any]
    usage: Usage = Usage()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "payload", "outputs": self.outputs, "usage": self.usage.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PayloadResult:
        return cls(outputs=dict(data["outputs"]), usage=Usage(**data.get("usage", {})))


#: what a job asks an engine to do
Request = ChatRequest | EmbedRequest | PayloadRequest
#: what an engine returns
Result = ChatResult | EmbedResult | PayloadResult


def request_to_dict(request: Request) -> dict[str, Any]:
    """``request`` as a job stores it (:func:`request_from_dict` reads it back): a chat
    request without the fields at their defaults, whose JSON is most of a submit's."""
    if isinstance(request, ChatRequest):
        return request.to_dict(defaults=False)
    return request.to_dict()


#: the records of each stored ``kind`` (a chat's dict has none: the oldest kind)
_REQUESTS: dict[str | None, type[Request]] = {"embed": EmbedRequest, "payload": PayloadRequest}
_RESULTS: dict[str | None, type[Result]] = {"embed": EmbedResult, "payload": PayloadResult}


def request_from_dict(data: dict[str, Any]) -> Request:
    return _REQUESTS.get(data.get("kind"), ChatRequest).from_dict(data)


def result_from_dict(data: dict[str, Any]) -> Result:
    return _RESULTS.get(data.get("kind"), ChatResult).from_dict(data)
