"""The allocation controller with redundant feeds: limits, contingencies and a feed loss."""
import numpy as np
import pytest

from rackpower_nodes.core.allocation import (
    AllocationController, Component, FeedPlan, PolicyConfig, feed_load_w, tolerated_multiple)
from rackpower_nodes.core.params import ConfigError

# Two 3 kW feeds (budgets 2.4 kW); three dual-corded servers and one on feed A only.
SPLIT = [[0.5, 0.5]] * 3 + [[1.0, 0.0]]


def plan(split=SPLIT, cap_time_s=1.0):
    return FeedPlan(("A", "B"), [3000.0, 3000.0], [2400.0, 2400.0], split,
                    tolerated_multiple(cap_time_s, 30.0, 10.0), cap_time_s)


def controller(feeds=None, mode="reactive", floor=100.0):
    comps = [Component(f"s{i}", floor, 1500.0, p) for i, p in enumerate([3, 2, 1, 1])]
    return AllocationController(comps, PolicyConfig(breaker_w=8000.0, derating=0.8), mode,
                                feeds=feeds)


def busy(c, t, lost=frozenset(), w=1400.0):
    return c.step(t, np.full(4, w), None, lost_feeds=lost)


def test_every_decision_keeps_the_feed_limits_and_carries_its_contingencies():
    p = plan(cap_time_s=30.0)        # slow caps: the survivor tolerates only 1.41x
    c = controller(p)
    for alloc in (c.static_allocation(), busy(c, 10.0).allocated_w):
        assert np.all(feed_load_w(p, alloc) <= p.budget_w + 1e-6)
        for g in p.names:
            assert np.all(feed_load_w(p, alloc, {g}) <= np.sqrt(2.0) * 3000.0 + 1e-6)
    # the static split (the safe state left behind) holds a loss with nobody left to cap
    for g in p.names:
        assert np.all(feed_load_w(p, c.static_allocation(), {g}) <= p.budget_w + 1e-6)
    d = busy(c, 10.1)
    assert set(d.contingency_w) == {"A", "B"}
    for g, alloc in d.contingency_w.items():
        assert np.all(feed_load_w(p, alloc, {g}) <= p.budget_w + 1e-6)
        assert np.all(alloc <= d.allocated_w + 1e-9)
    # without feeds the controller decides as before and carries none
    plain = busy(controller(), 10.0)
    assert plain.contingency_w == {}
    assert plain.allocated_w.sum() > d.allocated_w.sum()


def test_a_lost_feed_applies_the_contingency_at_once_and_recovers():
    c = controller(plan())
    normal = busy(c, 10.0)
    lost = busy(c, 10.1, {"A"})
    assert lost.mode == "safe" and lost.mode_reason == "feed A lost"
    np.testing.assert_array_equal(lost.allocated_w, normal.contingency_w["A"])
    assert lost.allocated_w[3] == 0.0              # on feed A only: dark
    assert lost.allocated_w[0] == normal.allocated_w[0]     # the top priority keeps its power
    assert feed_load_w(c.feeds.plan, lost.allocated_w, {"A"})[1] <= 2400.0 + 1e-6
    held = busy(c, 10.2, {"A"}, w=2000.0)          # held while lost, whatever is measured
    np.testing.assert_array_equal(held.allocated_w, lost.allocated_w)
    back = busy(c, 10.3)
    assert back.mode == "reactive" and back.mode_reason == ""
    assert back.allocated_w[3] > 0.0


def test_a_budget_that_shrinks_during_the_loss_is_kept():
    c = controller(plan())
    busy(c, 10.0)
    c.set_budget(1500.0)
    d = busy(c, 10.1, {"B"})
    assert d.allocated_w.sum() <= 1500.0 + 1e-6
    assert d.mode_reason == "feed B lost"


def test_both_feeds_lost_leaves_nothing_powered():
    c = controller(plan())
    busy(c, 10.0)
    d = busy(c, 10.1, {"A", "B"})
    assert d.mode_reason == "feeds A, B lost"
    assert np.all(d.allocated_w == 0.0)


def test_bad_plans_and_feeds_are_named():
    with pytest.raises(ConfigError, match="after losing feed A, the floors on feed B"):
        controller(plan(), floor=900.0)
    with pytest.raises(ConfigError, match="split has 3 rows: expected 4"):
        controller(plan(SPLIT[:3]))
    c = controller(plan())
    with pytest.raises(ValueError, match="lost feed 'C'"):
        busy(c, 10.0, {"C"})


def test_a_binding_feed_keeps_every_expected_draw_before_anyone_s_headroom():
    """Feed A binds: the expected draws (reactive: measured) fit it, the headroom on top
    does not. The low priorities keep their draw and only the headroom is cut, highest
    priority first, as without feeds (filling the feeds after the tiers would instead cut s2
    below its 1000 W draw to keep s0's and s1's headroom)."""
    p = plan()
    measured = np.array([1400.0, 1400.0, 1000.0, 400.0])      # feed A: 1900 + 400 = 2300 W
    d = controller(p).step(10.0, measured, None)
    assert np.all(d.allocated_w >= measured - 1e-6)
    assert np.all(feed_load_w(p, d.allocated_w) <= p.budget_w + 1e-6)
    assert feed_load_w(p, d.allocated_w)[0] == pytest.approx(2400.0)   # A is full
    assert d.allocated_w[:2] == pytest.approx([1500.0, 1500.0])  # headroom to the ceiling
    assert d.allocated_w[2:] == pytest.approx(measured[2:])    # the lowest: no headroom left
