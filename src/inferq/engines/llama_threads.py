"""Which thread count llama.cpp evaluates with, chosen while it runs (see :class:`ThreadTuner`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("inferq.engines.llamacpp")


class ThreadTuner:
    """Switches between ``most`` threads and one, whichever evaluates faster now.

    llama.cpp's threads spin-wait for each other at every operation of a step.
    On a free machine two threads on two cores nearly double the tokens/s; when
    other work holds a core, the thread that waits for the one descheduled
    spins through whole time slices and a step can take ten times as long as
    on one thread. So now and then one evaluation runs with the other count,
    and the count sticks if it was clearly faster than the last evaluation of
    the same size. A probe that loses doubles the wait before the next one
    (from ``PROBE_EVERY`` to ``PROBE_MOST`` evaluations), so a lasting state
    costs little. The thread count does not change the results.
    """

    #: the first probe comes early: a busy machine costs most before it
    FIRST_PROBE = 4
    PROBE_EVERY = 32
    PROBE_MOST = 1024
    #: the trial count must beat the current one by this factor to take over
    MARGIN = 0.8

    def __init__(self, set_threads: Callable[[int], None], *, most: int, enabled: bool) -> None:
        self._set = set_threads
        self.most = most
        self.enabled = enabled and most > 1
        self.current = most
        self._wait = self.PROBE_EVERY
        self._until_probe = self.FIRST_PROBE
        self._trial: int | None = None
        #: the duration of the last evaluation of each size (tokens) at ``current`` threads
        self._last: dict[int, float] = {}

    def before(self, tokens: int) -> None:
        if not self.enabled:
            return
        self._until_probe -= 1
        if self._until_probe <= 0 and tokens in self._last:
            self._trial = 1 if self.current == self.most else self.most
            self._set(self._trial)

    def after(self, tokens: int, seconds: float) -> None:
        if not self.enabled:
            return
        if self._trial is None:
            self._last[tokens] = seconds
            return
        if seconds < self.MARGIN * self._last[tokens]:
            log.info("llama.cpp now evaluates with %d thread(s)", self._trial)
            self.current = self._trial
            self._last = {tokens: seconds}
            self._wait = self.PROBE_EVERY
        else:
            self._wait = min(2 * self._wait, self.PROBE_MOST)
        self._until_probe = self._wait
        self._set(self.current)
        self._trial = None
