"""llama.cpp's quick calls, made by the decode thread without letting go of the GIL.

ctypes lets go of the GIL around every call into a library and takes it back afterwards.
Taking it back is the slow part when the server is busy: the event loop's thread holds the
GIL most of the time and lets go of it only for moments (every socket event that uvloop
hands back to Python), which it takes again before a thread woken to wait for it can run;
the waiting thread can lose that race many times over. Measured beside a flood of
requests (the loop on one core, the decode thread alone on the other): the decode thread
spent about 40% of its time waiting for the GIL after its calls, and ran at 0.6x the
tokens/s it had with the same flood at another process (docs/benchmarks.md, "the decode
thread beside a busy event loop").

A decode step calls the library a few times per sequence besides the decode itself: to
sample its next token, to ask whether that token ends it, and for the token's text. Those
take microseconds (the sampler about 0.1 ms), far less than one wait for the GIL, so they
are made through a :class:`ctypes.PyDLL` handle on the same library, which keeps the GIL:
a step then waits for the GIL once, after its llama_decode, instead of once per call.
The price: other threads wait for the step's sampling (about 1 ms for 8 sequences) where
they could slip in between its calls before.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger("inferq.engines.llamacpp")

#: the calls of the decode loop's steps that take microseconds, not milliseconds
QUICK = (
    "llama_sampler_sample",
    "llama_vocab_is_eog",
    "llama_token_to_piece",
    "llama_get_logits_ith",
)


class _Holding:
    """``lib`` with some of its functions replaced by twins that keep the GIL."""

    def __init__(self, lib: Any, twins: dict[str, Any]) -> None:
        self._lib = lib
        self.__dict__.update(twins)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lib, name)


def holding_gil(llama_cpp: Any, names: tuple[str, ...] = QUICK) -> Any:
    """``llama_cpp`` (the module) as the decode thread calls it: ``names`` keep the GIL,
    every other function is the module's own. Where the library cannot be opened that
    way, the module itself."""
    try:
        library = ctypes.PyDLL(llama_cpp.llama_cpp._lib._name)
        twins = {}
        for name in names:
            own = getattr(llama_cpp, name)
            twin = getattr(library, name)
            twin.argtypes, twin.restype = own.argtypes, own.restype
            twins[name] = twin
    except (AttributeError, OSError) as exc:  # another llama_cpp build, or none to open
        log.warning("llama.cpp's quick calls will let go of the GIL: %s", exc)
        return llama_cpp
    return _Holding(llama_cpp, twins)
