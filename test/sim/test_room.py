"""The simulated room: its layout, the demand aggregation and the fast-mode loop (shared
budgets vs fixed ones) on small rooms, with the real controllers, divide and ShrinkFirst."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.sim.room import aggregate, make_room, preset_mix, rack_day, room_days
from rackpower_nodes.sim.room.loop import MODES, proportional_split, run_room
from helpers.room_sim import flat_day


def test_room_is_oversubscribed_and_its_guaranteed_shares_fit():
    room = make_room(24, seed=100)
    tree = room.tree
    assert len(room.racks) == 24
    assert [r.seed for r in room.racks] == list(range(100, 124))
    assert {r.preset for r in room.racks} == {"office", "ai", "mixed"}
    for level in tree.levels.values():
        below = [tree.levels[c].rating_w if c in tree.levels else tree.racks[c].rating_w
                 for c in level.children]
        assert sum(below) > level.rating_w       # oversubscribed at every level
        assert tree.guaranteed_sums()[level.name] <= level.rating_w
    for rack in room.racks:                       # priorities from the presets' configs
        assert len({c.priority for c in rack.components}) >= 2
        assert tree.racks[rack.name].rating_w == pytest.approx(rack.policy.budget_w)


def test_preset_mix_keeps_the_proportions_and_depends_on_the_seed():
    a = preset_mix(20, 100)
    assert sorted(a) == sorted(["office"] * 8 + ["ai"] * 6 + ["mixed"] * 6)
    assert a != preset_mix(20, 101)


@pytest.mark.parametrize("kwargs, key", [
    ({"n_racks": 0}, "n_racks"), ({"room_ratio": 1.5}, "room_ratio"),
    ({"guaranteed_frac": 0.0}, "guaranteed_frac"), ({"presets": ["office"]}, "presets"),
    ({"mix": {"gpu": 1.0}}, "mix")])
def test_bad_room_arguments_name_the_argument(kwargs, key):
    args = {"n_racks": 2, "seed": 100, **kwargs}
    with pytest.raises(ConfigError, match=key):
        make_room(**args)


def test_guaranteed_shares_that_do_not_fit_are_refused():
    with pytest.raises(ConfigError, match="guaranteed"):
        make_room(4, seed=100, row_ratio=0.6, guaranteed_frac=0.7)


def test_aggregate_gives_step_means_and_peaks():
    power = np.arange(40, dtype=np.float32).reshape(20, 2)      # 2 s at 10 Hz, 2 components
    mean, peak = aggregate(power, 10.0, 1.0)
    assert mean.shape == peak.shape == (2, 2)
    assert mean[0].tolist() == pytest.approx([9.0, 10.0])
    assert peak[1].tolist() == [38.0, 39.0]
    with pytest.raises(ValueError, match="step_s"):
        aggregate(power, 10.0, 0.25)


def test_proportional_split_fits_every_level():
    room = make_room(7, seed=100, racks_per_row=3)
    split = proportional_split(room)
    tree = room.tree
    for level in tree.levels.values():
        assert sum(split[r] for r in tree.racks_under(level.name)) <= level.rating_w * (1 + 1e-12)
    assert all(split[r] <= tree.racks[r].rating_w for r in split)


@pytest.fixture(scope="module")
def hour_room():
    """Four simulated racks (office, ai, mixed, office; seeds 100-103), one hour, 1 s."""
    room = make_room(4, seed=100, racks_per_row=2, presets=["office", "ai", "mixed", "office"])
    return room, room_days(room, 1.0, 1.0)


def test_shared_hour_keeps_every_rating_and_the_priority_order(hour_room):
    room, days = hour_room
    res = run_room(room, days, "shared")
    row = res.row()
    assert res.steps == 3600
    assert res.trips == {"rack": 0, "row": 0, "room": 0}
    assert res.over_rating_steps == 0                       # allocations in force, every step
    assert np.all(res.level_max_alloc <= 1.0 + 1e-9)
    assert np.all(res.level_max_served <= 1.0 + 1e-9)
    assert res.coordinator_steps == 3600 // 5 - 1
    assert res.priority_violation_steps == 0, res.violation_examples
    assert row["demand_wh"] > 0 and math.isfinite(row["headroom_mean_w"])


@pytest.mark.parametrize("mode", MODES[1:])
def test_fixed_modes_keep_their_ratings_too(hour_room, mode):
    room, days = hour_room
    res = run_room(room, days, mode)
    assert res.trips == {"rack": 0, "row": 0, "room": 0}
    assert res.over_rating_steps == 0


def test_shared_moves_budget_from_an_idle_rack_to_a_busy_one():
    """One rack busy (its floors plus 80 % of the way to its rating: with the controller's
    margin it fits the rating), two idle at their floors, ten minutes: its guaranteed share
    (70 % of the rating) or proportional split (81 %) throttles it; the shared budget need
    not, once the coordinator has moved the idle racks' power to it."""
    room = make_room(3, seed=100, presets=["office"] * 3)
    busy = room.racks[0].name
    days = {r.name: flat_day(r, 0.8 if r.name == busy else 0.0, 600) for r in room.racks}
    results = {mode: run_room(room, days, mode) for mode in MODES}
    shared = results["shared"]
    assert shared.over_rating_steps == 0 and shared.priority_violation_steps == 0
    for mode in MODES[1:]:
        fixed = results[mode]
        assert fixed.throttled_wh.sum() > 10.0            # the fixed budget holds it back
        assert shared.throttled_wh.sum() < 0.1 * fixed.throttled_wh.sum(), mode
    # after the first coordinator steps the busy rack holds more than its guaranteed share
    assert shared.level_max_alloc[0] > room.tree.racks[busy].guaranteed_w / room.racks[0].rating_w


def test_a_window_of_a_cached_day_is_cut_from_it(tmp_path):
    rack = make_room(1, seed=100, presets=["office"]).racks[0]
    day = rack_day(rack, 0.1, 1.0, cache=tmp_path)
    assert day.steps == 360 and len(list(tmp_path.glob("*.npz"))) == 1
    window = rack_day(rack, 0.05, 1.0, from_h=0.05, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1            # not simulated again
    assert np.array_equal(window.mean_w, day.mean_w[180:])
    assert window.start_unix == day.start_unix + 180.0
