"""Generated tokens to streamed text: whole UTF-8 characters, stop strings cut off.

Kept apart from the decode loop (:mod:`inferq.engines.llama_batch`) because it is
pure Python with no llama.cpp in it, and easy to test on its own.
"""

from __future__ import annotations

import codecs


class TextStream:
    """The text of one generation, fed a token's bytes at a time.

    ``push`` returns the text that may be sent to the client now: only whole
    UTF-8 characters (a character split across tokens waits for its last byte),
    and never text that may turn out to belong to a stop string (a suffix that
    is the start of one waits for the next token). Once a stop string appears,
    ``text`` ends before it and ``stopped`` is true.
    """

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        #: the most characters that can wait for a stop string to complete
        self._longest = max((len(s) for s in self._stop), default=1) - 1
        self.text = ""
        self._sent = 0
        self.stopped = False
        #: the stop string that ended the text, once one did
        self.stop_hit: str | None = None

    def push(self, data: bytes) -> str:
        """Add the bytes of one token; return the text that can be sent now."""
        if self.stopped:
            return ""
        self.text += self._decoder.decode(data)
        end = len(self.text)
        if self._stop:
            hit, string = self._find_stop()
            if string is not None:
                self.text = self.text[:hit]
                self.stopped = True
                self.stop_hit = string
                end = hit
            else:
                end -= self._held()
        piece = self.text[self._sent : end]
        self._sent = end
        return piece

    def flush(self) -> str:
        """The text still held back, at the end of the generation.

        A stop string that never completed is ordinary text after all; the bytes
        of a character that the last token left incomplete are dropped.
        """
        piece = self.text[self._sent :]
        self._sent = len(self.text)
        return piece

    def _find_stop(self) -> tuple[int, str | None]:
        """Where the first stop string starts and which one it is, or (-1, None).
        Text already sent cannot start one: it would have been held back."""
        found = [(i, s) for s in self._stop if (i := self.text.find(s, self._sent)) >= 0]
        return min(found, default=(-1, None), key=lambda hit: hit[0])

    def _held(self) -> int:
        """The length of the longest unsent suffix that starts a stop string."""
        for k in range(min(self._longest, len(self.text) - self._sent), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self._stop):
                return k
        return 0


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading items ``a`` and ``b`` share (slice comparisons run in C)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    # invariant: a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo
