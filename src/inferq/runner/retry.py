"""How a runner treats a record whose step keeps failing: back off, then give up.

A runner steps many records (batches, workflow jobs) in one loop. One record that
raises must not stop the others, must not be retried in a hot loop, and must not
be retried forever. :class:`Retries` keeps, in the runner's memory, each failing
record's run of consecutive failures: the delay before its next try doubles from
:attr:`RetryPolicy.first` up to :attr:`RetryPolicy.cap`, and after
:attr:`RetryPolicy.give_up_after` failures in a row the runner ends the record as
failed. A success clears the record's run. Only the first failure of a run in a
given state is worth a traceback in the log; the rest are counted quietly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    #: seconds before the first retry; doubled after each further failure
    first: float = 1.0
    #: the longest wait between two tries
    cap: float = 300.0
    #: consecutive failures after which the record is failed for good
    give_up_after: int = 5

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (1 for the first)."""
        return min(self.cap, self.first * 2.0 ** max(0, failures - 1))


@dataclass(frozen=True, slots=True)
class Failure:
    """One more failure of a record, as :meth:`Retries.failed` counted it."""

    #: failures in a row, this one included
    count: int
    #: when the record may be tried again
    retry_at: float
    #: the first failure of this run in this state: log it in full
    first_in_state: bool
    #: the run is long enough: end the record instead of retrying
    give_up: bool


@dataclass(slots=True)
class _Run:
    count: int
    retry_at: float
    state: str


class Retries:
    """The runs of consecutive failures of the records one runner steps."""

    def __init__(self, policy: RetryPolicy | None = None) -> None:
        self.policy = policy or RetryPolicy()
        self._runs: dict[str, _Run] = {}

    def due(self, key: str, now: float) -> bool:
        """Whether the record may be tried now (it has no run, or its wait is over)."""
        run = self._runs.get(key)
        return run is None or now >= run.retry_at

    def failed(self, key: str, state: str, now: float) -> Failure:
        run = self._runs.get(key)
        first_in_state = run is None or run.state != state
        count = 1 if run is None else run.count + 1
        retry_at = now + self.policy.delay(count)
        self._runs[key] = _Run(count=count, retry_at=retry_at, state=state)
        return Failure(
            count=count,
            retry_at=retry_at,
            first_in_state=first_in_state,
            give_up=count >= self.policy.give_up_after,
        )

    def succeeded(self, key: str) -> bool:
        """Clear the record's run; True when it had one (it recovered)."""
        return self._runs.pop(key, None) is not None

    def forget(self, key: str) -> None:
        self._runs.pop(key, None)

    def failures(self, key: str) -> int:
        run = self._runs.get(key)
        return 0 if run is None else run.count

    def prune(self, now: float) -> None:
        """Forget runs not tried again long after their wait ended: their records
        ended, were deleted or are in another runner's hands."""
        stale = now - 2 * self.policy.cap
        for key in [k for k, run in self._runs.items() if run.retry_at < stale]:
            del self._runs[key]

    def __len__(self) -> int:
        return len(self._runs)
