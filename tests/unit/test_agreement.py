"""How a replicated job's answers are compared: the largest group of answers that agree
with each other wins (inferq.core.agreement)."""

from __future__ import annotations

import math

import pytest

from inferq.core.agreement import cosine, similarities, verdict


def sym(n: int, pairs: dict[tuple[int, int], float], rest: float = 0.1) -> list[list[float]]:
    """An n x n similarity matrix: 1 on the diagonal, ``pairs`` both ways, else ``rest``."""
    sims = [[1.0 if i == j else rest for j in range(n)] for i in range(n)]
    for (i, j), value in pairs.items():
        sims[i][j] = sims[j][i] = value
    return sims


def test_two_alike_answers_outvote_the_third() -> None:
    found = verdict(sym(3, {(0, 2): 0.97}), threshold=0.9, replicas=3)
    assert found.winner in (0, 2) and found.group == (0, 2)
    assert found.disagreed == (1,) and found.majority


def test_the_group_must_agree_mutually_not_just_with_one_central_answer() -> None:
    # answer 0 is close to everyone (a vague answer); 2, 3, 4 agree with each other and
    # with 0; 1 agrees with 0 only. Summing similarities would make 0 the winner and
    # call nobody a dissenter.
    sims = sym(
        5,
        {(0, 1): 0.95, (0, 2): 0.91, (0, 3): 0.91, (0, 4): 0.91}
        | {(2, 3): 0.97, (2, 4): 0.97, (3, 4): 0.97}
        | {(1, 2): 0.5, (1, 3): 0.5, (1, 4): 0.5},
    )
    found = verdict(sims, threshold=0.9, replicas=5)
    assert found.group == (0, 2, 3, 4) and found.disagreed == (1,)
    assert found.winner == 2  # the member closest to the rest of its group
    assert found.majority


def test_among_groups_of_one_size_the_closer_group_wins() -> None:
    found = verdict(sym(4, {(0, 1): 0.91, (2, 3): 0.99}), threshold=0.9, replicas=4)
    assert found.group == (2, 3) and found.disagreed == (0, 1)
    assert not found.majority  # two of four is no majority


def test_nothing_agrees_the_first_answer_is_returned_without_a_majority() -> None:
    found = verdict(sym(3, {}), threshold=0.9, replicas=3)
    assert (found.winner, found.group, found.disagreed, found.majority) == (0, (0,), (1, 2), False)


def test_a_majority_counts_the_replicas_asked_for_not_the_answers_that_came() -> None:
    # one replica failed: two agreeing answers of three replicas are a majority
    assert verdict(sym(2, {(0, 1): 0.95}), threshold=0.9, replicas=3).majority
    assert not verdict(sym(2, {(0, 1): 0.95}), threshold=0.9, replicas=4).majority
    assert verdict([[1.0]], threshold=0.9, replicas=1).majority


def test_the_threshold_is_inclusive() -> None:
    assert verdict(sym(2, {(0, 1): 0.9}), threshold=0.9, replicas=2).disagreed == ()
    assert verdict(sym(2, {(0, 1): 0.8999}), threshold=0.9, replicas=2).disagreed == (1,)


def test_no_answers_or_too_many_are_refused() -> None:
    with pytest.raises(ValueError):
        verdict([], threshold=0.9, replicas=3)
    with pytest.raises(ValueError):
        verdict(sym(13, {}), threshold=0.9, replicas=13)


def test_similarities_are_cosines() -> None:
    assert cosine([1, 0], [0, 1]) == 0.0
    assert math.isclose(cosine([1, 1], [2, 2]), 1.0)
    assert cosine([0, 0], [1, 0]) == 0.0  # a zero vector is like nothing
    sims = similarities([[1.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    assert [sims[i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert math.isclose(sims[0][1], math.sqrt(0.5)) and sims[0][2] == 0.0
    assert sims[1][2] == sims[2][1]
