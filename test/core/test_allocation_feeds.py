"""Redundant A/B feeds (core/allocation/feeds.py): per-feed budgets that survive a feed loss."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rackpower_nodes.core.allocation import (
    FeedPlan, check_feed_plan, contingency_w, feed_fill, feed_limits, feed_load_w,
    moved_split, tolerated_multiple, water_fill)
from rackpower_nodes.core.params import ConfigError

TOL = 1e-6


def ab_plan(split, breaker=(5000.0, 5000.0), derating=0.8, cap_time_s=2.0):
    return FeedPlan(("A", "B"), breaker, [b * derating for b in breaker], split,
                    tolerated_multiple(cap_time_s), cap_time_s)


# -- the trip curve -----------------------------------------------------------------------
def test_tolerated_multiple_inverts_the_simulated_trip_curve():
    from rackpower_nodes.sim.pdu.model import PduModel
    pdu = PduModel([1000.0], 1000.0, thermal_constant_s=30.0, magnetic_multiple=10.0)
    for cap_time in (0.5, 1.0, 2.0, 5.0):
        r = tolerated_multiple(cap_time, 30.0, 10.0)
        assert pdu.time_to_trip_s(r) == pytest.approx(cap_time)
    assert tolerated_multiple(2.0) == pytest.approx(4.0)
    assert tolerated_multiple(0.1, 30.0, 10.0) == 10.0        # the magnetic element bounds it


def test_tolerated_multiple_rejects_bad_values():
    with pytest.raises(ValueError, match="cap_time_s"):
        tolerated_multiple(0.0)
    with pytest.raises(ValueError, match="magnetic_multiple"):
        tolerated_multiple(1.0, 30.0, 1.0)


# -- the plan -----------------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    (dict(names=("A", "A")), "names"),
    (dict(breaker_w=[5000.0]), "breaker_w"),
    (dict(budget_w=[6000.0, 4000.0]), "budget_w"),
    (dict(split=[[0.5, 0.4]]), r"split\[0\]"),
    (dict(split=[[1.5, -0.5]]), "split"),
    (dict(split=[0.5, 0.5]), "split"),
    (dict(overload_multiple=0.5), "overload_multiple"),
    (dict(cap_time_s=math.nan), "cap_time_s"),
])
def test_plan_errors_name_the_field(change, field):
    args = dict(names=("A", "B"), breaker_w=[5000.0, 5000.0], budget_w=[4000.0, 4000.0],
                split=[[0.5, 0.5]], overload_multiple=4.0, cap_time_s=2.0)
    args.update(change)
    with pytest.raises(ConfigError, match=field):
        FeedPlan(**args)


def test_feed_load_moves_a_lost_share_to_the_survivor():
    plan = ab_plan([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]])
    alloc = np.array([400.0, 300.0, 200.0])
    assert feed_load_w(plan, alloc) == pytest.approx([200 + 300 + 50, 200 + 150])
    # losing B: the dual-corded move all to A; the A-only one is unchanged
    assert feed_load_w(plan, alloc, {"B"}) == pytest.approx([900.0, 0.0])
    # losing A: the A-only component is dark
    assert feed_load_w(plan, alloc, {"A"}) == pytest.approx([0.0, 600.0])
    with pytest.raises(ValueError, match="lost feed 'C'"):
        feed_load_w(plan, alloc, {"C"})


def test_check_feed_plan_names_the_feed_and_the_numbers():
    plan = ab_plan([[0.5, 0.5], [0.5, 0.5]])       # budgets 4000 W each
    assert check_feed_plan(plan, [1500.0, 1500.0]) == []
    errors = check_feed_plan(plan, [2500.0, 2500.0])
    assert "after losing feed A, the floors on feed B sum to 5000 W, above its budget " \
           "4000 W" in errors
    assert len(errors) == 2


# -- the fill -----------------------------------------------------------------------------
def test_dual_corded_rack_is_limited_by_the_loss_not_by_the_sum():
    """Two 5 kW feeds, budgets 4 kW each: a fully dual-corded rack may draw 8 kW in normal
    operation only if a 4x overload is tolerated for the time to cap; with a slow cap
    (30 s: 1.41x) the survivor's overload bounds it at 1.41 x 5 kW."""
    split = [[0.5, 0.5]] * 4
    floor, ceiling, prio = np.full(4, 100.0), np.full(4, 3000.0), np.array([4, 3, 2, 1])
    fast = feed_fill(np.full(4, 2500.0), floor, ceiling, prio, math.inf, ab_plan(split))
    assert fast.sum() == pytest.approx(8000.0)
    slow_plan = ab_plan(split, cap_time_s=30.0)
    slow = feed_fill(np.full(4, 2500.0), floor, ceiling, prio, math.inf, slow_plan)
    assert slow.sum() == pytest.approx(math.sqrt(2.0) * 5000.0)
    assert slow[0] == 2500.0 and slow[1] == 2500.0 and slow[3] == 100.0   # lowest cut first


def test_without_feed_limits_it_is_water_fill():
    plan = ab_plan([[0.5, 0.5]] * 3, breaker=(1e6, 1e6))
    demand, floor = np.array([900.0, 700.0, 500.0]), np.array([100.0, 100.0, 100.0])
    ceiling, prio = np.full(3, 1000.0), np.array([1, 2, 1])
    got = feed_fill(demand, floor, ceiling, prio, 1200.0, plan)
    assert got == pytest.approx(water_fill(demand, floor, ceiling, prio, 1200.0))


def test_contingency_fits_the_survivor_and_drops_the_dark():
    plan = ab_plan([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    floor, ceiling, prio = np.full(4, 100.0), np.full(4, 3000.0), np.array([3, 1, 2, 2])
    normal = feed_fill(np.full(4, 2500.0), floor, ceiling, prio, math.inf, plan)
    plans = contingency_w(normal, floor, ceiling, prio, plan)
    assert set(plans) == {"A", "B"}
    assert plans["A"][2] == 0.0 and plans["B"][3] == 0.0
    assert feed_load_w(plan, plans["A"], {"A"})[1] <= 4000.0 + TOL
    assert plans["A"][0] == normal[0]          # the highest priority keeps its power
    assert np.all(plans["A"] <= normal + TOL)


# -- properties ---------------------------------------------------------------------------
@st.composite
def cases(draw):
    n = draw(st.integers(1, 8))
    f = draw(st.integers(1, 3))
    breaker = np.array(draw(st.lists(st.floats(500.0, 20000.0), min_size=f, max_size=f)))
    derating = draw(st.floats(0.5, 1.0))
    rows = []
    for _ in range(n):
        kind = draw(st.sampled_from(("single", "dual", "random")))
        row = np.zeros(f)
        if kind == "single" or f == 1:
            row[draw(st.integers(0, f - 1))] = 1.0
        elif kind == "dual":
            a, b = draw(st.lists(st.integers(0, f - 1), min_size=2, max_size=2, unique=True))
            frac = draw(st.floats(0.3, 0.7))
            row[a], row[b] = frac, 1.0 - frac
        else:
            row = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=f, max_size=f)))
            row /= row.sum()
        rows.append(row)
    cap_time = draw(st.floats(0.3, 60.0))
    plan = FeedPlan(tuple("ABC"[:f]), breaker, breaker * derating, np.array(rows),
                    tolerated_multiple(cap_time), cap_time)
    ceiling = np.array(draw(st.lists(st.floats(10.0, 5000.0), min_size=n, max_size=n)))
    floor = ceiling * np.array(draw(st.lists(st.floats(0.0, 0.3), min_size=n, max_size=n)))
    demand = np.array(draw(st.lists(st.floats(0.0, 6000.0), min_size=n, max_size=n)))
    prio = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    budget = draw(st.sampled_from((math.inf, float(breaker.sum()), float(breaker.min()))))
    return plan, demand, floor, ceiling, prio, budget


def _order_kept(alloc, target, floor, prio, plan, budget, lost):
    """A component cut below its target has a full limit it loads that no lower-priority
    component above its floor loads (else that one should have yielded first)."""
    limits = feed_limits(plan, budget, lost)
    low = np.minimum(floor, target)
    for i in np.flatnonzero(alloc < target - 1e-6 * np.maximum(target, 1.0)):
        full = [w for _, w, cap in limits
                if w[i] > 0 and w @ alloc >= cap - 1e-6 * max(abs(cap), 1.0)]
        assert full, f"component {i} cut with every limit it loads free"
        richer = (prio < prio[i]) & (alloc > low + 1e-6 * np.maximum(low, 1.0))
        assert any(not np.any((w > 0) & richer) for w in full), \
            f"component {i} cut while a lower priority above its floor shares its limits"


@settings(max_examples=300, deadline=None)
@given(cases())
def test_feeds_hold_in_normal_operation_and_after_any_loss(case):
    plan, demand, floor, ceiling, prio, budget = case
    feasible = not check_feed_plan(plan, floor) and floor.sum() <= budget
    alloc = feed_fill(demand, floor, ceiling, prio, budget, plan)
    target = np.clip(demand, 0.0, ceiling)
    assert np.all(alloc >= 0) and np.all(alloc <= target + TOL)
    assert alloc.sum() <= budget + TOL
    assert np.all(feed_load_w(plan, alloc) <= plan.budget_w * (1 + 1e-12))
    if feasible:
        assert np.all(alloc >= np.minimum(floor, target) - TOL)     # floors kept
        _order_kept(alloc, target, floor, prio, plan, budget, frozenset())
    plans = contingency_w(alloc, floor, ceiling, prio, plan, budget)
    for g in plan.names:
        before = feed_load_w(plan, alloc, {g})                   # the moment g is lost
        assert np.all(before <= plan.overload_multiple * plan.breaker_w * (1 + 1e-12))
        after = feed_load_w(plan, plans[g], {g})                 # once the caps act
        assert np.all(after <= plan.budget_w * (1 + 1e-12))
        assert np.all(plans[g] <= alloc + TOL)                   # the caps only lower
        if feasible:
            dark = moved_split(plan, {g}).sum(axis=1) == 0
            kept = np.where(dark, 0.0, np.minimum(floor, alloc))
            assert np.all(plans[g] >= kept - TOL)
            _order_kept(plans[g], np.where(dark, 0.0, alloc), floor, prio, plan, budget, {g})
