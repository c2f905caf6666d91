"""The rack's lease on its coordinator's budget: the grant in full, min(grant, guaranteed)
from half a lease, the guaranteed share from a whole lease, clamping, late and restarted
grants."""
from __future__ import annotations

import math

import pytest

from rackpower_nodes.core.room import BUDGET_SOURCES, BudgetLease, RackGrant


def grant(seq, budget_w, lease_s=10.0):
    return RackGrant("rack_01", seq, budget_w, budget_w, lease_s, "room")


def test_before_any_grant_the_rack_is_on_its_guaranteed_share():
    lease = BudgetLease(3680.0, 2400.0)
    assert lease.budget_w(0.0) == 2400.0 and lease.source(0.0) == "fallback"
    assert lease.seq == 0 and math.isnan(lease.expires_s())


@pytest.mark.parametrize("budget, at_half", [(3000.0, 2400.0), (1000.0, 1000.0)])
def test_a_silent_coordinator_shrinks_first_then_falls_back(budget, at_half):
    lease = BudgetLease(3680.0, 2400.0)
    assert lease.on_grant(grant(1, budget), 100.0)
    assert lease.budget_w(104.9) == budget and lease.source(104.9) == "coordinator"
    assert lease.budget_w(105.0) == at_half and lease.source(105.0) == "fallback"
    assert lease.budget_w(109.9) == at_half
    assert lease.budget_w(110.0) == 2400.0 and lease.source(110.0) == "fallback"
    assert lease.expires_s() == 110.0
    assert {lease.source(t) for t in (0.0, 200.0)} <= set(BUDGET_SOURCES)


def test_a_reissued_grant_renews_the_lease_and_a_late_one_is_ignored():
    lease = BudgetLease(3680.0, 2400.0)
    lease.on_grant(grant(3, 3000.0), 0.0)
    assert lease.on_grant(grant(3, 3000.0), 4.0)            # same seq: renewed
    assert lease.on_grant(grant(3, 3000.0), 8.0)
    assert lease.budget_w(12.0) == 3000.0
    assert not lease.on_grant(grant(2, 3500.0), 12.0)       # late
    assert lease.budget_w(12.0) == 3000.0 and lease.seq == 3
    assert lease.on_grant(grant(4, 500.0), 12.5) and lease.budget_w(12.5) == 500.0
    # once it has started to lapse, the same seq no longer renews it: only a new one
    assert lease.budget_w(17.5) == 500.0 and lease.source(17.5) == "fallback"
    assert not lease.on_grant(grant(4, 500.0), 17.5) and lease.source(17.5) == "fallback"
    assert lease.budget_w(30.0) == 2400.0
    assert not lease.on_grant(grant(1, 2000.0), 30.0) and lease.budget_w(30.0) == 2400.0
    assert lease.on_grant(grant(5, 2000.0), 30.0) and lease.budget_w(30.0) == 2000.0


def test_a_grant_above_the_rating_is_clamped_and_counted():
    lease = BudgetLease(3680.0, 2400.0)
    lease.on_grant(grant(1, 5000.0), 0.0)
    assert lease.budget_w(1.0) == 3680.0 and lease.clamped == 1
    lease.on_grant(grant(2, 3000.0), 1.0)
    assert lease.budget_w(1.0) == 3000.0 and lease.clamped == 1


@pytest.mark.parametrize("args, message", [
    ((0.0, 0.0), r"rating_w = 0.0: expected a finite number > 0 \(W\)"),
    ((3680.0, 4000.0), r"guaranteed_w = 4000.0: expected a number in 0 .. rating_w = 3680.0"),
    ((3680.0, -1.0), r"guaranteed_w = -1.0"),
])
def test_bad_ratings_raise(args, message):
    with pytest.raises(ValueError, match=message):
        BudgetLease(*args)


@pytest.mark.parametrize("bad, message", [
    (grant(1, math.nan), r"grant 1 for 'rack_01': budget_w = nan: expected a number >= 0"),
    (grant(1, -5.0), r"budget_w = -5.0"),
    (grant(1, 100.0, lease_s=0.0), r"lease_s = 0.0: expected a finite number > 0 \(s\)"),
])
def test_bad_grants_raise_and_change_nothing(bad, message):
    lease = BudgetLease(3680.0, 2400.0)
    with pytest.raises(ValueError, match=message):
        lease.on_grant(bad, 0.0)
    assert lease.seq == 0 and lease.budget_w(0.0) == 2400.0
