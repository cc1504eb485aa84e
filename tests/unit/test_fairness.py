"""The fair-share policy (core/fairness.py) on its own: plan, charges, settlements."""

from __future__ import annotations

from collections import Counter

import pytest

from inferq.core import fairness
from inferq.core.errors import InvalidRequest
from inferq.core.fairness import Settlement, TenantShare, Waiting


def waiting(tenant: str, *, klass: int = 1, vtime: float = 0.0, weight: float = 1.0) -> Waiting:
    share = TenantShare(tenant=tenant, weight=weight, vtime=vtime, avg_cost=100.0)
    return Waiting(share=share, service_class=klass)


def counts(picks: list[fairness.Pick]) -> dict[str, int]:
    return {p.tenant: p.count for p in picks}


def test_equal_tenants_split_a_claim_evenly() -> None:
    assert counts(fairness.plan([waiting("a"), waiting("b")], 4)) == {"a": 2, "b": 2}


def test_the_tenant_behind_goes_first() -> None:
    picks = fairness.plan([waiting("a", vtime=500), waiting("b", vtime=0)], 5)
    # b catches up 500 tokens (5 jobs of 100) before a gets one
    assert counts(picks) == {"b": 5}


def test_weights_split_by_weight() -> None:
    picks = fairness.plan([waiting("a", weight=3), waiting("b", weight=1)], 8)
    assert counts(picks) == {"a": 6, "b": 2}


def test_a_more_urgent_class_goes_first_whatever_the_virtual_time() -> None:
    picks = fairness.plan([waiting("a", klass=2), waiting("b", klass=0, vtime=1_000)], 3)
    assert counts(picks) == {"b": 3}
    assert picks[0].service_class == 0


def test_an_idle_tenant_starts_at_most_the_credit_behind() -> None:
    busy = waiting("busy", vtime=1_000_000)
    back = waiting("back", vtime=0)
    floor = fairness.floor_of([busy, back])
    assert floor == 1_000_000 - fairness.CREDIT
    # it counts as floor, not 0: after CREDIT / cost jobs of its own, they alternate
    ahead = int(fairness.CREDIT / 100)
    picks = fairness.plan([busy, back], ahead + 10)
    assert counts(picks) == {"back": ahead + 5, "busy": 5}


def test_charges_follow_what_was_claimed_in_tenant_order() -> None:
    group = [waiting("b", weight=2), waiting("a")]
    charged = fairness.charges(group, Counter({"b": 4, "a": 1, "gone": 3}))
    assert [(c.tenant, c.amount) for c in charged] == [("a", 100.0), ("b", 200.0)]
    assert {c.floor for c in charged} == {-fairness.CREDIT}


def test_a_settlement_corrects_the_estimate_and_moves_the_average() -> None:
    share = TenantShare(tenant="a", weight=2, vtime=1_000, avg_cost=100)
    after = fairness.settled(share, Settlement(tokens=600, jobs=2, refunds=1))
    # charged 3 x 100 at the claims; 600 processed: +300 tokens, at weight 2
    assert after.vtime == pytest.approx(1_150)
    assert after.avg_cost == pytest.approx(100 + fairness.AVERAGE_WEIGHT * (300 - 100))
    new = fairness.settled(TenantShare(tenant="n"), Settlement(refunds=1))
    assert new.vtime == -fairness.DEFAULT_COST and new.avg_cost == 0


def test_settlements_add_up() -> None:
    one = Settlement().add(tokens=50, succeeded=True).add(tokens=0, succeeded=False)
    assert one + Settlement(10, 1, 0) == Settlement(60, 2, 1)


@pytest.mark.parametrize("weight", [0, -1, float("inf"), float("nan"), 1e7])
def test_a_weight_is_positive_and_finite(weight: float) -> None:
    with pytest.raises(InvalidRequest):
        fairness.check_weight(weight)
