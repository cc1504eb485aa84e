"""What the console's pages show, computed from the services' records: queue rows,
a job's timings, a batch's or workflow job's progress, the throughput charts."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from inferq.core.models import ActiveCount, Batch, BatchCounts, Job
from inferq.core.states import JobState, ServiceClass
from inferq.core.throughput import Series
from inferq.core.work import ChatResult, EmbedResult
from inferq.core.workflow_meta import (
    DIALECT as WORKFLOW_DIALECT,
)
from inferq.core.workflow_meta import (
    FAILURE,
    IN_PROGRESS,
    SKIPPED,
    SUCCESS,
    meta_of,
)

#: how much of a job's output the detail page shows
PREVIEW_CHARS = 4000


def class_name(service_class: ServiceClass) -> str:
    return service_class.name.lower()


# -- queues ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    model: str
    service_class: str
    #: queued (waiting for a slot)
    waiting: int
    running: int
    #: batch rows still being validated (not claimable yet)
    validating: int
    #: how many of the waiting and running are rows of a batch
    batch_rows: int


def queue_rows(counts: Iterable[ActiveCount], models: Collection[str]) -> list[QueueRow]:
    """One row per model and service class: every configured model, every class, and
    any other model that has work (another process may serve more models)."""
    cells: dict[tuple[str, ServiceClass], dict[str, int]] = {}
    for count in counts:
        cell = cells.setdefault((count.model, count.service_class), {})
        cell[count.state.value] = cell.get(count.state.value, 0) + count.count
        if count.in_batch and count.state is not JobState.VALIDATING:
            cell["batch"] = cell.get("batch", 0) + count.count
    names = sorted(set(models) | {model for model, _ in cells})
    rows = []
    for model in names:
        for service_class in ServiceClass:
            cell = cells.get((model, service_class), {})
            rows.append(
                QueueRow(
                    model=model,
                    service_class=class_name(service_class),
                    waiting=cell.get(JobState.QUEUED.value, 0),
                    running=cell.get(JobState.RUNNING.value, 0),
                    validating=cell.get(JobState.VALIDATING.value, 0),
                    batch_rows=cell.get("batch", 0),
                )
            )
    return rows


# -- jobs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobView:
    job: Job
    service_class: str
    #: from submission to the (last) claim, or until now while it waits
    queued_for: float | None
    #: from the claim to the end, or until now while it runs
    ran_for: float | None
    #: from submission to the end
    took: float | None
    preview: str | None
    cancellable: bool


def job_view(job: Job, now: float) -> JobView:
    end = job.finished_at
    if job.claimed_at is not None:
        queued_for: float | None = job.claimed_at - job.created_at
        ran_for: float | None = (end if end is not None else now) - job.claimed_at
    else:
        queued_for = (end if end is not None else now) - job.created_at
        ran_for = None
    preview = None
    if isinstance(job.result, ChatResult):
        text = job.result.text
        preview = text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + " …"
    elif isinstance(job.result, EmbedResult):
        vectors = job.result.vectors
        preview = f"{len(vectors)} vector(s) of {len(vectors[0]) if vectors else 0} dimensions"
    return JobView(
        job=job,
        service_class=class_name(job.service_class),
        queued_for=max(queued_for, 0.0) if queued_for is not None else None,
        ran_for=max(ran_for, 0.0) if ran_for is not None else None,
        took=end - job.created_at if end is not None else None,
        preview=preview,
        cancellable=not job.state.terminal,
    )


# -- batches and workflow jobs --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a batch (rows) or a workflow job (a task per file and node) has got."""

    #: "rows" or "tasks"
    unit: str
    total: int
    succeeded: int
    #: failed, cancelled or expired
    failed: int
    running: int
    #: what the rate counts ("output tokens", "input tokens"), None when there is none
    rate_of: str | None
    per_second: float | None
    #: seconds until every row has ended at the pace so far; None when unknown or ended
    eta: float | None
    elapsed: float | None

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed

    @property
    def percent(self) -> int:
        return math.floor(100 * self.ended / self.total) if self.total else 0


def is_workflow(batch: Batch) -> bool:
    return batch.dialect == WORKFLOW_DIALECT


def _elapsed(batch: Batch, now: float) -> float | None:
    start = batch.started_at or batch.validated_at
    if start is None:
        return None
    return max((batch.finished_at or now) - start, 0.0)


def _eta(batch: Batch, total: int, ended: int, elapsed: float | None) -> float | None:
    if batch.state.terminal or not ended or not elapsed or ended >= total:
        return None
    return (total - ended) * elapsed / ended


def batch_progress(batch: Batch, counts: BatchCounts, now: float) -> Progress:
    total = max(batch.total, counts.total)
    ended = counts.done
    elapsed = _elapsed(batch, now)
    embeddings = "embeddings" in batch.endpoint
    tokens = counts.prompt_tokens if embeddings else counts.completion_tokens
    return Progress(
        unit="rows",
        total=total,
        succeeded=counts.succeeded,
        failed=counts.failed + counts.cancelled,
        running=counts.running,
        rate_of="input tokens" if embeddings else "output tokens",
        per_second=tokens / elapsed if elapsed else None,
        eta=_eta(batch, total, ended, elapsed),
        elapsed=elapsed,
    )


def workflow_progress(job: Batch, now: float) -> Progress:
    meta = meta_of(job)
    states = [state for per_file in meta.get("tasks", {}).values() for state in per_file.values()]
    total = max(len(meta.get("files", [])) * len(meta.get("nodes", [])), len(states))
    succeeded = sum(state in (SUCCESS, SKIPPED) for state in states)
    failed = sum(state == FAILURE for state in states)
    elapsed = _elapsed(job, now)
    return Progress(
        unit="tasks",
        total=total,
        succeeded=succeeded,
        failed=failed,
        running=sum(state == IN_PROGRESS for state in states),
        rate_of=None,
        per_second=None,
        eta=_eta(job, total, succeeded + failed, elapsed),
        elapsed=elapsed,
    )


# -- throughput charts -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """One line chart of the throughput page, drawn as inline SVG."""

    id: str
    title: str
    unit: str
    width: int
    height: int
    #: the plot area: left, top, right, bottom
    left: int
    top: int
    right: int
    bottom: int
    #: the line, as SVG polyline points, and the area under it as a path
    points: str
    area: str
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    latest: float
    peak: float
    values: tuple[float, ...]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return float(10 * power)


def _tick_label(value: float) -> str:
    return f"{value:g}" if value >= 0.01 or value == 0 else f"{value:.1e}"


def chart(chart_id: str, title: str, unit: str, values: list[float], span: float) -> Chart:
    width, height = 720, 200
    left, top, right, bottom = 56, 12, width - 12, height - 28
    top_value = nice_ceiling(max(values, default=0.0))
    step = (right - left) / max(len(values) - 1, 1)

    def y(value: float) -> float:
        return bottom - (bottom - top) * value / top_value

    coords = [(left + i * step, y(v)) for i, v in enumerate(values)]
    points = " ".join(f"{x:.1f},{y_:.1f}" for x, y_ in coords)
    area = ""
    if coords:
        area = (
            f"M{coords[0][0]:.1f},{bottom} "
            + " ".join(f"L{x:.1f},{y_:.1f}" for x, y_ in coords)
            + f" L{coords[-1][0]:.1f},{bottom} Z"
        )
    minutes = round(span / 60)
    x_ticks = tuple(
        Tick(left + (right - left) * (1 - back / minutes), f"-{back} min" if back else "now")
        for back in (minutes, minutes * 3 // 4, minutes // 2, minutes // 4, 0)
    )
    y_ticks = tuple(
        Tick(y(top_value * part), _tick_label(top_value * part)) for part in (0, 0.5, 1)
    )
    return Chart(
        id=chart_id,
        title=title,
        unit=unit,
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        points=points,
        area=area,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        latest=values[-1] if values else 0.0,
        peak=max(values, default=0.0),
        values=tuple(values),
    )


def throughput_charts(data: Series) -> tuple[Chart, Chart]:
    span = data.until - data.since
    tokens = [p.tokens_per_second for p in data.points]
    jobs = [p.jobs_per_second for p in data.points]
    return (
        chart("tokens", "Output tokens per second", "tokens/s", tokens, span),
        chart("jobs", "Jobs ended per second", "jobs/s", jobs, span),
    )
