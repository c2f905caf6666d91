"""Global-priority division of a power tree: hand-computed examples on a small room (room
10 kW > row_1 6 kW > racks a, b of 4 kW; rack c of 5 kW directly in the room), the checker on
bad divisions, bad input, and the invariants over random trees and demands."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.room import PROPERTY, demand, demands, over_ratings, small_tree, trees
from rackpower_nodes.core.room import Division, divide, priority_order_violations


def budgets(division: Division) -> dict[str, float]:
    return {r: pytest.approx(b, abs=1e-6) for r, b in division.budget_w.items()}


def test_classes_of_the_whole_room_go_first_and_share_fairly():
    tree = small_tree()
    d = {"a": demand("a", {2: (500, 3000), 1: (500, 2000)}),
         "b": demand("b", {1: (1000, 4000)}),
         "c": demand("c", {2: (1000, 5000)})}
    got = divide(tree, d)
    # floors 1000 + 1000 + 1000; class 2: a +2500 (to 3000), c +4000 (to 5000): room 8000;
    # class 1: the room's last 2000 W... no, its last 2000 - 1000 (b's floor counted) = the
    # room has 10000 - 8000 - 1000 (b) - 500 (a's class-1 floor) = 500 W: 250 W each
    assert budgets(got) == {"a": 3750, "b": 1250, "c": 5000}
    assert got.by_class == {"a": {2: 3000, 1: 750}, "b": {1: 1250}, "c": {2: 5000}}
    assert priority_order_violations(tree, d, got) == []


def test_a_higher_class_in_another_row_wins_over_a_lower_one():
    tree = small_tree()
    d = {"a": demand("a", {1: (0, 4000)}), "b": demand("b", {1: (0, 4000)}),
         "c": demand("c", {2: (0, 5000)})}
    got = divide(tree, d)
    assert budgets(got) == {"a": 2500, "b": 2500, "c": 5000}  # c first; the room's rest halved


@pytest.mark.parametrize("want_a, expect", [(1000, (1000, 4000)), (2500, (2500, 3500)),
                                            (4000, (3000, 3000))])
def test_max_min_fair_share_within_a_class(want_a, expect):
    tree = small_tree()
    d = {"a": demand("a", {1: (0, want_a)}), "b": demand("b", {1: (0, 4000)}),
         "c": demand("c", {1: (0, 0)})}
    got = divide(tree, d)
    assert (got.by_class["a"][1], got.by_class["b"][1]) == pytest.approx(expect)


def test_left_over_rating_is_spread_as_headroom_in_proportion_to_demand():
    tree = small_tree()
    d = {"a": demand("a", {1: (0, 1000)}), "b": demand("b", {1: (0, 1000)}),
         "c": demand("c", {1: (0, 2000)})}
    got = divide(tree, d)
    # 6000 W left in the room, c rises twice as fast as a and b: +3000 fills c's rating
    # exactly when +1500 each fills the room
    assert budgets(got) == {"a": 2500, "b": 2500, "c": 5000}
    assert got.by_class == {"a": {1: 1000}, "b": {1: 1000}, "c": {1: 2000}}
    assert got.headroom_w("a") == pytest.approx(1500) and got.headroom_w("c") == pytest.approx(
        3000)


def test_a_silent_rack_is_held_at_its_default_and_counted():
    tree = small_tree()
    d = {"a": demand("a", {3: (0, 5000)}), "b": demand("b", {1: (0, 4000)})}
    got = divide(tree, d)
    assert budgets(got) == {"a": 4000, "b": 2000, "c": 3000}  # c at its guaranteed share
    assert got.by_class["c"] == {}
    got = divide(tree, d, default_w={"c": 4500})
    assert budgets(got) == {"a": 4000, "b": 1500, "c": 4500}
    got = divide(tree, d, default_w={"c": 9000})                   # clipped to its rating
    assert budgets(got) == {"a": 4000, "b": 1000, "c": 5000}


def test_a_smaller_rating_reported_by_the_rack_wins():
    tree = small_tree()
    d = {"a": demand("a", {1: (0, 4000)}, rating_w=3000.0), "b": demand("b", {1: (0, 0)}),
         "c": demand("c", {1: (0, 0)})}
    assert divide(tree, d).budget_w["a"] == pytest.approx(3000)


def test_nan_or_low_demand_asks_for_the_floor_and_classes_listed_twice_add_up():
    tree = small_tree()
    d = {"a": demand("a", {1: (700, math.nan)}), "b": demand("b", {1: (300, 100)})}
    got = divide(tree, d)
    assert got.by_class["a"] == {1: 700} and got.by_class["b"] == {1: 300}
    twice = demand("a", {1: (0, 0)})
    twice = type(twice)("a", 0.0, 60.0, (2, 2), (100.0, 200.0), (500.0, 600.0), 4000.0, 0.0)
    assert divide(tree, {"a": twice}).by_class["a"] == {2: 1100}


def test_demands_of_racks_outside_the_tree_are_ignored():
    tree = small_tree()
    got = divide(tree, {"zz": demand("zz", {9: (100, 9e9)})})
    assert budgets(got) == {"a": 2000, "b": 2000, "c": 3000}


def test_floors_that_do_not_fit_raise_naming_the_level_and_numbers():
    tree = small_tree()
    d = {"a": demand("a", {2: (3500, 4000)}), "b": demand("b", {1: (3000, 3000)})}
    with pytest.raises(ValueError, match=r"level 'row_1': floors and held budgets of its racks "
                                         r"sum to 6500 W > its rating 6000 W"):
        divide(tree, d)
    with pytest.raises(ValueError, match=r"level 'room': .* sum to 10500 W > its rating 10000"):
        divide(tree, {"a": demand("a", {1: (3500, 0)})}, default_w={"b": 2000, "c": 5000})
    with pytest.raises(ValueError, match=r"rack 'c': floors 5001 W exceed its rating 5000 W"):
        divide(tree, {"c": demand("c", {1: (5001, 0)})})


@pytest.mark.parametrize("bad, message", [
    (dict(floor_w=(1.0, 2.0)), "rack 'a': priority, floor_w and demand_w have lengths 1, 2, 1"),
    (dict(floor_w=(-1.0,)), "rack 'a': floor_w = -1.0 for class 1: expected a finite number"),
    (dict(floor_w=(math.inf,)), "rack 'a': floor_w = inf for class 1"),
    (dict(demand_w=(math.inf,)), "rack 'a': demand_w = inf for class 1: expected a finite"),
])
def test_bad_demands_raise_naming_the_rack(bad, message):
    fields = dict(priority=(1,), floor_w=(0.0,), demand_w=(10.0,))
    fields.update(bad)
    d = demand("a", {1: (0, 10)})
    d = type(d)("a", 0.0, 60.0, fields["priority"], fields["floor_w"], fields["demand_w"],
                4000.0, 0.0)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        divide(small_tree(), {"a": d})
    with pytest.raises(ValueError, match=r"default_w\['c'\] = nan"):
        divide(small_tree(), {}, default_w={"c": math.nan})


def test_the_checker_names_a_lower_class_kept_above_its_floor():
    tree = small_tree()
    d = {"a": demand("a", {2: (0, 4000)}), "b": demand("b", {1: (0, 2000)}),
         "c": demand("c", {1: (1000, 5000)})}
    good = divide(tree, d)
    assert budgets(good) == {"a": 4000, "b": 2000, "c": 4000}
    assert priority_order_violations(tree, d, good) == []
    # the room is full; a is short by 1000 W while b keeps 2000 W of class 1 above its floor
    bad = Division({"a": 3000.0, "b": 2000.0, "c": 5000.0},
                   {"a": {2: 3000.0}, "b": {1: 2000.0}, "c": {1: 5000.0}})
    assert priority_order_violations(tree, d, bad) == [
        "rack 'a' class 2: granted 3000 W < demand 4000 W while rack 'b' keeps class 1 above "
        "its floor"]
    # spread headroom counts below every class
    spread = Division({"a": 3000.0, "b": 2000.0, "c": 5000.0},
                      {"a": {2: 3000.0}, "b": {1: 0.0}, "c": {1: 1000.0}})
    assert "rack 'b' keeps spread headroom" in priority_order_violations(tree, d, spread)[0]
    # not full: a shortfall there is not a priority question
    loose = Division({"a": 3000.0, "b": 0.0, "c": 5000.0},
                     {"a": {2: 3000.0}, "b": {1: 0.0}, "c": {1: 5000.0}})
    assert priority_order_violations(tree, d, loose) == []
    # a division that leaves racks' classes out counts them as granted nothing
    partial = Division({"a": 4000.0, "b": 2000.0, "c": 4000.0}, {"a": {2: 4000.0}})
    assert priority_order_violations(tree, d, partial) == [
        "rack 'b' class 1: granted 0 W < demand 2000 W while rack 'b' keeps spread headroom",
        "rack 'c' class 1: granted 0 W < demand 5000 W while rack 'b' keeps spread headroom"]


def test_the_checker_accepts_a_shortfall_nobody_could_relieve():
    tree = small_tree()
    # a is short because row_1 is full of a higher class in b: c's class 1 in the room could
    # not give a anything (row_1 has no room), and b is above a
    d = {"a": demand("a", {1: (0, 4000)}), "b": demand("b", {3: (0, 4000)}),
         "c": demand("c", {1: (0, 5000)})}
    got = divide(tree, d)
    assert budgets(got) == {"a": 2000, "b": 4000, "c": 4000}
    assert priority_order_violations(tree, d, got) == []


@PROPERTY
@given(st.data())
def test_random_rooms_respect_every_rating_floor_and_the_priority_order(data):
    tree = data.draw(trees())
    d = data.draw(demands(tree))
    got = divide(tree, d)
    assert over_ratings(tree, got.budget_w) == []
    for rack in tree.rack_names:
        assert got.budget_w[rack] >= 0
        if rack in d:
            assert got.budget_w[rack] >= math.fsum(d[rack].floor_w)
            assert math.fsum(got.by_class[rack].values()) <= got.budget_w[rack] + 1e-6
        else:
            assert got.budget_w[rack] == tree.racks[rack].guaranteed_w
    assert priority_order_violations(tree, d, got) == []
