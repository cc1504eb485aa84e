"""Continuous batching on one llama.cpp context: the decode thread.

:class:`BatchDecoder` owns a llama.cpp context with one KV-cache sequence per
slot and runs one loop on a thread of its own. Each step it drops aborted
sequences, admits waiting ones (most urgent first), evaluates one prompt
chunk (one llama_decode of at most ``batch_size`` tokens, of the most urgent
sequence still reading its prompt), then one token of every sequence that has
one ready, the last prompt token of a new sequence
or the last generated one, in a single llama_decode; it samples the next
token of each and finishes the sequences that hit EOS, a stop string or their
token limit. Sequences join and leave between steps, and a sequence more urgent
than all the others that arrives during a step's prompt chunk joins before its
token evaluation, which waits for the next step. That layout is what
keeps greedy output the same alone and batched: see
:mod:`inferq.engines.llamacpp` and :func:`_chunk`.

A finished sequence leaves its KV in the cache with the tokens it holds: a
later prompt that starts the same way is given that sequence id and evaluates
only what differs (the prefix cache).

Everything that touches the context happens on the decode thread; other
threads only put :class:`~inferq.engines.llama_sequence.SequenceJob` objects in its
inbox and set abort signals. What a sequence job holds, and how its sampler is built,
is in :mod:`inferq.engines.llama_sequence`.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Any

from inferq.core.errors import EngineError, EngineUnavailable
from inferq.core.structured import TokenLogprob
from inferq.core.work import ChatResult, Usage
from inferq.engines.base import ABORTED
from inferq.engines.llama_gil import holding_gil
from inferq.engines.llama_sequence import DecoderConfig, SequenceJob, new_sampler
from inferq.engines.llama_sequence import Sampling as Sampling  # re-exported
from inferq.engines.llama_structured import Tokenizer, logits_row, logprobs_of, token_logprob
from inferq.engines.llama_text import TextStream, common_prefix
from inferq.engines.llama_threads import ThreadTuner

log = logging.getLogger("inferq.engines.llamacpp")

#: a free slot with a shared prefix up to this many tokens shorter than the longest
#: may be chosen instead, to keep the running sequence ids consecutive
PREFIX_MARGIN = 32


class _Cache:
    """One sequence id of the KV cache and the tokens at its positions 0..n-1."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.tokens: list[int] = []


class _Running:
    """A sequence admitted to a cache slot."""

    def __init__(self, job: SequenceJob, cache: _Cache, cached: int, sampler: Any) -> None:
        self.job = job
        self.cache = cache
        self.cached = cached
        #: prompt tokens still to evaluate, all but the last
        self.pending = job.prompt[cached:-1]
        self.sampler = sampler
        #: the token to evaluate next, one at a time: the prompt's last, then each
        #: generated one
        self.next_token = job.prompt[-1]
        self.generated = 0
        self.stream = TextStream(job.stop)
        self.logprobs: list[TokenLogprob] | None = None if job.top_logprobs is None else []
        #: the log-softmax and best tokens of the logits the next token is sampled from
        self.scored: tuple[Any, list[tuple[int, float]]] | None = None


class BatchDecoder:
    """The decode loop over one context; ``submit`` from any thread."""

    def __init__(self, llama_cpp: Any, model: Any, config: DecoderConfig, *, name: str) -> None:
        self.config = config
        #: the quick calls of a step keep the GIL (see :mod:`inferq.engines.llama_gil`)
        self._lib = holding_gil(llama_cpp)
        self._model = model
        self._vocab = model.vocab
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        #: the vocabulary as the grammars of constrained sequences see it
        self.grammar_tokenizer = Tokenizer(llama_cpp, self._vocab)
        self._ctx = self._new_context()
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._threads = ThreadTuner(
            lambda n: llama_cpp.llama_set_n_threads(self._ctx, n, n),
            most=config.threads,
            enabled=config.tune_threads,
        )
        self._batch = llama_cpp.llama_batch_init(config.batch_size, 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self._inbox: queue.SimpleQueue[SequenceJob | None] = queue.SimpleQueue()
        #: (-priority, arrival, job): a heap, most urgent first
        self._waiting: list[tuple[int, int, SequenceJob]] = []
        self._arrivals = itertools.count()
        self._running: list[_Running] = []
        self._caches = [_Cache(i) for i in range(config.slots)]
        self._free = list(self._caches)
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"llama-{name}", daemon=True)
        self._thread.start()

    def _new_context(self) -> Any:
        lib, c = self._lib, self.config
        params = lib.llama_context_default_params()
        params.n_ctx = c.context_length * c.slots
        params.n_batch = c.batch_size
        params.n_ubatch = c.batch_size
        params.n_seq_max = c.slots
        params.n_threads = params.n_threads_batch = c.threads
        params.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if c.flash_attention
            else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        params.kv_unified = c.unified_kv
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model.model, params)
        if not ctx:
            raise EngineError("llama.cpp could not create a context (out of memory?)")
        if lib.llama_n_ctx_seq(ctx) < c.context_length:  # pragma: no cover - llama.cpp pads up
            lib.llama_free(ctx)
            raise EngineError(f"llama.cpp gave each sequence less than {c.context_length} tokens")
        return ctx

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: SequenceJob) -> None:
        """Queue ``job``; its ``done`` is called once, on the decode thread."""
        self._inbox.put(job)

    def close(self) -> None:
        """Stop the loop (sequences still running fail), then free the context.
        Blocks until the decode thread has ended."""
        self._inbox.put(None)
        self._thread.join()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)

    # -- the loop (decode thread) -------------------------------------------------

    def _loop(self) -> None:
        try:
            while self._receive():
                self._drop_stopped()
                self._admit()
                if self._running:
                    self._step_safely()
        finally:
            closing = EngineUnavailable("the engine was closed")
            for run in list(self._running):
                self._end(run, closing)
            for _, _, job in self._waiting:
                self._deliver(job, closing)

    def _receive(self) -> bool:
        """Move new jobs to the waiting line; block while there is nothing to do.
        False once the engine closes."""
        block = not self._running and not self._waiting
        while not self._closing:
            try:
                job = self._inbox.get(block=block)
            except queue.Empty:
                return True
            if job is None:
                self._closing = True
                break
            heapq.heappush(self._waiting, (-job.priority, next(self._arrivals), job))
            block = False
        return False

    def _drop_stopped(self) -> None:
        for run in [r for r in self._running if r.job.stopped()]:
            self._end(run, ABORTED)
        if any(job.stopped() for _, _, job in self._waiting):
            stopped = [job for _, _, job in self._waiting if job.stopped()]
            self._waiting = [entry for entry in self._waiting if not entry[2].stopped()]
            heapq.heapify(self._waiting)
            for job in stopped:
                usage = Usage(prompt_tokens=len(job.prompt))
                self._deliver(job, ChatResult(text="", finish_reason=ABORTED, usage=usage))

    def _admit(self) -> None:
        while self._waiting and self._free:
            _, _, job = heapq.heappop(self._waiting)
            try:
                sampler = new_sampler(self._lib, self._vocab, job.sampling)
            except Exception as exc:  # pragma: no cover - llama.cpp out of memory
                self._deliver(job, EngineError(f"could not create a sampler: {exc}"))
                continue
            cache, reuse = self._best_cache(job.prompt)
            if not self._lib.llama_memory_seq_rm(self._mem, cache.seq_id, reuse, -1):
                self._forget(cache)
                reuse = 0
            del cache.tokens[reuse:]
            self._free.remove(cache)
            self._running.append(_Running(job, cache, reuse, sampler))

    def _best_cache(self, prompt: list[int]) -> tuple[_Cache, int]:
        """The free cache slot to give ``prompt``, and how many of its tokens to keep.

        The lowest sequence id among those within ``PREFIX_MARGIN`` tokens of the
        longest shared prefix. With a KV stream per sequence, llama.cpp evaluates
        each run of consecutive sequence ids in a batch as a separate pass over
        the weights, so filling the lowest gap is worth more than a few tokens of
        prompt that need not be evaluated again.
        """
        shared = {cache.seq_id: common_prefix(cache.tokens, prompt) for cache in self._free}
        longest = max(shared.values())
        margin = 0 if self.config.unified_kv else PREFIX_MARGIN
        best = min(
            (c for c in self._free if shared[c.seq_id] >= longest - margin),
            key=lambda c: c.seq_id,
        )
        # At least the last prompt token is evaluated: its logits give the first token.
        # Never exactly one more before it: see _chunk.
        reuse = min(shared[best.seq_id], len(prompt) - 1)
        if reuse > 0 and len(prompt) - 1 - reuse == 1:
            reuse -= 1
        return best, reuse

    def _step_safely(self) -> None:
        try:
            self._step()
        except Exception as exc:
            log.exception("llama.cpp decode step failed")
            error = _retryable(f"llama.cpp failed: {type(exc).__name__}: {exc}")
            for run in list(self._running):
                self._forget(run.cache)
                self._end(run, error)

    def _step(self) -> None:
        """One step: at most one prompt chunk, of the most urgent sequence still
        evaluating its prompt, then one token of every sequence that has one ready,
        sampling the next token of each.

        One chunk a step keeps steps short, so that a sequence that arrives waits
        little for the step in progress. A sequence more urgent than every other
        one that finishes its prompt gets its first token at once, from an
        evaluation of its own (one row: cheap), instead of after the others'
        tokens; one that arrives during the prompt chunk cuts in before them (see
        :meth:`_cut_in`). The numbers are the same either way: a sequence's row
        does not depend on the rows beside it.
        """
        first: _Running | None = None
        prompting = [r for r in self._running if r.pending]
        if prompting:
            run = min(prompting, key=lambda r: (-r.job.priority, r.cache.seq_id))
            take = _chunk(len(run.pending), self.config.batch_size, len(run.cache.tokens))
            if take and self._evaluate([(run, run.pending[:take])], logits=False):
                del run.pending[:take]
                if not run.pending and self._outranks(run):
                    first = run
                    self._next_tokens([run])
            if first is None and self._cut_in():
                return
        self._next_tokens(
            sorted((r for r in self._running if not r.pending and r is not first), key=_seq_id)
        )

    def _cut_in(self) -> bool:
        """Whether a sequence that arrived during this step's prompt chunk outranks
        every running one and can be admitted now (a slot is free, or its holder
        was stopped to make room): then the others' tokens wait for the next step,
        and its prompt is evaluated first. A sync request behind a full batch so
        waits for one evaluation at most, not a prompt chunk and a token step."""
        if not self._receive() or not self._waiting:
            return False
        urgent = -self._waiting[0][0]
        live = [r for r in self._running if not r.job.stopped()]
        room = len(live) < len(self._running) or bool(self._free)
        return room and all(urgent > r.job.priority for r in live)

    def _outranks(self, run: _Running) -> bool:
        """Whether ``run`` is more urgent than every other running sequence."""
        return all(run.job.priority > r.job.priority for r in self._running if r is not run)

    def _next_tokens(self, ready: list[_Running]) -> None:
        """Evaluate the next token of each of ``ready`` (in order of sequence id) in
        one batch, and sample the token after it."""
        if ready and self._evaluate([(run, [run.next_token]) for run in ready], logits=True):
            for index, run in enumerate(ready):
                self._shape(run, index)
                token = self._lib.llama_sampler_sample(run.sampler, self._ctx, index)
                self._accept(run, token)

    def _shape(self, run: _Running, index: int) -> None:
        """Before ``run`` samples from row ``index``: score the logits when it reports
        log probabilities, then mask what its grammar does not allow."""
        job = run.job
        if job.constraint is None and job.top_logprobs is None:
            return
        logits = logits_row(self._lib, self._ctx, index, self._n_vocab)
        if job.top_logprobs is not None:
            run.scored = logprobs_of(logits, job.top_logprobs)
        if job.constraint is not None:
            job.constraint.mask(logits)

    def _evaluate(self, parts: list[tuple[_Running, list[int]]], *, logits: bool) -> bool:
        """One llama_decode of ``parts`` (in order of sequence id), with the logits
        of each part's last token when ``logits``. False when it failed: those
        sequences have ended with an error."""
        batch = self._batch
        n = 0
        for run, tokens in parts:
            pos = len(run.cache.tokens)
            for j, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = run.cache.seq_id
                batch.logits[n] = 1 if logits and j == len(tokens) - 1 else 0
                n += 1
        batch.n_tokens = n
        self._threads.before(n)
        started = time.perf_counter()
        rc = self._lib.llama_decode(self._ctx, batch)
        self._threads.after(n, time.perf_counter() - started)
        if rc != 0:
            error = _retryable(f"llama_decode failed with code {rc}")
            for run, _ in parts:
                self._forget(run.cache)
                self._end(run, error)
            return False
        for run, tokens in parts:
            run.cache.tokens.extend(tokens)
        return True

    def _accept(self, run: _Running, token: int) -> None:
        """Take a sampled token: finish the sequence or queue the token for the next step."""
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            self._end(run, "stop")
            return
        run.generated += 1
        if run.scored is not None and run.logprobs is not None:
            run.logprobs.append(token_logprob(token, *run.scored, self._token_bytes))
        constraint = run.job.constraint
        if constraint is not None and not constraint.accept(token):  # pragma: no cover
            self._end(run, EngineError("the grammar refused a token it allowed"))
            return
        piece = run.stream.push(self._token_bytes(token))
        if piece:
            run.job.emit(piece)
        if run.stream.stopped or (constraint is not None and constraint.finished):
            self._end(run, "stop")
        elif run.generated >= run.job.max_new:
            self._end(run, "length")
        else:
            run.next_token = token

    def _token_bytes(self, token: int) -> bytes:
        lib, buf = self._lib, self._piece
        n = lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:  # pragma: no cover - a piece longer than the buffer
            buf = ctypes.create_string_buffer(-n)
            n = lib.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _end(self, run: _Running, outcome: str | BaseException) -> None:
        """Finish ``run`` with a finish reason or an error; its slot becomes free
        and keeps its KV for the prefix cache."""
        self._running.remove(run)
        self._free.append(run.cache)
        self._lib.llama_sampler_free(run.sampler)
        if isinstance(outcome, BaseException):
            self._deliver(run.job, outcome)
            return
        tail = run.stream.flush()
        if tail:
            run.job.emit(tail)
        usage = Usage(
            prompt_tokens=len(run.job.prompt),
            completion_tokens=run.generated,
            cached_tokens=run.cached,
        )
        result = ChatResult(
            text=run.stream.text,
            finish_reason=outcome,
            usage=usage,
            stop_sequence=run.stream.stop_hit,
            logprobs=None if run.logprobs is None else tuple(run.logprobs),
        )
        self._deliver(run.job, result)

    def _forget(self, cache: _Cache) -> None:
        """Drop a cache slot's KV (after a failed step its content is not known)."""
        self._lib.llama_memory_seq_rm(self._mem, cache.seq_id, 0, -1)
        cache.tokens.clear()

    @staticmethod
    def _deliver(job: SequenceJob, outcome: ChatResult | BaseException) -> None:
        try:
            job.done(outcome)
        except Exception:  # pragma: no cover - e.g. the caller's event loop closed
            log.exception("could not hand a result back")


def _seq_id(run: _Running) -> int:
    return run.cache.seq_id


def _chunk(left: int, budget: int, position: int) -> int:
    """How many of a prompt's ``left`` tokens (all but its last) to evaluate now,
    from ``position``, with ``budget`` tokens to spare in this step.

    Never a chunk of one token past position 0, and never one token left over:
    llama.cpp computes the attention of a sequence's only row in a batch with
    another kernel than that of a row among several, and the last bits differ.
    (The prompt's last token is always evaluated alone, like a generated one.)
    """
    take = min(budget, left)
    if left - take == 1:
        take -= 1
    if take == 1 and position > 0:
        take = 0
    return max(take, 0)


def _retryable(message: str) -> EngineError:
    """An engine failure that running the request again may not meet."""
    error = EngineError(message)
    error.retryable = True
    return error
