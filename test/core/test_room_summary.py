"""A rack's demand summary grouped by priority class, and its committed power."""
from __future__ import annotations

import math

import pytest

from rackpower_nodes.core.room import committed_w, rack_demand

NAN = math.nan


def test_components_group_by_priority_class_descending():
    d = rack_demand("rack_01", 1.7e9, 60.0, priority=[1, 3, 1, 2],
                    floor_w=[100.0, 200.0, 50.0, 80.0], demand_w=[400.0, 150.0, NAN, 300.0],
                    rating_w=3680.0, guaranteed_w=2400.0, total_w={"p50": 900.0, "p99": 1200},
                    acked_seq=7, acked_budget_w=2500.0, budget_source="coordinator")
    assert d.priority == (3, 2, 1)
    assert d.floor_w == (200.0, 80.0, 150.0)
    assert d.demand_w == (200.0, 300.0, 450.0)   # below the floor or NaN asks for the floor
    assert d.total_floor_w == 430.0 and d.total_demand_w == 950.0
    assert d.total_w == {"p50": 900.0, "p99": 1200.0}
    assert (d.acked_seq, d.acked_budget_w, d.budget_source) == (7, 2500.0, "coordinator")
    assert (d.rack, d.stamp_unix, d.window_s, d.rating_w, d.guaranteed_w) == (
        "rack_01", 1.7e9, 60.0, 3680.0, 2400.0)


def test_defaults_say_no_grant_was_applied_yet():
    d = rack_demand("r", 0.0, 10.0, [0], [10.0], [20.0], 100.0, 50.0)
    assert d.acked_seq == 0 and math.isnan(d.acked_budget_w) and d.budget_source == "config"
    assert d.total_w == {}


@pytest.mark.parametrize("kw, message", [
    (dict(floor_w=[1.0]), r"floor_w has 1 values: expected 2, one per component"),
    (dict(demand_w=[[1.0, 2.0]]), r"demand_w has shape \(1, 2\)"),
    (dict(priority=[1, 1.5]), r"priority\[1\] = 1.5: expected an integer"),
    (dict(floor_w=[1.0, -2.0]), r"floor_w\[1\] = -2.0: expected a finite number >= 0"),
    (dict(floor_w=[NAN, 1.0]), r"floor_w\[0\] = nan"),
    (dict(demand_w=[math.inf, 1.0]), r"demand_w\[0\] = inf: expected a finite number or NaN"),
    (dict(rating_w=0.0), r"rating_w = 0.0: expected a finite number > 0"),
    (dict(guaranteed_w=200.0), r"guaranteed_w = 200.0: expected a number in 0 .. rating_w"),
    (dict(acked_seq=-1), r"acked_seq = -1: expected an integer >= 0"),
    (dict(budget_source="mine"), r"budget_source = 'mine': expected one of coordinator, "
                                 r"fallback, config"),
])
def test_bad_input_names_the_argument(kw, message):
    args = dict(rack="r", stamp_unix=0.0, window_s=10.0, priority=[1, 2],
                floor_w=[1.0, 2.0], demand_w=[3.0, 4.0], rating_w=100.0, guaranteed_w=50.0)
    args.update(kw)
    with pytest.raises(ValueError, match=message):
        rack_demand(**args)


def test_committed_counts_unenforced_components_at_their_ceiling():
    assert committed_w([100.0, NAN, 250.5], [400.0, 300.0, 500.0]) == 650.5
    assert committed_w([], []) == 0.0
    with pytest.raises(ValueError, match=r"ceiling_w has 1 values: expected 2"):
        committed_w([1.0, 2.0], [3.0])
    with pytest.raises(ValueError, match=r"held_w\[1\] = nan with ceiling_w\[1\] = nan"):
        committed_w([1.0, NAN], [3.0, NAN])
