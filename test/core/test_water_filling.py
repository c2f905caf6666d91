"""Tests of the allocation core's pure functions: water-filling (properties and examples) and
the forecast window peaks."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from helpers.allocation import PROPERTY, fits
from hypothesis import given
from hypothesis import strategies as st

from rackpower_nodes.core.allocation import (
    ForecastView, PolicyConfig, forecast_now, forecast_peak, water_fill, water_fill_tiers)


def target_of(demand, floor, ceiling):
    demand = np.asarray(demand, dtype=np.float64)
    return np.clip(np.where(np.isnan(demand), floor, demand), 0.0, ceiling)


# ---------------------------------------------------------------- water_fill, properties

power = st.one_of(st.floats(0.0, 5000.0), st.sampled_from([0.0, 1e-300, 1e15, 1e300, 1.7e308]))
demand_value = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                         st.floats(-100.0, 5000.0))
budget_value = st.one_of(st.floats(0.0, 20000.0), st.sampled_from([0.0, math.inf, 1e300]),
                         st.floats(0.0, allow_infinity=True))


@st.composite
def fill_case(draw, powers=power, demands=demand_value, budgets=budget_value):
    n = draw(st.integers(0, 8))
    floor, ceiling = [], []
    for _ in range(n):
        a, b = draw(powers), draw(powers)
        floor.append(min(a, b))
        ceiling.append(max(a, b))
    demand = draw(st.lists(demands, min_size=n, max_size=n))
    priority = draw(st.lists(st.integers(-2, 3), min_size=n, max_size=n))
    return (np.array(demand, dtype=np.float64), np.array(floor), np.array(ceiling),
            np.array(priority), draw(budgets))


@PROPERTY
@given(fill_case())
def test_water_fill_invariants_hold_for_any_input(case):
    demand, floor, ceiling, priority, budget = case
    result = water_fill(demand, floor, ceiling, priority, budget)
    target = target_of(demand, floor, ceiling)
    assert result.shape == demand.shape and result.dtype == np.float64
    assert np.all(result >= 0) and np.all(result <= ceiling)
    assert np.all(result <= target)
    assert fits(result, budget)
    grant = np.minimum(floor, target)
    if fits(grant, budget):
        assert np.all(result >= grant), "floors fit the budget but one was cut"


@PROPERTY
@given(fill_case())
def test_water_fill_never_cuts_a_higher_priority_first(case):
    demand, floor, ceiling, priority, budget = case
    result = water_fill(demand, floor, ceiling, priority, budget)
    target = target_of(demand, floor, ceiling)
    for j in np.flatnonzero(result > floor):
        higher = priority > priority[j]
        assert np.all(result[higher] == target[higher]), (j, result, target)


@PROPERTY
@given(fill_case(powers=st.floats(0.0, 2000.0), demands=st.floats(-10.0, 3000.0),
                 budgets=st.floats(0.0, 10000.0)))
def test_water_fill_strands_no_budget_while_someone_is_short(case):
    demand, floor, ceiling, priority, budget = case
    result = water_fill(demand, floor, ceiling, priority, budget)
    target = target_of(demand, floor, ceiling)
    if np.any(result < target):
        assert math.fsum(result.tolist()) >= budget - 1e-9 * max(budget, 1.0)


@st.composite
def short_case(draw):
    """Finite powers, with a budget between the floors' sum and the targets' sum."""
    demand, floor, ceiling, priority, _ = draw(fill_case(
        powers=st.floats(0.0, 2000.0), demands=st.floats(-10.0, 3000.0), budgets=st.just(0.0)))
    target = target_of(demand, floor, ceiling)
    low = math.fsum(np.minimum(floor, target).tolist())
    high = math.fsum(target.tolist())
    return demand, floor, ceiling, priority, low + draw(st.floats(0.0, 1.0)) * (high - low)


@PROPERTY
@given(short_case())
def test_water_fill_shares_a_short_budget_by_priority_above_the_floors(case):
    demand, floor, ceiling, priority, budget = case
    result = water_fill(demand, floor, ceiling, priority, budget)
    target = target_of(demand, floor, ceiling)
    grant = np.minimum(floor, target)
    assert fits(result, budget) and np.all(result <= target)
    if fits(grant, budget):
        assert np.all(result >= grant)
    assert math.fsum(result.tolist()) >= budget - 1e-9 * max(budget, 1.0)
    for j in np.flatnonzero(result > floor):
        higher = priority > priority[j]
        assert np.all(result[higher] == target[higher])
    for level in np.unique(priority):  # one common level above the grants inside a priority
        idx = np.flatnonzero((priority == level) & (result < target))
        above = result[idx] - grant[idx]
        if idx.size > 1:
            assert np.ptp(above) <= 1e-9 * max(budget, 1.0)


@PROPERTY
@given(fill_case(), st.lists(demand_value, min_size=8, max_size=8))
def test_water_fill_tiers_keeps_the_invariants_and_serves_needs_first(case, needs):
    demand, floor, ceiling, priority, budget = case
    n = len(demand)
    need = np.array(needs[:n], dtype=np.float64)
    a = water_fill_tiers(need, demand, floor, ceiling, priority, budget)
    floor, ceiling = np.asarray(floor, dtype=np.float64), np.asarray(ceiling, dtype=np.float64)
    assert fits(a, budget)
    assert np.all(a >= 0) and np.all(a <= ceiling)
    want = target_of(demand, floor, ceiling)
    assert np.all(a <= np.maximum(want, np.minimum(floor, ceiling)))
    first = np.clip(np.fmin(np.fmax(need, floor), np.where(np.isnan(demand), floor, demand)),
                    0.0, ceiling)
    first = np.where(np.isnan(first), floor, first)
    if fits(first, budget) and np.all(np.isfinite(first)):
        # every expected draw fits: nobody is cut below it for someone else's headroom
        assert np.all(a >= first * (1 - 1e-12) - 1e-9)
    if n and fits(np.minimum(floor, want), budget):
        assert np.all(a >= np.minimum(floor, want) * (1 - 1e-12) - 1e-9)


# ---------------------------------------------------------------- water_fill, examples


def test_water_fill_returns_targets_that_fit():
    result = water_fill([100.0, np.nan, 900.0, -5.0, math.inf], [10, 20, 0, 5, 0],
                        [500, 500, 600, 50, 70], [1, 1, 1, 1, 1], 2000.0)
    assert result.tolist() == [100.0, 20.0, 600.0, 0.0, 70.0]


def test_water_fill_cuts_lower_priority_first_and_keeps_floors():
    # budget 400: priority 3 gets 300, priority 2 gets 90 above nothing more, priority 1 its floor
    result = water_fill([100, 200, 300], [10, 10, 10], [500, 500, 500], [1, 2, 3], 400.0)
    assert result.tolist() == [10.0, 90.0, 300.0]


def test_water_fill_levels_one_priority_with_a_common_level():
    result = water_fill([100, 200, 300], [50, 50, 50], [500, 500, 500], [1, 1, 1], 400.0)
    assert result.tolist() == [100.0, 150.0, 150.0]


def test_water_fill_grants_floors_by_priority_when_they_do_not_fit():
    # floors 450 > 300: the priority-2 level (400 W) is scaled to 300, priority 1 gets nothing
    result = water_fill([100, 200, 300], [50, 100, 300], [500, 500, 500], [1, 2, 2], 300.0)
    assert result.tolist() == [0.0, 75.0, 225.0]


def test_water_fill_zero_budget_and_empty_input():
    assert water_fill([5, 5], [1, 1], [10, 10], [1, 2], 0.0).tolist() == [0.0, 0.0]
    assert water_fill([], [], [], [], 10.0).shape == (0,)


def test_water_fill_shaves_rounding_over_the_budget():
    demand = np.full(7, 0.1)
    budget = 0.6  # 7 * 0.1 > 0.6; the six-tenths that remain must not round above it
    result = water_fill(demand, np.zeros(7), np.ones(7), np.ones(7), budget)
    assert fits(result, budget)
    assert math.fsum(result.tolist()) == pytest.approx(budget)


@pytest.mark.parametrize("args, words", [
    (([1, 2], [0, 0], [5, 5], [1, 1], -1.0), "budget_w = -1.0"),
    (([1, 2], [0, 0], [5, 5], [1, 1], math.nan), "budget_w = nan"),
    (([1, 2], [0, 6], [5, 5], [1, 1], 10.0), "floor_w[1] = 6.0 > ceiling_w[1] = 5.0"),
    (([1, 2], [0], [5, 5], [1, 1], 10.0), "lengths"),
    (([1, 2], [0, 0], [5, math.inf], [1, 1], 10.0), "ceiling_w[1] = inf"),
    (([1, 2], [-1, 0], [5, 5], [1, 1], 10.0), "floor_w[0] = -1.0"),
    (([[1, 2]], [0, 0], [5, 5], [1, 1], 10.0), "demand_w has shape (1, 2)"),
    (([1, 2], [0, 0], [5, 5], [1, math.nan], 10.0), "priority[1] = nan"),
])
def test_water_fill_rejects_invalid_input(args, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        water_fill(*args)


# ---------------------------------------------------------------- forecast windows


def view(t=100.0, step_s=0.5, horizon=10, n=2, rising=True, **kw) -> ForecastView:
    """Forecast (W) of k at step k (1-based), or 100 - k; p90 = p50 + 10, p99 = p50 + 20."""
    k = np.arange(1, horizon + 1, dtype=np.float64)
    row = k if rising else 100.0 - k
    p50 = np.tile(row, (n, 1))
    return ForecastView(t, step_s, p50, p50 + 10, p50 + 20, **kw)


CFG = PolicyConfig(breaker_w=10000.0)


@pytest.mark.parametrize("age, lead, window, first, last", [
    (0.0, 1.0, 2.0, 3, 6),      # [1.0, 3.0]: steps 3..6 exactly
    (0.3, 1.0, 2.0, 3, 7),      # [1.3, 3.3]: partial steps at both ends count
    (0.25, 0.0, 0.1, 1, 1),     # [0.25, 0.35] inside step 1
    (3.0, 1.0, 2.0, 9, 10),     # [4.0, 6.0] cut to the horizon end (5 s)
    (5.0, 1.0, 2.0, 10, 10),    # wholly past the horizon: the last step
    (-2.0, 1.0, 0.5, 1, 1),     # before the origin: the first step
])
def test_forecast_peak_window_arithmetic(age, lead, window, first, last):
    cfg = PolicyConfig(breaker_w=1000.0, lead_s=lead, window_s=window)
    now = 100.0 + age
    assert forecast_peak(view(), now, cfg, "p50").tolist() == [last, last]
    assert forecast_peak(view(rising=False), now, cfg, "p50").tolist() == [100 - first] * 2


def test_forecast_peak_picks_the_quantile_and_skips_unknown_values():
    fc = view()
    p99 = fc.p99_w.copy()
    p99[0, :] = np.nan
    p99[1, 5] = np.nan  # step 6, the window's last: the highest known is step 5
    fc = ForecastView(fc.t_unix, fc.step_s, fc.p50_w, fc.p90_w, p99)
    assert forecast_peak(fc, 100.0, CFG, "p90").tolist() == [16.0, 16.0]
    peak = forecast_peak(fc, 100.0, CFG, "p99")
    assert math.isnan(peak[0]) and peak[1] == 25.0
    with pytest.raises(ValueError, match="quantile = 'p75'"):
        forecast_peak(fc, 100.0, CFG, "p75")
    with pytest.raises(ValueError, match="now_s = nan"):
        forecast_peak(fc, math.nan, CFG, "p99")


def test_forecast_now_takes_the_step_covering_now():
    fc = view()
    assert forecast_now(fc, 100.0).tolist() == [1.0, 1.0]
    assert forecast_now(fc, 100.7).tolist() == [2.0, 2.0]
    assert forecast_now(fc, 100.0 + 99).tolist() == [10.0, 10.0]


def test_forecast_view_checks_its_shapes():
    a = np.zeros((2, 3))
    with pytest.raises(ValueError, match="p90_w has shape"):
        ForecastView(0.0, 0.5, a, np.zeros((2, 4)), a)
    with pytest.raises(ValueError, match="step_s = 0"):
        ForecastView(0.0, 0, a, a, a)
    with pytest.raises(ValueError, match="fallback has shape"):
        ForecastView(0.0, 0.5, a, a, a, fallback=[True])
