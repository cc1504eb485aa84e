"""What a chat request asks beyond text, and what comes back besides it: structured
output (a JSON object or a JSON schema's document), function tools and the calls a
model makes to them, and token log probabilities. Dialect-neutral, like
:mod:`inferq.core.models`, which carries them in ``ChatRequest`` and ``ChatResult``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from inferq.core.records import record


@record
class ToolCall:
    """A function call in a model's answer: an id, the function's name, and its
    arguments as JSON text (as the model wrote them)."""

    id: str
    name: str
    arguments: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


#: :attr:`OutputFormat.kind`: any JSON object, or a document of a JSON schema
JSON_OBJECT = "json_object"
JSON_SCHEMA = "json_schema"


@record
class OutputFormat:
    """What the generated text must be: any JSON object (``json_object``) or a JSON
    document valid against ``schema`` (``json_schema``). Engines that can constrain
    their decoding guarantee it; the others pass it on."""

    kind: str
    schema: dict[str, Any] | None = None
    #: the schema's name (OpenAI requires one; it is echoed, never interpreted)
    name: str | None = None
    strict: bool = False


@record
class Tool:
    """A function the model may call; ``parameters`` is the JSON schema of its
    arguments (an object)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool = False


#: :attr:`ToolChoice.mode`: the model may answer in text or call a tool; it must not
#: call one; it must call one; it must call the function :attr:`ToolChoice.name`
TOOL_AUTO = "auto"
TOOL_NONE = "none"
TOOL_REQUIRED = "required"
TOOL_FUNCTION = "function"
TOOL_MODES = frozenset({TOOL_AUTO, TOOL_NONE, TOOL_REQUIRED, TOOL_FUNCTION})


@record
class ToolChoice:
    mode: str = TOOL_AUTO
    #: the function to call, when ``mode`` is ``function``
    name: str | None = None


@record
class TokenLogprob:
    """One generated token, its log probability, and (in ``top``) the most likely
    tokens at its place with theirs."""

    token: str
    logprob: float
    #: the token's UTF-8 bytes (a token may hold part of a character)
    bytes: tuple[int, ...] = ()
    top: tuple[TokenLogprob, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.bytes),
        }
        if self.top:
            data["top"] = [t.to_dict() for t in self.top]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenLogprob:
        return cls(
            token=data["token"],
            logprob=data["logprob"],
            bytes=tuple(data.get("bytes", ())),
            top=tuple(TokenLogprob.from_dict(t) for t in data.get("top", ())),
        )
