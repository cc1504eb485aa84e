"""The tally metrics expose exactly what prometheus_client's own metrics would, for the
same observations (their ``_created`` samples aside, which inferq does not publish)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from inferq.runner.tally import TallyCounter, TallyGauge, TallyHistogram

BUCKETS = (0.005, 0.01, 0.25, 1, 2.5, 300, 3600)
OBSERVED = (0.001, 0.005, 0.0051, 0.3, 1, 1.0000001, 299, 5000, 0.25)


def text(registry: CollectorRegistry) -> list[str]:
    return sorted(
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    )


def test_the_same_text_as_prometheus_client_for_the_same_observations() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = TallyCounter("x_jobs", "Jobs.", ["model", "outcome"], ours)
    gauge = TallyGauge("x_slots", "Slots.", ["model"], ours)
    histogram = TallyHistogram("x_seconds", "Seconds.", ["model"], ours, buckets=BUCKETS)
    p_counter = Counter("x_jobs", "Jobs.", ["model", "outcome"], registry=theirs)
    p_gauge = Gauge("x_slots", "Slots.", ["model"], registry=theirs)
    p_histogram = Histogram("x_seconds", "Seconds.", ["model"], registry=theirs, buckets=BUCKETS)
    for model in ("a", "b"):
        counter.labels(model, "ok").inc()
        counter.labels(model, "ok").inc(2.5)
        p_counter.labels(model, "ok").inc()
        p_counter.labels(model, "ok").inc(2.5)
        gauge.labels(model).set(3)
        gauge.labels(model).set(7)
        p_gauge.labels(model).set(3)
        p_gauge.labels(model).set(7)
        for value in OBSERVED:
            histogram.labels(model).observe(value)
            p_histogram.labels(model).observe(value)
    assert text(ours) == text(theirs)


def test_labels_must_match_the_names() -> None:
    counter = TallyCounter("y", "Y.", ["a", "b"], CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("only one")
