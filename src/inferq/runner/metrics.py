"""The Prometheus metrics of one process, in one registry of its own.

Two kinds of numbers:

* **Gauges of the queue** (``inferq_queue_depth``, ``inferq_jobs_running``,
  ``inferq_batch_rows``) are read from the store at each scrape
  (:meth:`Metrics.scrape`, through :meth:`~inferq.core.ports.JobQueue.count_active`),
  so every process of a fleet reports the same truth; sum them with ``max`` (or read
  one process), never ``sum``.
* **Counters and histograms of this process**: what its worker did with the jobs it ran
  (observed in :mod:`inferq.runner.worker`), its engine slots, and the HTTP requests it
  answered (observed by the API's middleware). Sum these over the fleet.

A :class:`Metrics` holds its own :class:`~prometheus_client.CollectorRegistry` (never the
library's global one), so two apps in one test process do not mix their numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferq.core.models import ActiveCount, Job
from inferq.core.nodes import NodeStore
from inferq.core.ports import JobQueue
from inferq.core.states import CLASS_LABELS, JobState, ServiceClass
from inferq.runner.tally import TallyCounter, TallyGauge, TallyHistogram

#: the content type of the text format
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: how a job ended, as ``inferq_jobs_total``'s ``outcome`` label says it
OUTCOMES = ("succeeded", "failed", "cancelled", "expired")
#: the token kinds of ``inferq_tokens_total``
TOKEN_KINDS = ("prompt", "completion", "cached")
#: what became of a result a node reported, as ``inferq_node_jobs_total`` says it:
#: stored (succeeded, failed), fenced off (lost: the lease was no longer the node's, or
#: the job is gone) or refused (too large, not a result of the job's kind)
NODE_OUTCOMES = ("succeeded", "failed", "lost", "refused")
#: the error codes of a result fenced off: the lease is gone, or the job
FENCED = frozenset({"lease_lost", "not_found"})
_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
_RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def class_label(service_class: ServiceClass) -> str:
    """``interactive``, ``async`` or ``batch``."""
    return CLASS_LABELS[service_class]


class _QueueGauges(Collector):
    """The store's unfinished jobs, as last read by :meth:`Metrics.scrape`.

    Every (model, class) of the configured models is reported, 0 when none waits or
    runs, so that a series drops to zero instead of vanishing.
    """

    def __init__(self, models: Sequence[str]) -> None:
        self.models = tuple(models)
        self.counts: list[ActiveCount] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        keys = [(m, c) for m in self.models for c in ServiceClass]
        waiting = dict.fromkeys(keys, 0)
        running = dict.fromkeys(keys, 0)
        rows = dict.fromkeys((JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING), 0)
        for c in self.counts:
            key = (c.model, c.service_class)
            if c.state is JobState.QUEUED:
                waiting[key] = waiting.get(key, 0) + c.count
            elif c.state is JobState.RUNNING:
                running[key] = running.get(key, 0) + c.count
            if c.in_batch:
                rows[c.state] = rows.get(c.state, 0) + c.count
        yield _family(
            "inferq_queue_depth", "Jobs waiting in the queue (read from the store).", waiting
        )
        yield _family("inferq_jobs_running", "Jobs running (read from the store).", running)
        batch_rows = GaugeMetricFamily(
            "inferq_batch_rows",
            "Unfinished rows of batches by state (read from the store).",
            labels=["state"],
        )
        for state, n in rows.items():
            batch_rows.add_metric([state.value], n)
        yield batch_rows

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class _NodeGauge(Collector):
    """``inferq_nodes_connected``: the nodes seen lately, as last read by
    :meth:`Metrics.scrape` from the store (so every process reports the same)."""

    def __init__(self) -> None:
        self.connected = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "inferq_nodes_connected",
            "Nodes (not revoked) seen within their heartbeat window (read from the store).",
            value=self.connected,
        )

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


def _family(
    name: str, documentation: str, values: dict[tuple[str, ServiceClass], int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["model", "class"])
    for (model, service_class), n in sorted(values.items()):
        family.add_metric([model, class_label(service_class)], n)
    return family


class Metrics:
    """Every metric of one process. The worker and the HTTP middleware observe into it;
    ``GET /metrics`` calls :meth:`scrape`."""

    def __init__(self, *, models: Sequence[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self._queue = _QueueGauges(models)
        r.register(self._queue)
        self.jobs = TallyCounter(
            "inferq_jobs",
            "Jobs this process's worker saw end, by outcome.",
            ["model", "class", "outcome"],
            r,
        )
        self.retries = TallyCounter(
            "inferq_job_retries", "Failed attempts handed back for a retry.", ["model"], registry=r
        )
        self.preemptions = TallyCounter(
            "inferq_preemptions",
            "Running jobs stopped and handed back for more urgent work.",
            ["model"],
            r,
        )
        self.queue_seconds = TallyHistogram(
            "inferq_job_queue_seconds",
            "From a job's submission to each start of it on this worker.",
            ["model", "class"],
            r,
            buckets=_WAIT_BUCKETS,
        )
        self.run_seconds = TallyHistogram(
            "inferq_job_run_seconds",
            "From a job's start to its result or final failure.",
            ["model", "class"],
            r,
            buckets=_RUN_BUCKETS,
        )
        self.first_token_seconds = TallyHistogram(
            "inferq_time_to_first_token_seconds",
            "From a chat job's start on the engine to its first generated token.",
            ["model", "class"],
            r,
            buckets=_FIRST_TOKEN_BUCKETS,
        )
        self.tokens = TallyCounter(
            "inferq_tokens",
            "Tokens of the jobs that succeeded, by kind (prompt, completion, cached).",
            ["model", "kind"],
            r,
        )
        self.engine_slots = TallyGauge(
            "inferq_engine_slots",
            "This process's engine slots, busy or free.",
            ["model", "state"],
            r,
        )
        self.http_requests = TallyCounter(
            "inferq_http_requests",
            "HTTP requests answered, by dialect and status.",
            ["dialect", "status"],
            r,
        )
        self.webhook_attempts = TallyCounter(
            "inferq_webhook_deliveries",
            "Webhook delivery attempts this process made, by outcome (delivered, retried: "
            "failed and due again, failed: given up).",
            ["outcome"],
            r,
        )
        self._nodes = _NodeGauge()
        r.register(self._nodes)
        self.node_jobs = TallyCounter(
            "inferq_node_jobs",
            "Results nodes reported to this process, by outcome (succeeded, failed, lost: "
            "fenced off, refused).",
            ["node", "outcome"],
            r,
        )
        self.node_claims = TallyCounter(
            "inferq_node_claims", "Jobs this process handed to each node.", ["node"], r
        )
        self.http_seconds = TallyHistogram(
            "inferq_http_request_seconds",
            "From a request's arrival to the end of its response.",
            ["dialect"],
            r,
            buckets=_HTTP_BUCKETS,
        )

    def set_models(self, models: Sequence[str]) -> None:
        """The models whose queue gauges read 0 rather than vanish when idle."""
        self._queue.models = tuple(models)

    def slots(self, model: str, *, busy: int, total: int) -> None:
        self.engine_slots.labels(model, "busy").set(busy)
        self.engine_slots.labels(model, "free").set(max(total - busy, 0))

    def job_ended(self, model: str, service_class: ServiceClass, outcome: str) -> None:
        self.jobs.labels(model, class_label(service_class), outcome).inc()

    def node_reported(
        self, node: str, *, failed: bool, refused: str | None = None, count: int = 1
    ) -> None:
        """A node reported ``count`` results (``failed``: an error) that were stored, or
        refused with the error code ``refused`` (:data:`FENCED` codes count as lost)."""
        if refused is None:
            outcome = "failed" if failed else "succeeded"
        else:
            outcome = "lost" if refused in FENCED else "refused"
        self.node_jobs.labels(node, outcome).inc(count)

    def job_ended_unrun(self, job: Job) -> None:
        """A job that ended (cancelled, expired) before a worker ran it."""
        self.job_ended(job.model, job.service_class, job.state.value)

    async def scrape(
        self, store: JobQueue, *, nodes: NodeStore | None = None, node_window: float = 60.0
    ) -> bytes:
        """The text format, the queue gauges read from ``store`` now, and the nodes seen
        within ``node_window`` seconds from ``nodes`` (the window in which a node counts
        as connected: :attr:`inferq.core.node_messages.NodeLimits.seen_within`)."""
        self._queue.counts = await store.count_active()
        if nodes is not None:
            since = time.time() - node_window
            self._nodes.connected = sum(
                1
                for node in await nodes.list_nodes()
                if node.revoked_at is None
                and node.last_seen is not None
                and node.last_seen >= since
            )
        # no await between the read and the rendering: one scrape's numbers stay together
        return generate_latest(self.registry)
