"""Tests of the allocation controller: its modes and their fallbacks to safe, its
configuration errors, and the invariants of every step (properties). The corrections and the
pinned growth are in test_allocation_corrections.py, water-filling in test_water_filling.py."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from helpers.allocation import PROPERTY, fits, flat, rack
from hypothesis import given
from hypothesis import strategies as st

from rackpower_nodes.core.allocation import (
    ACTIONS, MODES, AllocationController, Component, ForecastView, PolicyConfig)
from rackpower_nodes.core.params import ConfigError


# ---------------------------------------------------------------- controller, examples


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
