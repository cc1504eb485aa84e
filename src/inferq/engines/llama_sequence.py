"""What a caller hands the decode thread (:mod:`inferq.engines.llama_batch`): one
sequence to generate, how it samples its tokens, and the shape of the context.

:func:`new_sampler` builds the llama.cpp sampler chain of a :class:`Sampling`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferq.core.work import ChatResult
from inferq.engines.base import AbortSignal
from inferq.engines.llama_structured import Constraint

#: min_p when sampling at temperature > 0 (llama-cpp-python's default, kept from before)
MIN_P = 0.05
#: how many of the latest tokens presence and frequency penalties look at
PENALTY_LAST_N = 64
#: the seed llama.cpp reads as "pick one at random"
RANDOM_SEED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class Sampling:
    """How one sequence picks its tokens. Temperature 0 is greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 40
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DecoderConfig:
    """The context's shape; see the options in :mod:`inferq.engines.llamacpp`."""

    slots: int
    #: tokens per sequence: prompt and generated text together
    context_length: int
    #: the most tokens evaluated in one step (llama.cpp's n_batch and n_ubatch)
    batch_size: int
    #: the most threads a step uses
    threads: int
    #: whether to drop to one thread while that is faster (see :class:`ThreadTuner`)
    tune_threads: bool
    flash_attention: bool
    #: one KV buffer shared by all sequences (False: a stream per sequence)
    unified_kv: bool


@dataclass(eq=False, kw_only=True)
class SequenceJob:
    """One generation handed to the decode thread."""

    prompt: list[int]
    #: the most tokens to generate
    max_new: int
    sampling: Sampling
    stop: tuple[str, ...] = ()
    #: higher is admitted first when sequences wait for a slot
    priority: int = 0
    abort: AbortSignal = field(default_factory=AbortSignal)
    #: called on the decode thread with each new piece of text
    emit: Callable[[str], None] = lambda piece: None
    #: called once on the decode thread, with the result or the error
    done: Callable[[ChatResult | BaseException], None] = lambda outcome: None
    #: set when the caller stopped waiting (its coroutine was cancelled)
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: the grammar every token must follow (structured output, tool calls)
    constraint: Constraint | None = None
    #: report each token's log probability, with this many alternatives; None: do not
    top_logprobs: int | None = None

    def stopped(self) -> bool:
        return self.abort.is_set() or self.cancelled.is_set()


def new_sampler(lib: Any, vocab: Any, s: Sampling) -> Any:
    """A llama.cpp sampler chain that picks tokens as ``s`` says (the caller frees it)."""
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if s.presence_penalty or s.frequency_penalty:
        penalties = lib.llama_sampler_init_penalties(
            lib.llama_vocab_n_tokens(vocab),
            PENALTY_LAST_N,
            1.0,
            s.frequency_penalty,
            s.presence_penalty,
        )
        lib.llama_sampler_chain_add(chain, penalties)
    if s.temperature <= 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain
    seed = RANDOM_SEED if s.seed is None else s.seed & 0xFFFFFFFF
    if s.top_k > 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(s.top_k))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(s.top_p, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(MIN_P, 1))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(s.temperature))
    lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
    return chain
