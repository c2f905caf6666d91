"""One power coordinator's period without ROS (core/coordinator.py): division, shrink-first
release, silent racks and a failed division."""
from __future__ import annotations

import math

import pytest
from helpers.room_live import tree_doc

from rackpower_nodes.core.coordinator import RoomCoordinator
from rackpower_nodes.core.room import load_power_tree
from rackpower_nodes.core.room.summary import rack_demand


def _coordinator() -> RoomCoordinator:
    tree = load_power_tree(tree_doc())             # room 3000 W; r1..r3 1840 W, 700 W kept
    return RoomCoordinator(tree, tree.rack_names, "room", lease_s=2.0, demand_stale_s=1.0)


def _demand(rack: str, each_w: float, acked=(0, math.nan), source="fallback", t=0.0):
    return rack_demand(rack, t, 1.0, [2, 2, 1, 1], [50.0] * 4, [each_w] * 4, 1840.0, 700.0,
                       acked_seq=acked[0], acked_budget_w=acked[1], budget_source=source)


def test_a_rack_grows_only_after_the_one_that_shrinks_has_acknowledged():
    c = _coordinator()
    for r, w in (("r1", 550.0), ("r2", 70.0), ("r3", 220.0)):
        c.on_demand(_demand(r, w, (0, 700.0)), 0.0)
    p = c.period(0.0)
    assert p.targets == pytest.approx({"r1": 1840.0, "r2": 280.0, "r3": 880.0})
    assert p.grants["r2"].budget_w == pytest.approx(280.0)      # the shrink: at once
    # r2 still counts at the 700 W it may hold until it acknowledges: r1 and r3 share 2300 W
    assert p.grants["r1"].budget_w + p.grants["r3"].budget_w == pytest.approx(2300.0)
    assert p.grants["r1"].budget_w < 1840.0
    # r2 acknowledges its smaller budget; r1 and r3 theirs: the targets are granted
    for r, w in (("r1", 550.0), ("r2", 70.0), ("r3", 220.0)):
        g = p.grants[r]
        c.on_demand(_demand(r, w, (g.seq, g.budget_w), "coordinator", t=0.5), 0.5)
    p = c.period(0.5)
    for r, w in (("r1", 550.0), ("r2", 70.0), ("r3", 220.0)):
        g = p.grants[r]
        c.on_demand(_demand(r, w, (g.seq, g.budget_w), "coordinator", t=1.0), 0.9)
    p = c.period(1.0)
    assert {r: g.budget_w for r, g in p.grants.items()} == pytest.approx(
        {"r1": 1840.0, "r2": 280.0, "r3": 880.0})
    assert p.error == "" and not p.stale


def test_a_silent_rack_is_left_its_guaranteed_share():
    c = _coordinator()
    c.on_demand(_demand("r1", 550.0, (0, 700.0)), 0.0)
    c.on_demand(_demand("r2", 70.0, (0, 700.0)), 0.0)
    p = c.period(5.0)                              # nobody heard for 5 s: all silent
    assert p.stale == {"r1", "r2", "r3"}
    assert p.targets == pytest.approx({"r1": 700.0, "r2": 700.0, "r3": 700.0})
    c.on_demand(_demand("r1", 550.0, (0, 700.0)), 5.0)
    p = c.period(5.0)
    assert p.stale == {"r2", "r3"} and p.targets["r1"] == pytest.approx(1600.0)


def test_a_failed_division_keeps_the_old_targets_and_says_why():
    c = _coordinator()
    for r in ("r1", "r2", "r3"):
        c.on_demand(_demand(r, 100.0, (0, 700.0)), 0.0)
    before = c.period(0.0).targets
    huge = rack_demand("r1", 0.0, 1.0, [1], [1700.0], [1700.0], 1840.0, 700.0,
                       acked_seq=0, acked_budget_w=700.0, budget_source="fallback")
    c.on_demand(huge, 0.1)
    c.on_demand(rack_demand("r2", 0.0, 1.0, [1], [1700.0], [1700.0], 1840.0, 700.0,
                            budget_source="fallback"), 0.1)
    p = c.period(0.1)
    assert p.error.startswith("division failed, previous budgets kept")
    assert p.targets == before


def test_a_malformed_or_foreign_demand_is_ignored_and_said_why():
    from rackpower_nodes.core.room.types import RackDemand

    c = _coordinator()
    bad = RackDemand("r1", 0.0, 1.0, (2, 1), (50.0,), (60.0, 70.0), 1840.0, 700.0)
    assert "priority, floor_w and demand_w have 2, 1 and 2 values" in c.on_demand(bad, 0.0)
    bad = RackDemand("r1", 0.0, 1.0, (1,), (math.nan,), (60.0,), 1840.0, 700.0)
    assert "floor_w = [nan]" in c.on_demand(bad, 0.0)
    assert "not a rack below room" in c.on_demand(_demand("r9", 70.0), 0.0)
    assert c.demands == {}
    assert c.on_demand(_demand("r1", 70.0), 0.0) == "" and "r1" in c.demands


def test_a_rack_configured_with_another_guaranteed_share_than_the_tree_is_named():
    c = _coordinator()
    d = rack_demand("r1", 0.0, 1.0, [1], [50.0], [60.0], 1840.0, 900.0,
                    budget_source="fallback")
    why = c.on_demand(d, 0.0)
    assert why.startswith("rack r1 is configured with budget.guaranteed_w = 900 W, the power "
                          "tree gives it 700 W") and "can overload a level" in why
    assert "r1" in c.demands                      # still heard: the tree's share is counted
    assert c.on_demand(_demand("r1", 60.0), 0.1) == "" and c.mismatch("r1") == ""
