"""How the answers of a replicated job are compared (:mod:`inferq.core.node_replicas`).

Each answer is embedded; two answers *agree* when the cosine similarity of their vectors
is at least the model's threshold. The answers that win are the largest group in which
every two agree (with up to 9 replicas every group is tried); among groups of one size,
the one whose members are the most similar to each other. The answer returned is the
member of that group closest to the others, and every answer outside it disagreed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

#: the most answers :func:`verdict` compares (it tries every group of them)
MAX_ANSWERS = 12


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the comparison decided, by the answers' positions."""

    #: the answer returned
    winner: int
    #: the largest group of answers that agree with each other (the winner's)
    group: tuple[int, ...]
    #: the answers outside it
    disagreed: tuple[int, ...]
    #: the group is more than half of ``replicas`` (the answers asked for)
    majority: bool


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


def similarities(vectors: Sequence[Sequence[float]]) -> list[list[float]]:
    """Every answer's similarity to every other (1 with itself)."""
    return [[1.0 if i == j else cosine(a, b) for j, b in enumerate(vectors)]
            for i, a in enumerate(vectors)]  # fmt: skip


def verdict(sims: Sequence[Sequence[float]], *, threshold: float, replicas: int) -> Verdict:
    """The largest group of mutually agreeing answers and its most central member."""
    n = len(sims)
    if not 1 <= n <= MAX_ANSWERS:
        raise ValueError(f"compare 1 to {MAX_ANSWERS} answers, not {n}")

    def inner(group: tuple[int, ...]) -> float:
        return math.fsum(sims[i][j] for i, j in itertools.combinations(group, 2))

    best: tuple[int, ...] = (0,)
    for size in range(n, 0, -1):
        groups = [
            g
            for g in itertools.combinations(range(n), size)
            if all(sims[i][j] >= threshold for i, j in itertools.combinations(g, 2))
        ]
        if groups:
            best = max(groups, key=inner)  # the first of equals: the earliest answers
            break
    winner = max(best, key=lambda i: math.fsum(sims[i][j] for j in best))
    return Verdict(
        winner=winner,
        group=best,
        disagreed=tuple(i for i in range(n) if i not in best),
        majority=2 * len(best) > replicas,
    )
