"""Tests of the allocation core: water-filling, forecast window peaks, modes and corrections."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rackpower_nodes.core.allocation import (
    ACTIONS, MODES, AllocationController, Component, ForecastView, PolicyConfig, forecast_now,
    forecast_peak, water_fill, water_fill_tiers)
from rackpower_nodes.core.params import ConfigError

PROPERTY = settings(max_examples=1000, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def sums(x) -> list[float]:
    """The float64 sums a reader of the allocation might compute."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return [0.0]
    try:
        exact = math.fsum(x.tolist())
    except OverflowError:
        exact = math.inf
    return [float(np.sum(x)), float(np.cumsum(x)[-1]), exact, float(sum(x.tolist()))]


def fits(x, budget) -> bool:
    return all(s <= budget for s in sums(x))


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


# ---------------------------------------------------------------- controller, examples


def rack(breaker_w=10000.0, mode="proactive", **cfg) -> AllocationController:
    """gpu: floor 50 W, ceiling 1000 W, priority 2; cpu: floor 20 W, ceiling 500 W, priority 1."""
    components = [Component("gpu", 50.0, 1000.0, priority=2),
                  Component("cpu", 20.0, 500.0, priority=1)]
    return AllocationController(components, PolicyConfig(breaker_w=breaker_w, **cfg), mode)


def flat(t, p50, p90=None, p99=None, step_s=0.5, horizon=10) -> ForecastView:
    """The same value (W) at every step, per component."""
    def grid(v):
        return np.tile(np.asarray(v, dtype=np.float64)[:, None], (1, horizon))
    p90 = p50 if p90 is None else p90
    p99 = p90 if p99 is None else p99
    return ForecastView(t, step_s, grid(p50), grid(p90), grid(p99), model="lstm 3")


def test_proactive_allocates_the_forecast_peak_plus_margin():
    ctl = rack()
    fc = flat(100.0, [300, 100], [350, 150], [400, 200])
    d = ctl.step(100.1, [300.0, 100.0], fc)
    assert (d.mode, d.mode_reason, d.corrections) == ("proactive", "", ())
    assert d.forecast_w.tolist() == [400.0, 200.0]
    assert d.allocated_w.tolist() == [420.0, 210.0]  # + max(5 %, 5 W)
    assert ctl.allocated_w.tolist() == [420.0, 210.0]
    ctl = rack(quantile="p90")
    assert ctl.step(100.1, [300.0, 100.0], fc).allocated_w.tolist() == [367.5, 157.5]


def test_proactive_never_allocates_below_the_measured_draw():
    ctl = rack()
    d = ctl.step(100.0, [600.0, 100.0], flat(100.0, [300, 100], p99=[400, 200]))
    assert d.allocated_w.tolist() == [630.0, 210.0]  # 600 W measured + 5 %
    assert d.demand_w.tolist() == [630.0, 210.0]


def test_proactive_uses_the_reactive_rule_where_a_component_has_no_forecast():
    ctl = rack()
    d = ctl.step(100.0, [300.0, 100.0], flat(100.0, [300, np.nan]))
    assert d.allocated_w.tolist() == [315.0, 110.0]
    assert math.isnan(d.forecast_w[1])


def test_reactive_adds_its_margin_to_the_last_measurement():
    ctl = rack(mode="reactive")
    d = ctl.step(100.0, [300.0, 50.0], None)
    assert (d.mode, d.allocated_w.tolist()) == ("reactive", [330.0, 60.0])
    assert np.isnan(d.forecast_w).all()
    d = ctl.step(100.1, [np.nan, 10.0], None)  # unknown: the static share; below floor: floor
    assert d.allocated_w.tolist() == [1000.0, 20.0]


def test_static_is_the_nameplate_split_whatever_is_measured():
    components = [Component("gpu", 50.0, 1000.0, 2, nameplate_w=600.0),
                  Component("cpu", 20.0, 150.0, 1, nameplate_w=200.0)]
    ctl = AllocationController(components, PolicyConfig(breaker_w=1000.0), "static")
    assert ctl.static_allocation().tolist() == [600.0, 150.0]  # cpu capped at its ceiling
    assert ctl.allocated_w.tolist() == [600.0, 150.0]
    for t, measured in ((1.0, [900.0, 300.0]), (2.0, [0.0, np.nan])):
        d = ctl.step(t, measured, None)
        assert (d.mode, d.allocated_w.tolist(), d.corrections) == ("static", [600.0, 150.0], ())


def test_static_split_keeps_floors_when_shares_fall_below_them():
    components = [Component("a", 60.0, 100.0, 1), Component("b", 0.0, 100.0, 1)]
    ctl = AllocationController(components, PolicyConfig(breaker_w=125.0), "static")
    assert ctl.static_allocation().tolist() == [60.0, 40.0]  # shares 50 / 50 of 100 W


@pytest.mark.parametrize("policy, expected", [("reactive", [375.0, 125.0]),
                                               ("static", [1000.0, 500.0])])
def test_safe_mode_allocates_by_its_policy(policy, expected):
    ctl = rack(mode="safe", safe_policy=policy)
    d = ctl.step(100.0, [300.0, 100.0], flat(100.0, [300, 100]))
    assert (d.mode, d.mode_reason, d.allocated_w.tolist()) == ("safe", "requested", expected)


def test_stale_forecast_sends_proactive_to_safe_and_a_fresh_one_brings_it_back():
    ctl = rack()
    fc = flat(100.0, [300, 100])
    d = ctl.step(100.42, [300.0, 100.0], fc)
    assert (d.mode, d.mode_reason) == ("safe", "forecast stale 0.42 s")
    assert d.allocated_w.tolist() == [375.0, 125.0]  # reactive with the safe margin
    assert np.isnan(d.forecast_w).all()
    d = ctl.step(100.5, [300.0, 100.0], flat(100.4, [300, 100]))
    assert (d.mode, d.mode_reason) == ("proactive", "")
    assert ctl.step(101.0, [300.0, 100.0], None).mode_reason == "forecast missing"
    d = ctl.step(101.0, [300.0, 100.0], flat(102.0, [300, 100]))
    assert d.mode_reason == "forecast 1.00 s ahead of the clock"
    assert ctl.mode == "proactive"


def test_pdu_failure_forces_safe_in_every_mode_until_it_answers():
    for mode in ("proactive", "reactive", "static"):
        ctl = rack(mode=mode)
        d = ctl.step(100.0, [300.0, 100.0], flat(100.0, [300, 100]), False, "timeout")
        assert (d.mode, d.mode_reason) == ("safe", "pdu: timeout")
        assert ctl.step(100.1, [300.0, 100.0], flat(100.0, [300, 100])).mode == mode
    d = rack().step(100.0, [1.0, 1.0], None, pdu_ok=False)
    assert d.mode_reason == "pdu: not answering; forecast missing"


@pytest.mark.parametrize("mode", ["proactive", "reactive", "static", "safe"])
def test_stale_samples_force_safe_in_every_mode_and_their_return_restores_it(mode):
    ctl = rack(mode=mode, samples_stale_s=0.5)
    fc = flat(100.0, [300, 100])
    # at the deadline the measurements still count; past it: safe, whatever was requested
    assert ctl.step(100.0, [300.0, 100.0], fc, samples_age_s=0.5).mode == mode
    d = ctl.step(100.1, [np.nan, np.nan], fc, samples_age_s=0.51,
                 samples_reason="header.stamp not advancing for 0.51 s")
    assert d.mode == "safe"
    assert d.mode_reason.endswith("power_samples stale: header.stamp not advancing for 0.51 s")
    assert ctl.mode == mode                           # the request is kept for the return
    d = ctl.step(100.2, [np.nan, np.nan], fc, samples_age_s=math.inf)
    assert d.mode_reason.endswith("power_samples stale: none received")
    d = ctl.step(100.2, [300.0, 100.0], fc, samples_age_s=0.05)
    assert (d.mode, d.mode_reason) == (mode, "" if mode != "safe" else "requested")


@pytest.mark.parametrize("policy", ["reactive", "static"])
@pytest.mark.parametrize("measured", [[np.nan, np.nan], [900.0, 480.0], [0.0, 0.0]])
def test_safe_mode_without_measurements_allocates_the_static_split(policy, measured):
    """Stale samples: the values passed in (old, NaN or not) are not trusted; the allocation
    is the static split, finite, within the ceilings and the budget, with no correction."""
    ctl = rack(breaker_w=700.0, derating=0.8, safe_policy=policy)     # budget 560 W
    d = ctl.step(100.0, measured, flat(100.0, [900, 480]), samples_age_s=2.0)
    static = ctl.static_allocation()
    assert d.mode == "safe" and d.corrections == ()
    np.testing.assert_array_equal(d.allocated_w, static)
    assert np.all(np.isfinite(static)) and static.sum() <= 560.0
    assert np.all(static <= ctl.ceiling_w) and np.all(static >= ctl.floor_w)
    np.testing.assert_array_equal(ctl.allocated_w, static)      # what stays in force


def test_samples_age_must_be_a_number():
    with pytest.raises(ValueError, match="samples_age_s = nan"):
        rack().step(100.0, [1.0, 1.0], None, samples_age_s=math.nan)


def test_reactive_ignores_forecast_staleness():
    assert rack(mode="reactive").step(100.0, [1.0, 1.0], None).mode == "reactive"


def test_set_mode_rejects_unknown_modes():
    ctl = rack()
    ctl.set_mode("static")
    assert ctl.mode == "static"
    with pytest.raises(ValueError, match="mode = 'eco': expected one of proactive"):
        ctl.set_mode("eco")


# ---------------------------------------------------------------- corrections


def settled(breaker_w) -> AllocationController:
    """Proactive controller after one cycle at 100 W forecast and measured: [105, 105] W."""
    ctl = rack(breaker_w)
    ctl.step(100.0, [100.0, 100.0], flat(100.0, [100, 100]))
    assert ctl.allocated_w.tolist() == [105.0, 105.0]
    return ctl


@pytest.mark.parametrize("breaker_w, gpu_w, allocated, action", [
    (10000.0, 150.0, [157.5, 105.0], "raised_from_slack"),
    # budget 250 W: both keep their measured draw; the cpu's headroom went to the gpu
    (312.5, 150.0, [150.0, 100.0], "took_from_lower_priority"),
    (10000.0, 1200.0, [1000.0, 105.0], "capped_at_ceiling"),
    (312.5, 300.0, [230.0, 20.0], "budget_exhausted"),  # cpu cut to its floor
    (10000.0, 50.0, [105.0, 105.0], "none"),  # below the forecast: nothing to raise
])
def test_corrections_report_what_was_done(breaker_w, gpu_w, allocated, action):
    ctl = settled(breaker_w)
    d = ctl.step(100.1, [gpu_w, 100.0], flat(100.0, [100, 100]), in_force_w=[105.0, 105.0])
    assert d.allocated_w.tolist() == allocated
    (c,) = d.corrections
    assert (c.component, c.predicted_w, c.actual_w, c.allocated_w) == ("gpu", 100.0, gpu_w, 105.0)
    assert (c.new_allocated_w, c.action) == (allocated[0], action)
    assert c.error_w == gpu_w - 100.0


def test_a_throttled_component_grows_from_what_it_holds_until_it_is_free():
    """The gpu's demand steps to 400 W while the PDU holds it at 110 W: pinned, its demand
    unknown, it asks for three times what it holds plus the margin (363 W), then, still
    held, three times that (up to its 1000 W ceiling); once free it keeps its measured draw
    plus the margin (440 W covers 400 W); the cpu, not held, keeps its own."""
    ctl = rack(mode="reactive", pinned_hold_s=0.0)
    ctl.step(0.0, [100.0, 50.0], None)
    demand = np.array([400.0, 50.0])
    steps, pinned = [], []
    for t in (1.0, 2.0, 3.0, 4.0):
        held = ctl.allocated_w.copy()               # the devices hold the last allocation
        d = ctl.step(t, np.minimum(demand, held), None, in_force_w=held)
        steps.append(d.allocated_w[0])
        pinned.append([c.component for c in d.corrections])
        assert d.allocated_w[1] == 60.0
    assert steps == pytest.approx([363.0, 1000.0, 440.0, 440.0])
    assert pinned == [["gpu"], ["gpu"], [], []]


def test_pinned_is_judged_against_the_allocation_in_force_when_measured():
    """Decisions take lead_s to reach the devices: a measurement at the old allocation is
    pinned (the new one is not in force yet), and the controller's own estimate of what is in
    force says the same when the devices' is not given."""
    ctl = rack(mode="reactive", lead_s=1.0, pinned_hold_s=0.0)
    ctl.step(0.0, [100.0, 50.0], None)             # gpu 110 W, in force from t = 1 s
    assert ctl.in_force_at(0.5).tolist() == ctl.static_allocation().tolist()
    assert ctl.in_force_at(1.0).tolist() == [110.0, 60.0]
    d = ctl.step(1.0, [110.0, 50.0], None)          # held at 110: pinned, grows to 363
    assert d.allocated_w[0] == 363.0
    d = ctl.step(1.5, [110.0, 50.0], None)          # 363 is not in force before t = 2 s
    assert d.allocated_w[0] == 363.0 and [c.component for c in d.corrections] == ["gpu"]
    assert d.corrections[0].allocated_w == 110.0
    # the devices' report wins over the estimate; NaN falls back to it
    assert ctl.in_force_at(1.6, [np.nan, 55.0]).tolist() == [110.0, 55.0]
    with pytest.raises(ValueError, match="in_force_w has shape"):
        ctl.in_force_at(1.6, [1.0])


def test_an_unthrottled_component_a_margin_below_its_allocation_is_not_pinned():
    """Even with a margin of 1 %: pinned needs the power within half the margin of the
    allocation, so a component sitting where the controller put it does not grow."""
    ctl = rack(mode="reactive", reactive_margin_frac=0.01, reactive_margin_w=2.0,
               pinned_hold_s=0.0)
    ctl.step(0.0, [500.0, 50.0], None)
    held = ctl.allocated_w.copy()
    assert held[0] == 505.0
    d = ctl.step(1.0, [500.0, 50.0], None, in_force_w=held)
    assert d.corrections == () and d.allocated_w[0] == 505.0
    d = ctl.step(2.0, [504.5, 50.0], None, in_force_w=held)   # within 1 W of 505: held
    assert [c.component for c in d.corrections] == ["gpu"] and d.allocated_w[0] == 1000.0


def test_a_short_clip_at_the_allocation_gains_the_margin_a_held_one_grows():
    """Noise above the margin clips a component at its allocation for a step or two: that
    gains only the margin; held for pinned_hold_s (0.2 s) it is throttled and grows."""
    ctl = rack(mode="reactive", pinned_hold_s=0.2)
    ctl.step(0.0, [100.0, 50.0], None)
    got = []
    for t in (1.0, 1.1, 1.2):
        held = np.array([110.0, 60.0])                # the devices keep 110 W in force
        got.append(ctl.step(t, [110.0, 50.0], None, in_force_w=held).allocated_w[0])
    assert got == pytest.approx([121.0, 121.0, 363.0])
    ctl.step(1.3, [100.0, 50.0], None, in_force_w=[110.0, 60.0])   # free: the run ends
    d = ctl.step(1.4, [110.0, 50.0], None, in_force_w=[110.0, 60.0])
    assert d.allocated_w[0] == pytest.approx(121.0)  # a new run starts from zero


def test_priorities_decide_who_waits_when_two_pinned_components_do_not_both_fit():
    """Budget 400 W, both components held at their allocation and wanting more: the slack
    goes to the gpu (priority 2) first; still held a whole actuation delay (lead_s) later,
    the gpu claims the cpu's (priority 1) draw down to its floor: the cpu waits."""
    ctl = rack(breaker_w=500.0, mode="reactive", pinned_hold_s=0.0)    # budget 400 W
    ctl.step(0.0, [100.0, 100.0], None)
    held = ctl.allocated_w.copy()
    assert held.tolist() == [110.0, 110.0]
    d = ctl.step(1.0, held, None, in_force_w=held)
    assert d.allocated_w.tolist() == [290.0, 110.0]
    held = d.allocated_w.copy()
    d = ctl.step(2.0, held, None, in_force_w=held)
    assert d.allocated_w.tolist() == [380.0, 20.0]   # cpu down to its floor: it waits


# ---------------------------------------------------------------- configuration errors


@pytest.mark.parametrize("kw, words", [
    ({"breaker_w": -1.0}, "breaker_w = -1.0: expected a number > 0.0"),
    ({"derating": 1.5}, "derating = 1.5: expected a number > 0.0 and <= 1.0"),
    ({"quantile": "p75"}, "quantile = 'p75': expected one of p50, p90, p99"),
    ({"safe_policy": "off"}, "safe_policy = 'off': expected one of reactive, static"),
    ({"window_s": 0.0}, "window_s = 0.0: expected a number > 0.0"),
    ({"lead_s": -0.1}, "lead_s = -0.1: expected a number >= 0.0"),
    ({"forecast_stale_s": math.nan}, "forecast_stale_s = nan: expected a finite number"),
    ({"margin_w": "5"}, "margin_w = '5': expected a finite number"),
])
def test_policy_config_names_the_bad_field(kw, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        PolicyConfig(**{"breaker_w": 1000.0, **kw})


def test_policy_config_reports_every_bad_field_and_its_budget():
    with pytest.raises(ConfigError) as info:
        PolicyConfig(breaker_w=0.0, derating=0.0, margin_frac=-1.0)
    assert len(info.value.errors) == 3
    assert PolicyConfig(breaker_w=1000.0, derating=0.8).budget_w == 800.0


@pytest.mark.parametrize("args, words", [
    (("a", 10.0, 5.0), "component 'a': floor_w = 10.0 > ceiling_w = 5.0"),
    (("a", -1.0, 5.0), "component 'a': floor_w = -1.0: expected a finite number >= 0"),
    (("a", 0.0, math.inf), "component 'a': ceiling_w = inf"),
    (("", 0.0, 5.0), "component id = ''"),
    (("a", 0.0, 5.0, 1.5), "component 'a': priority = 1.5: expected an integer"),
    (("a", 0.0, 5.0, 1, -3.0), "component 'a': nameplate_w = -3.0"),
])
def test_component_names_the_bad_field(args, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        Component(*args)


def test_controller_rejects_bad_components_and_inputs():
    cfg = PolicyConfig(breaker_w=1000.0)
    with pytest.raises(ConfigError, match="id 'a' appears twice"):
        AllocationController([Component("a", 0, 5), Component("a", 0, 5)], cfg)
    with pytest.raises(ConfigError, match="at least one component"):
        AllocationController([], cfg)
    ctl = rack()
    with pytest.raises(ValueError, match=re.escape("measured_w has shape (3,): expected (2,)")):
        ctl.step(0.0, [1.0, 2.0, 3.0], None)
    with pytest.raises(ValueError, match="forecast has 3 components: expected 2"):
        ctl.step(0.0, [1.0, 2.0], flat(0.0, [1, 2, 3]))
    with pytest.raises(ValueError, match="t_unix = nan"):
        ctl.step(math.nan, [1.0, 2.0], None)


# ---------------------------------------------------------------- controller, properties

any_power = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-10.0, 3000.0))


@st.composite
def controllers(draw) -> AllocationController:
    components = []
    for i in range(draw(st.integers(1, 5))):
        a, b = draw(st.floats(0.0, 2000.0)), draw(st.floats(0.0, 2000.0))
        plate = draw(st.none() | st.floats(0.0, 3000.0))
        components.append(Component(f"c{i}", min(a, b), max(a, b), draw(st.integers(0, 3)),
                                    plate))
    cfg = PolicyConfig(breaker_w=draw(st.floats(1.0, 10000.0)),
                       derating=draw(st.floats(0.5, 1.0)),
                       quantile=draw(st.sampled_from(["p50", "p90", "p99"])),
                       lead_s=draw(st.floats(0.0, 2.0)), window_s=draw(st.floats(0.01, 3.0)),
                       safe_policy=draw(st.sampled_from(["reactive", "static"])),
                       samples_stale_s=draw(st.floats(0.01, 1.0)))
    return AllocationController(components, cfg, draw(st.sampled_from(MODES)))


@st.composite
def cycles(draw, n: int) -> list[tuple]:
    out, t = [], 1000.0
    for _ in range(draw(st.integers(1, 6))):
        t += draw(st.floats(0.0, 1.0))
        measured = np.array(draw(st.lists(any_power, min_size=n, max_size=n)))
        forecast = None
        if draw(st.booleans()):
            horizon = draw(st.integers(0, 6))
            grids = [np.array(draw(st.lists(any_power, min_size=n * horizon,
                                            max_size=n * horizon))).reshape(n, horizon)
                     for _ in range(3)]
            forecast = ForecastView(t - draw(st.floats(-0.5, 1.0)),
                                    draw(st.sampled_from([0.1, 0.5, 1.0])), *grids)
        mode = draw(st.none() | st.sampled_from(MODES))
        age = draw(st.sampled_from([0.0, math.inf]) | st.floats(-1.0, 2.0))
        out.append((t, measured, forecast, mode, draw(st.booleans()), age))
    return out


@PROPERTY
@given(st.data())
def test_controller_step_keeps_the_invariants(data):
    ctl = data.draw(controllers())
    budget = ctl.cfg.budget_w
    floors_fit = fits(ctl.floor_w, budget)
    for t, measured, forecast, mode, pdu_ok, age in data.draw(cycles(len(ctl.ids))):
        if mode is not None:
            ctl.set_mode(mode)
        d = ctl.step(t, measured, forecast, pdu_ok, "" if pdu_ok else "refused",
                     samples_age_s=age)
        blind = age > ctl.cfg.samples_stale_s
        a = d.allocated_w
        assert fits(a, budget)
        assert np.all(a >= 0) and np.all(a <= ctl.ceiling_w)
        if floors_fit:
            assert np.all(a >= ctl.floor_w)
        assert np.array_equal(ctl.allocated_w, a)
        assert d.mode in MODES and (d.mode == "safe") == bool(d.mode_reason)
        fresh = forecast is not None and abs(t - forecast.t_unix) <= ctl.cfg.forecast_stale_s
        if not pdu_ok:
            assert d.mode == "safe" and "pdu: refused" in d.mode_reason
        if blind:       # no measurement to trust: safe, the static split
            assert d.mode == "safe" and "power_samples stale" in d.mode_reason
            assert np.array_equal(a, ctl.static_allocation()) and not d.corrections
        elif pdu_ok and ctl.mode != "safe" and (ctl.mode != "proactive" or fresh):
            assert d.mode == ctl.mode
        if d.mode == "static":
            assert np.array_equal(a, ctl.static_allocation()) and not d.corrections
        assert all(c.action in ACTIONS for c in d.corrections)
        assert len({c.component for c in d.corrections}) == len(d.corrections)
