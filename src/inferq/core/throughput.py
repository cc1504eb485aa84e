"""How much work ended lately: the series the console's throughput plot draws.

The store counts the jobs that ended per interval
(:meth:`~inferq.core.ports.JobQueue.finished_counts`); :func:`series` turns those
counts into one point per interval of the window, the empty ones included, as rates
per second.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishedCount:
    """The jobs that ended within one interval of a window: one row of
    :meth:`~inferq.core.ports.JobQueue.finished_counts`."""

    #: which interval: 0 is the one that starts the window
    bucket: int
    #: jobs that ended (in any terminal state), and how many of them succeeded
    jobs: int
    succeeded: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """One interval of the window, as rates over its length."""

    #: when the interval starts (epoch seconds)
    start: float
    jobs_per_second: float
    #: generated (completion) tokens per second
    tokens_per_second: float
    #: prompt tokens read per second
    prompt_tokens_per_second: float
    jobs: int
    succeeded: int
    completion_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    """A window of equal intervals, oldest first."""

    since: float
    until: float
    bucket: float
    points: tuple[Point, ...]

    @property
    def jobs(self) -> int:
        return sum(p.jobs for p in self.points)

    @property
    def completion_tokens(self) -> int:
        return sum(p.completion_tokens for p in self.points)


def window(now: float, *, span: float, bucket: float) -> tuple[float, float]:
    """The window ``[since, until)`` that ends with the interval holding ``now``.

    Its edges are multiples of ``bucket``, so the intervals of two reads a few
    seconds apart line up (a point does not wander as the window slides).
    """
    until = (now // bucket + 1) * bucket
    return until - span, until


def series(
    counts: Iterable[FinishedCount], *, since: float, until: float, bucket: float, now: float
) -> Series:
    """A point for every interval of ``[since, until)``, zero where nothing ended.

    The interval that holds ``now`` has only lasted until ``now``: its rates are over
    that time, so the newest point does not dip while its interval is still filling.
    """
    by_bucket = {c.bucket: c for c in counts}
    points = []
    for index in range(round((until - since) / bucket)):
        count = by_bucket.get(index)
        if count is None:
            count = FinishedCount(
                bucket=index, jobs=0, succeeded=0, prompt_tokens=0, completion_tokens=0
            )
        start = since + index * bucket
        lasted = min(bucket, max(now - start, 1.0))
        points.append(
            Point(
                start=start,
                jobs_per_second=count.jobs / lasted,
                tokens_per_second=count.completion_tokens / lasted,
                prompt_tokens_per_second=count.prompt_tokens / lasted,
                jobs=count.jobs,
                succeeded=count.succeeded,
                completion_tokens=count.completion_tokens,
            )
        )
    return Series(since=since, until=until, bucket=bucket, points=tuple(points))
