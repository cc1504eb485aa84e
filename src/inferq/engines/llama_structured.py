"""Structured output and tool calls on llama.cpp: decoding constrained by a grammar.

A request with ``response_format`` (a JSON object, or a JSON schema's document)
or with tools it must (or may) call gets a grammar (:func:`grammar_for`),
compiled by llguidance, the Rust library behind Guidance: JSON schemas through
its own compiler, tool calls as a Lark grammar whose arguments are the tool's
parameters schema (``%json``). Each sequence of the decode loop that has one
carries a :class:`Constraint`: before a token is sampled, llguidance computes
the set of tokens the grammar allows next (a bitmask over the vocabulary,
typically tens of microseconds) and every other token's logit is set to minus
infinity in llama.cpp's own logits buffer, so the ordinary sampler chain
(penalties, top-k, top-p, temperature, greedy) only ever picks an allowed one;
the token is then fed to the matcher. A generation that ends by itself (EOS,
allowed only where the grammar may end, or the grammar admitting nothing more)
therefore always parses and matches the schema; one cut by ``max_tokens`` or a
stop string may not, and says so with its finish reason.

JSON is generated compact (``", "`` and ``": "`` separators, no other
whitespace), so a model cannot loop on blank space. Schema features llguidance
does not implement (``not``, ``if``/``then``, ``uniqueItems``, ...) are refused
before queueing with a 400 that names them (:func:`check`). Why llguidance
rather than llama.cpp's own GBNF grammar sampler: see docs/benchmarks.md.

The prompt side (:func:`prompt_messages`) tells the model what is asked: the
tools and how to call them, the schema to follow, earlier calls written back as
calls.

numpy is imported by the functions that touch logits, not with the module: an API
process (``inferq serve --workers N``, ``--no-worker``) checks requests with
:func:`check` but never decodes, and numpy would cost each such process 11.5 MB.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from typing import TYPE_CHECKING, Any

from inferq.core.errors import InvalidRequest
from inferq.core.structured import JSON_SCHEMA, TOOL_AUTO, OutputFormat, TokenLogprob
from inferq.core.tool_text import (
    ARGS_OPEN,
    CALL_CLOSE,
    CALL_OPEN,
    call_text,
    callable_tools,
    check_tools,
    may_call,
    tools_prompt,
)
from inferq.core.work import ChatRequest

if TYPE_CHECKING:
    import numpy as np

#: llguidance's JSON options: compact, so that whitespace cannot run on
_JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


def _llguidance() -> Any:
    import llguidance

    return llguidance


def _schema(schema: dict[str, Any] | None) -> dict[str, Any]:
    """``schema`` (an object when empty) with the JSON options llguidance reads."""
    full: dict[str, Any] = copy.deepcopy(schema) if schema else {"type": "object"}
    own = full.get("x-guidance")
    full["x-guidance"] = {**_JSON_OPTIONS, **(own if isinstance(own, dict) else {})}
    return full


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def grammar_for(request: ChatRequest) -> str | None:
    """The llguidance grammar that ``request``'s answer must follow; None: free text."""
    ll = _llguidance()
    fmt = request.response_format
    text_schema = None if fmt is None else _schema(fmt.schema if fmt.kind == JSON_SCHEMA else None)
    if not may_call(request.tools, request.tool_choice):
        if text_schema is None:
            return None
        grammar: str = ll.LLMatcher.grammar_from_json_schema(text_schema)
        return grammar
    rules = []
    alternatives = []
    for i, tool in enumerate(callable_tools(request.tools, request.tool_choice)):
        params = json.dumps(_schema(tool.parameters), ensure_ascii=False)
        head = _lark_string(CALL_OPEN + tool.name + ARGS_OPEN)
        rules.append(f"call_{i}: {head} %json {params} {_lark_string(CALL_CLOSE)}")
        alternatives.append(f"call_{i}")
    if request.tool_choice.mode == TOOL_AUTO:
        if text_schema is not None:
            rules.append(f"answer: %json {json.dumps(text_schema, ensure_ascii=False)}")
            alternatives.append("answer")
        else:  # any text that does not start like a call
            rules.append(r"TEXT: /([^{](.|\n)*)?/")
            alternatives.append("TEXT")
    lark = "start: " + " | ".join(alternatives) + "\n" + "\n".join(rules) + "\n"
    grammar = ll.LLMatcher.grammar_from_lark(lark)
    return grammar


def check(request: ChatRequest) -> None:
    """InvalidRequest when ``request``'s format or tools cannot be enforced: a tool
    choice that cannot be met, or a schema with features llguidance does not
    implement (named in the message)."""
    check_tools(request.tools, request.tool_choice)
    try:
        grammar = grammar_for(request)
    except ValueError as exc:  # not JSON, or not an object
        raise InvalidRequest(f"the schema is not valid: {exc}", param=_param(request)) from exc
    if grammar is None:
        return
    failed, messages = _problems(grammar)
    if failed:
        raise InvalidRequest(
            f"the schema cannot be enforced: {'; '.join(messages)}", param=_param(request)
        )


@functools.lru_cache(maxsize=256)
def _problems(grammar: str) -> tuple[bool, tuple[str, ...]]:
    """Whether llguidance refuses ``grammar``, and why; remembered, as the rows of a
    batch often share one schema."""
    failed, messages = _llguidance().LLMatcher.validate_grammar_with_warnings(grammar)
    return bool(failed), tuple(messages)


def _param(request: ChatRequest) -> str:
    return "tools" if may_call(request.tools, request.tool_choice) else "response_format"


class Tokenizer:
    """llguidance's view of a model's vocabulary, built once (about a second) on
    first use."""

    def __init__(self, llama_cpp: Any, vocab: Any) -> None:
        self._lib = llama_cpp
        self._vocab = vocab
        self._lock = threading.Lock()
        self._built: Any = None

    def get(self) -> Any:
        with self._lock:
            if self._built is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                self._built = lltokenizer_from_vocab(self._vocab)
            return self._built


class Constraint:
    """One sequence's grammar state: the tokens it allows next, and the tokens taken."""

    def __init__(self, tokenizer: Tokenizer, grammar: str) -> None:
        ll = _llguidance()
        self._matcher = ll.LLMatcher(tokenizer.get(), grammar, log_level=0)
        if self._matcher.is_error():  # pragma: no cover - check() ran first
            raise InvalidRequest(f"the grammar is not valid: {self._matcher.get_error()}")

    def mask(self, logits: np.ndarray[Any, np.dtype[np.float32]]) -> None:
        """Set the logit of every token the grammar does not allow next to -inf."""
        import numpy as np

        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: logits.shape[0]]
        logits[allowed == 0] = -np.inf

    def accept(self, token: int) -> bool:
        """Feed the sampled token; False when the grammar refused it."""
        ok: bool = self._matcher.consume_token(token)
        return ok

    @property
    def finished(self) -> bool:
        """Whether the grammar admits nothing more (only the end)."""
        done: bool = self._matcher.is_stopped()
        return done


def logits_row(llama_cpp: Any, ctx: Any, index: int, n_vocab: int) -> np.ndarray[Any, Any]:
    """The logits of batch row ``index`` as a numpy view on llama.cpp's buffer:
    writing to it changes what the sampler sees."""
    import numpy as np

    pointer = llama_cpp.llama_get_logits_ith(ctx, index)
    row: np.ndarray[Any, Any] = np.ctypeslib.as_array(pointer, shape=(n_vocab,))
    return row


def logprobs_of(
    logits: np.ndarray[Any, Any], top: int
) -> tuple[np.ndarray[Any, Any], list[tuple[int, float]]]:
    """The log-softmax of ``logits`` and its ``top`` most likely tokens, best first."""
    import numpy as np

    values = logits.astype(np.float64)
    peak = values.max()
    logp = values - peak - np.log(np.exp(values - peak).sum())
    best: list[tuple[int, float]] = []
    if top:
        idx = np.argpartition(-logp, top)[:top]
        idx = idx[np.argsort(-logp[idx])]
        best = [(int(i), float(logp[i])) for i in idx]
    return logp, best


def token_logprob(
    token: int, logp: np.ndarray[Any, Any], best: list[tuple[int, float]], piece: Any
) -> TokenLogprob:
    """A :class:`TokenLogprob` of ``token``; ``piece(token)`` gives a token's bytes."""

    def one(t: int, value: float) -> TokenLogprob:
        data: bytes = piece(t)
        return TokenLogprob(
            token=data.decode("utf-8", errors="replace"), logprob=value, bytes=tuple(data)
        )

    entry = one(token, float(logp[token]))
    return TokenLogprob(
        token=entry.token,
        logprob=entry.logprob,
        bytes=entry.bytes,
        top=tuple(one(t, v) for t, v in best),
    )


def prompt_messages(request: ChatRequest) -> list[dict[str, Any]]:
    """``request``'s messages as the chat template gets them: the tools and the
    output format described in the system message, earlier calls as call text."""
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        content = m.content
        if m.tool_calls:
            calls = "\n".join(call_text(c.name, c.arguments) for c in m.tool_calls)
            content = f"{content}\n{calls}" if content else calls
        messages.append({"role": m.role, "content": content})
    hints = []
    if may_call(request.tools, request.tool_choice):
        hints.append(tools_prompt(request.tools, request.tool_choice))
    if request.response_format is not None:
        hints.append(_format_hint(request.response_format))
    if hints:
        hint = "\n\n".join(hints)
        if messages and messages[0]["role"] in ("system", "developer"):
            messages[0] = {"role": "system", "content": f"{messages[0]['content']}\n\n{hint}"}
        else:
            messages.insert(0, {"role": "system", "content": hint})
    return messages


def _format_hint(fmt: OutputFormat) -> str:
    if fmt.kind == JSON_SCHEMA and fmt.schema:
        schema = json.dumps(fmt.schema, ensure_ascii=False)
        return f"Answer with a JSON object that follows this JSON schema: {schema}"
    return "Answer with a JSON object."
