"""Counters, gauges and histograms that cost a dict lookup and an addition to observe.

The worker observes about ten metrics for every job it runs. prometheus_client's own
metric objects check their labels, take a lock and go through a value object on each
call: together several percent of a no-op job's cost. These keep plain numbers per
label values (every observation happens on the event loop thread) and hand them to
prometheus_client as metric families when the registry is collected, so the text a
scrape returns is the library's own format, unchanged.

Each class offers the calls the code makes on prometheus_client's: ``labels(*values)``
returning a child with ``inc``, ``set`` or ``observe``.
"""

from __future__ import annotations

import bisect
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, Generic, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

C = TypeVar("C")


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _Distribution:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Labelled(Collector, Generic[C]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.children: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def labels(self, *values: str) -> C:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, not {values}")
            child = self.children[values] = self._child()
        return child

    @abstractmethod
    def _child(self) -> C:
        """A new child for one set of label values."""

    def describe(self) -> list[Metric]:
        return []


class _Scalar(_Labelled[_Value]):
    """One number per set of label values, exposed as a ``family``."""

    family: ClassVar[type[CounterMetricFamily] | type[GaugeMetricFamily]]

    def _child(self) -> _Value:
        return _Value()

    def collect(self) -> Iterator[Metric]:
        family = self.family(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            family.add_metric(list(values), child.value)
        yield family


class TallyCounter(_Scalar):
    """A counter: exposed as ``<name>_total``."""

    family = CounterMetricFamily


class TallyGauge(_Scalar):
    family = GaugeMetricFamily


class TallyHistogram(_Labelled[_Distribution]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        *,
        buckets: Sequence[float],
    ) -> None:
        self.bounds = tuple(sorted(float(b) for b in buckets))
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> _Distribution:
        return _Distribution(self.bounds)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            cumulative, running = [], 0
            for bound, n in zip((*self.bounds, float("inf")), child.counts, strict=True):
                running += n
                cumulative.append((_le(bound), float(running)))
            family.add_metric(list(values), cumulative, child.sum)
        yield family


def _le(bound: float) -> str:
    """A bucket's ``le`` label as prometheus_client writes it."""
    if bound == float("inf"):
        return "+Inf"
    return repr(bound) if bound != int(bound) else f"{bound:.1f}"
