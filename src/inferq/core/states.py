"""Job states and the one table of allowed transitions.

:class:`~inferq.core.batches.BatchService` checks each change of a batch's state
against :data:`TRANSITIONS` (:func:`check_transition`) before it writes it. The
stores do not read the table: each of their writes names the states it may start
from in its own condition (a fenced write only from ``running``, ``finish`` only
from a state that is not terminal, ``update_batch`` only from the state the caller
read). The dialects only *render* these states (see ``api/<dialect>/translate.py``).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from inferq.core.errors import Conflict


class JobState(StrEnum):
    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
)
#: states a worker may claim from (running only once its lease has expired)
CLAIMABLE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
#: states a client may cancel from
CANCELLABLE_STATES = frozenset(
    {JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING, JobState.FINALIZING}
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.VALIDATING: frozenset(
        {JobState.QUEUED, JobState.FAILED, JobState.CANCELLING, JobState.CANCELLED}
    ),
    # a batch goes from queued to cancelling or finalizing while its rows run
    JobState.QUEUED: frozenset(
        {
            JobState.RUNNING,
            JobState.CANCELLING,
            JobState.FINALIZING,
            JobState.CANCELLED,
            JobState.EXPIRED,
            JobState.FAILED,
        }
    ),
    # running -> running is a re-claim after the lease expired (attempt + 1)
    JobState.RUNNING: frozenset(
        {
            JobState.RUNNING,
            JobState.QUEUED,
            JobState.FINALIZING,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLING,
            JobState.CANCELLED,
            JobState.EXPIRED,
        }
    ),
    JobState.FINALIZING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED}
    ),
    JobState.CANCELLING: frozenset({JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.EXPIRED: frozenset(),
}


def check_transition(current: JobState, new: JobState) -> None:
    """Raise :class:`Conflict` unless ``current -> new`` is allowed."""
    if new not in TRANSITIONS[current]:
        raise Conflict(f"a {current.value} job cannot become {new.value}")


class ServiceClass(IntEnum):
    """Scheduling class: lower values are always claimed first."""

    #: a client is waiting on the connection (sync chat completions)
    INTERACTIVE = 0
    #: queued jobs a client collects later (Together queue, Infera jobs)
    ASYNC = 1
    #: rows of a batch
    BATCH = 2


#: each class's name in logs and metrics (``interactive``, ``async``, ``batch``), by its
#: value: a tuple indexed by the class, as an enum's ``name`` and its hash are Python
#: calls, and a submit's log line names its class
CLASS_LABELS: tuple[str, ...] = tuple(
    ServiceClass(value).name.lower() for value in range(len(ServiceClass))
)
