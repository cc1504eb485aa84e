"""Compact JSON text (no spaces, text as it is rather than ``\\u`` escapes), written by
one C encoder made once.

``json.dumps`` and ``JSONEncoder.encode`` build the standard library's C encoder anew
at every call, and for the small values written at every submit (the job's request,
inputs and info; the answer) building it is most of the work: 17,000 instructions to
write a small dict, 4,000 with the encoder made once (docs/benchmarks.md). The text is
what ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` writes, with the
same errors, but for one thing: no check for circular values (the values written come
from JSON and from the models' ``to_dict``, which make none; one would end in a
RecursionError instead of a ValueError).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def compact(*, allow_nan: bool = True) -> Callable[[Any], str]:
    """A ``dumps`` for compact JSON text; ``allow_nan=False``: a NaN or an infinity is a
    ValueError, as Starlette's JSON answers have it."""
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan)
    try:
        from _json import make_encoder
    except ImportError:  # an interpreter without the C accelerator
        return encoder.encode
    chunks = make_encoder(
        None, encoder.default, json.encoder.encode_basestring, None, ":", ",",
        False, False, allow_nan,
    )  # fmt: skip

    def dumps(value: Any) -> str:
        return "".join(chunks(value, 0))

    return dumps


#: compact JSON text, NaN and infinities written as JavaScript does (as ``json.dumps``)
dumps = compact()
