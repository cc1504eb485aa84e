"""Random ids for jobs and requests: the kernel's random bytes, drawn a few KiB at a time.

``uuid.uuid4()`` and ``os.urandom(16)`` ask the kernel for 16 bytes at each call, and the
call gives up the GIL. On a busy event loop that is a turn handed to any thread waiting
for the interpreter: with SQLite, its writer thread took one at each submit's request id
and job id, and the loop waited for it back (2026-12-07: one API process, one core,
1,600 submits/s with those calls against about 2,000 without; docs/benchmarks.md). These
ids come from the same source, the kernel's, 4 KiB per call (256 ids).

Job ids are time-ordered (:func:`new_uuid7`): a job's id is a key of the store's index on
``jobs.id``, and ids made in the same millisecond sort together there, so a group of
submits committed together changes one page of that index, not a random page each. With
300,000 jobs stored, an insert on SQLite took 95-105 µs with random ids and 65-73 µs with
these; on PostgreSQL no difference showed (docs/benchmarks.md, "Time-ordered job ids").
Infera's jobs keep random (version 4) ids, the only kind its API takes back. A batch's
rows get ids made from the batch and the line (:func:`ordered_uuid`), in the same order.

Credentials (API keys, node tokens, webhook secrets, console sessions) do not come from
here: they are made with :mod:`secrets` at each use.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time

#: bytes asked of the kernel at once
POOL_BYTES = 4096
ID_BYTES = 16


class _Pool:
    """Random bytes handed out ``ID_BYTES`` at a time, each handed out once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data = b""
        self.at = 0

    def take(self) -> bytes:
        with self.lock:
            if self.at + ID_BYTES > len(self.data):
                self.data, self.at = os.urandom(POOL_BYTES), 0
            start = self.at
            self.at += ID_BYTES
            return self.data[start : self.at]

    def forget(self) -> None:
        """A forked child must not hand out the bytes its parent will (the same ids)."""
        self.lock = threading.Lock()
        self.data, self.at = b"", 0


_pool = _Pool()
os.register_at_fork(after_in_child=_pool.forget)


#: the variant digit of an RFC 9562 UUID (binary ``10xx``), by the two low bits of the
#: random digit it replaces
_VARIANT = "89ab"


def new_uuid() -> str:
    """A random (version 4) UUID, as ``str(uuid.uuid4())`` makes one.

    Written from the hexadecimal digits, with the version digit (``4``) and the variant's
    two bits set as :class:`uuid.UUID` sets them: 1 µs, where building the UUID object
    and its string takes 3.
    """
    h = _pool.take().hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def new_uuid7() -> str:
    """A time-ordered (version 7) UUID, as RFC 9562 lays one out: the Unix time in
    milliseconds (48 bits), the version digit ``7``, the variant's two bits, and 74 random
    bits. Ids of later milliseconds sort after earlier ones (as text too); within one
    millisecond their order is random."""
    h = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex() + _pool.take()[:10].hex()
    return f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def new_hex() -> str:
    """32 random hexadecimal digits, as ``uuid.uuid4().hex`` has (128 random bits)."""
    return _pool.take().hex()


def ordered_uuid(millis: int, key: str, number: int) -> str:
    """A UUID that is the same for the same arguments and sorts (as text too) by
    ``millis``, then by ``key``, then by ``number``: RFC 9562's version 8 (its layout
    for ids made by the application), laid out as version 7 is: the time in milliseconds
    (48 bits), the version digit ``8``, 12 bits of ``key``'s hash, the variant's two
    bits, ``number`` (32 bits: below 2**32) and 30 more bits of the hash.

    A batch's rows get these (:func:`inferq.core.batch_format.row_id`): one id a line,
    the same after a crash, and each batch's ids after those of the batches and jobs
    before it, so inserting its rows appends to the end of the id index instead of
    writing a random page of it for each row.
    """
    if not 0 <= number < 1 << 32:
        raise ValueError(f"number {number} does not fit an ordered UUID's 32 bits")
    hashed = _key_bits(key)
    high = (millis & _MILLIS) << 16 | 0x8000 | hashed >> 30
    low = 1 << 63 | number << _NUMBER_SHIFT | hashed & _LOW_HASH
    h = f"{high:016x}{low:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_MILLIS = (1 << 48) - 1
_LOW_HASH = (1 << 30) - 1
#: where :func:`ordered_uuid` puts its number, in the UUID as one 128-bit integer
_NUMBER_SHIFT = 30
_NUMBER = ((1 << 32) - 1) << _NUMBER_SHIFT


def ordered_parts(text: str) -> tuple[int, int] | None:
    """An :func:`ordered_uuid`'s family (what every id of the same ``millis`` and ``key``
    shares: the UUID as an integer, its number's bits cleared) and its number; None for
    any other text (a version 4, 5 or 7 UUID, a malformed one)."""
    if len(text) != 36:
        return None
    try:
        value = int(text.replace("-", ""), 16)
    except ValueError:
        return None
    if value >> 76 & 0xF != 8 or value >> 62 & 0b11 != 0b10:
        return None  # not version 8, or not RFC 9562's variant
    return value & ~_NUMBER, (value & _NUMBER) >> _NUMBER_SHIFT


@functools.lru_cache(maxsize=256)
def _key_bits(key: str) -> int:
    """42 bits of ``key``'s BLAKE2b hash (kept: a batch asks for each of its lines)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=6).digest(), "big") >> 6
