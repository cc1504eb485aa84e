"""Domain objects: immutable snapshots (:func:`~inferq.core.records.record`), changed
with their ``evolve`` or :func:`dataclasses.replace`.

The dialects translate their wire formats to and from these; the store persists
them; the engines consume :class:`ChatRequest` and produce :class:`ChatResult`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from inferq.core.records import copied, record
from inferq.core.states import JobState, ServiceClass
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

    def to_dict(self) -> dict[str, Any]:
        # field by field: dataclasses.asdict deep-copies every value, and this runs for
        # each job submitted
        data = {name: getattr(self, name) for name in _REQUEST_SCALARS}
        data["messages"] = [m.to_dict() for m in self.messages]
        data["stop"] = list(self.stop)
        data["response_format"] = (
            dataclasses.asdict(self.response_format) if self.response_format else None
        )
        data["tools"] = [dataclasses.asdict(t) for t in self.tools]
        # its fields are text: asdict's deep copy of them would only cost time
        choice = self.tool_choice
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
#: the fields of a ChatRequest that are stored as they are
_REQUEST_SCALARS = tuple(
    f.name
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


def request_from_dict(data: dict[str, Any]) -> Request:
    if data.get("kind") == "embed":
        return EmbedRequest.from_dict(data)
    if data.get("kind") == "payload":
        return PayloadRequest.from_dict(data)
    return ChatRequest.from_dict(data)


def result_from_dict(data: dict[str, Any]) -> Result:
    if data.get("kind") == "embed":
        return EmbedResult.from_dict(data)
    if data.get("kind") == "payload":
        return PayloadResult.from_dict(data)
    return ChatResult.from_dict(data)


@record
class JobError:
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@record(kw_only=True)
class Job:
    """One unit of work a client submitted and a worker leases."""

    id: str
    tenant: str
    model: str
    #: the API that accepted the job ("together", "infera", "openai")
    origin: str
    service_class: ServiceClass
    priority: int
    state: JobState
    request: Request
    created_at: float
    #: client metadata (Together's ``info``); the system adds ``progress`` and ``error``
    info: dict[str, Any] = field(default_factory=dict)
    #: the request as the client sent it, for dialects that echo it back
    inputs: dict[str, Any] | None = None
    result: Result | None = None
    error: JobError | None = None
    usage: Usage = Usage()
    #: number of times a worker has claimed the job
    attempt: int = 0
    max_attempts: int = 4
    owner: str | None = None
    lease_expires_at: float | None = None
    claimed_at: float | None = None
    finished_at: float | None = None
    #: wall-clock time after which the job is cancelled (sync requests)
    deadline_at: float | None = None
    #: monotonic submission order, assigned by the store
    seq: int = 0
    #: set on the rows of a batch: the batch, the row's custom_id and its line (from 1)
    batch_id: str | None = None
    custom_id: str | None = None
    batch_line: int | None = None

    def evolve(self, **changes: Any) -> Job:
        return copied(self, changes)

    @property
    def retries(self) -> int:
        return max(0, self.attempt - 1)


@record
class Lease:
    """Proof that a worker holds a job: every fenced update carries it."""

    job_id: str
    owner: str
    attempt: int


@record
class QueueMetrics:
    running: int
    waiting: int
    total: int


@record(kw_only=True)
class ActiveCount:
    """How many unfinished jobs (of every tenant) share a model, class, state and kind:
    one row of :meth:`~inferq.core.ports.JobQueue.count_active`, read for the metrics."""

    model: str
    service_class: ServiceClass
    #: validating, queued or running
    state: JobState
    #: whether they are rows of a batch
    in_batch: bool
    count: int


@record(kw_only=True)
class ApiKey:
    id: str
    name: str
    tenant: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    admin: bool = False
    #: the key's own requests and tokens per minute (None: the server's defaults)
    rpm: int | None = None
    tpm: int | None = None


@record
class JobFilter:
    """What ``list_jobs`` selects; None means any."""

    tenant: str | None = None
    model: str | None = None
    states: frozenset[JobState] | None = None
    limit: int = 100


@record(kw_only=True)
class FileRecord:
    """An uploaded or produced file (OpenAI file) or a dataset (Fireworks).

    The bytes live in the blob store under keys derived from the tenant and id;
    a dataset may hold several named files (``meta["files"]``: name -> size).
    """

    id: str
    tenant: str
    #: "file" or "dataset"
    kind: str
    #: "batch", "batch_output", "dataset", ...
    purpose: str
    filename: str
    bytes: int
    created_at: float
    #: "uploading" until its bytes are in place, then "ready"
    status: str = "ready"
    #: dialect fields echoed back (displayName, format, exampleCount, sourceJobName ...)
    meta: dict[str, Any] = field(default_factory=dict)
    #: assigned by the store, for keyset pagination
    seq: int = 0

    def evolve(self, **changes: Any) -> FileRecord:
        return copied(self, changes)


@record
class BatchCounts:
    """How a batch's rows stand; tokens summed over its finished rows."""

    total: int = 0
    waiting: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def active(self) -> int:
        return self.waiting + self.running

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchCounts:
        return cls(**data)


@record(kw_only=True)
class Batch:
    """A file of requests run as one row job each, with its outputs written at the end."""

    id: str
    tenant: str
    #: the API that created it ("openai", "fireworks"): how its rows are parsed
    dialect: str
    #: the model every row runs on, when the batch names one (Fireworks)
    model: str | None
    #: "/v1/chat/completions" or "/v1/embeddings"
    endpoint: str
    state: JobState
    input_file_id: str
    created_at: float
    expires_at: float
    #: row defaults (max_tokens, temperature, top_p, top_k) a row's own body overrides
    params: dict[str, Any] = field(default_factory=dict)
    #: dialect fields echoed back (metadata, displayName, outputDatasetId, ...)
    meta: dict[str, Any] = field(default_factory=dict)
    #: the state finalizing leads to (succeeded, cancelled or expired)
    final_state: JobState | None = None
    #: validation failures: [{"code", "message", "line", "param"}]
    errors: list[dict[str, Any]] | None = None
    #: why the batch failed as a whole
    error: JobError | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    #: rows counted at validation
    total: int = 0
    #: the tokens its rows were estimated at, by model (the tenant's enqueued-token
    #: bound holds them until the rows end: :mod:`inferq.core.batch_validation`)
    enqueued_tokens: dict[str, int] = field(default_factory=dict)
    #: the counts frozen when the batch ended (live counts come from its rows)
    counts: BatchCounts | None = None
    #: only the custom_ids of rows that did not succeed in this earlier batch run
    continued_from: str | None = None
    idempotency_key: str | None = None
    validated_at: float | None = None
    started_at: float | None = None
    finalizing_at: float | None = None
    cancelling_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    #: the runner holding the batch's bookkeeping lease
    owner: str | None = None
    lease_expires_at: float | None = None
    seq: int = 0
    #: how its rows' ids are made (:func:`inferq.core.batch_format.row_id`): 2, in the
    #: order of the batches' creation and then of their lines; 1, name-based (before 2)
    row_ids: int = 2

    def evolve(self, **changes: Any) -> Batch:
        return copied(self, changes)
