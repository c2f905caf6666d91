"""The actuator's budget source (config or a power coordinator) and the controller's
set_budget: plain pytest, no ROS."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.rack import actuator_params

from rackpower_nodes.core.actuator_config import actuator_config_from_params
from rackpower_nodes.core.allocation import AllocationController
from rackpower_nodes.core.params import ConfigError, flatten_parameters


def _params(**budget) -> dict:
    values = flatten_parameters(actuator_params([5020, 5021]))       # 920 W, floors 4 x 50 W
    values.update({f"budget.{k}": v for k, v in budget.items()})
    return values


def test_the_budget_comes_from_the_config_by_default():
    cfg = actuator_config_from_params(_params())
    assert cfg.budget.source == "config" and not cfg.budget.coordinated
    assert math.isnan(cfg.budget.guaranteed_w)


def test_a_coordinated_rack_names_its_guaranteed_share():
    cfg = actuator_config_from_params(_params(source="coordinator", guaranteed_w=600.0))
    assert cfg.budget.coordinated and cfg.budget.guaranteed_w == 600.0
    assert cfg.budget.rack_id == ""                          # the node's namespace


@pytest.mark.parametrize("budget, expected", [
    ({"source": "coordinator"}, "budget.guaranteed_w: missing"),
    ({"source": "coordinator", "guaranteed_w": 150.0},
     "budget.guaranteed_w = 150: below the sum of the floors"),
    ({"source": "coordinator", "guaranteed_w": 1000.0},
     "budget.guaranteed_w = 1000: above the rack budget"),
    ({"source": "coordinatr", "guaranteed_w": 600.0}, "budget.source"),
])
def test_an_impossible_guaranteed_share_is_refused_naming_the_key(budget, expected):
    with pytest.raises(ConfigError) as err:
        actuator_config_from_params(_params(**budget))
    assert expected in str(err.value)


def test_set_budget_moves_the_fill_and_the_static_split():
    cfg = actuator_config_from_params(_params())
    ctl = AllocationController(cfg.components, cfg.policy, "reactive")
    assert ctl.static_allocation().sum() == pytest.approx(920.0)
    ctl.set_budget(500.0)
    static = ctl.static_allocation()
    assert static.sum() == pytest.approx(500.0) and np.all(static >= 50.0)
    d = ctl.step(1000.0, np.array([300.0, 300.0, 300.0, 300.0]), None)
    assert d.allocated_w.sum() <= 500.0 + 1e-6
    # the higher priority (a1, b1) keeps its power first
    assert d.allocated_w[0] > d.allocated_w[1] and d.allocated_w[2] > d.allocated_w[3]
    ctl.set_budget(920.0)
    d = ctl.step(1001.0, np.array([300.0, 300.0, 300.0, 300.0]), None)
    assert d.allocated_w.sum() == pytest.approx(920.0)


@pytest.mark.parametrize("bad", [0.0, -5.0, math.nan, math.inf, "600"])
def test_set_budget_refuses_what_is_not_a_budget(bad):
    cfg = actuator_config_from_params(_params())
    ctl = AllocationController(cfg.components, cfg.policy, "reactive")
    with pytest.raises(ValueError, match="budget_w"):
        ctl.set_budget(bad)


# -- the rack's side of the coordinator: lease, acknowledgement, demand ------------------------

def _grant(seq: int, budget_w: float, rack: str = "r1", lease_s: float = 2.0):
    from rackpower_nodes.core.room.types import RackGrant

    return RackGrant(rack, seq, budget_w, budget_w, lease_s, "room")


def _keeper():
    from rackpower_nodes.core.actuator_budget import RackBudgetKeeper

    return RackBudgetKeeper("r1", rating_w=1840.0, guaranteed_w=700.0)


def test_the_keeper_holds_a_grant_for_its_lease_then_falls_back():
    k = _keeper()
    assert k.budget_w(0.0) == 700.0 and k.source(0.0) == "fallback"      # before any grant
    assert k.on_grant(_grant(1, 1500.0), 10.0) == ""
    assert k.budget_w(10.5) == 1500.0 and k.source(10.5) == "coordinator"
    assert k.budget_w(11.0) == 700.0                   # from lease/2: min(grant, guaranteed)
    assert k.budget_w(12.0) == 700.0 and k.source(12.0) == "fallback"
    assert k.on_grant(_grant(2, 300.0), 20.0) == ""
    assert k.budget_w(20.9) == 300.0 and k.budget_w(21.5) == 300.0     # below: kept
    assert k.budget_w(22.0) == 700.0                   # a whole lease: the guaranteed share
    assert k.on_grant(_grant(3, 5000.0), 30.0) == "" and k.budget_w(30.0) == 1840.0


def test_the_keeper_ignores_what_is_not_its_grant():
    k = _keeper()
    assert "this is rack 'r1'" in k.on_grant(_grant(1, 1500.0, rack="r2"), 0.0)
    assert k.on_grant(_grant(5, 1500.0), 0.0) == ""
    assert "not newer than grant 5" in k.on_grant(_grant(4, 100.0), 0.5)     # late
    assert k.budget_w(0.5) == 1500.0


def test_a_grant_is_acknowledged_once_the_devices_fit_it():
    k = _keeper()
    ceiling = np.full(4, 600.0)
    k.on_grant(_grant(1, 1000.0), 0.0)
    k.acknowledge(np.array([300.0, 300.0, 300.0, 300.0]), ceiling)        # 1200 > 1000
    assert k.acked_seq == 0 and math.isnan(k.acked_budget_w)
    k.acknowledge(np.array([250.0, 250.0, 250.0, np.nan]), ceiling)       # NaN at its ceiling
    assert k.acked_seq == 0
    k.acknowledge(np.array([250.0, 250.0, 250.0, 250.0]), ceiling)
    assert (k.acked_seq, k.acked_budget_w) == (1, 1000.0)
    d = k.demand(100.0, 1.0, [2, 2, 1, 1], [50.0] * 4, [300.0, 300.0, 80.0, 20.0], 0.5)
    assert d.priority == (2, 1) and d.floor_w == (100.0, 100.0)
    assert d.demand_w == (600.0, 130.0)                # below its floor, a component asks it
    assert (d.acked_seq, d.acked_budget_w, d.budget_source) == (1, 1000.0, "coordinator")


def test_off_the_lease_the_rack_reports_its_budget_in_force_as_acknowledged():
    k = _keeper()
    k.on_grant(_grant(1, 300.0), 0.0)
    k.acknowledge(np.full(4, 70.0), np.full(4, 600.0))
    assert k.demand(0.0, 1.0, [1] * 4, [50.0] * 4, [70.0] * 4, 0.5).acked_budget_w == 300.0
    d = k.demand(0.0, 1.0, [1] * 4, [50.0] * 4, [70.0] * 4, 2.5)     # lease over: 700 W
    assert d.budget_source == "fallback" and d.acked_budget_w == 700.0
    assert k.source_change(0.5) == "" and "coordinator" not in k.source_change(0.5)
    assert k.source_change(2.5) == "budget source coordinator -> fallback: 700 W"


def test_until_the_first_grant_a_rack_holds_no_more_than_its_devices_held_at_start():
    k = _keeper()
    floors, ceiling = np.full(4, 50.0), np.full(4, 600.0)
    k.hold_at_start(np.full(4, 70.0), floors, ceiling)    # a previous run left 280 W
    assert k.budget_w(0.0) == 280.0
    k.hold_at_start(np.full(4, 10.0), floors, ceiling)    # below the floors: the floors
    assert k.budget_w(0.0) == 200.0
    k.hold_at_start(np.full(4, 2300.0), floors, ceiling)  # power-on defaults: guaranteed
    assert k.budget_w(0.0) == 700.0
    k.hold_at_start(np.full(4, 70.0), floors, ceiling)
    k.on_grant(_grant(1, 1500.0), 1.0)                    # the first grant lifts the hold
    assert k.budget_w(1.0) == 1500.0 and k.budget_w(3.5) == 700.0


def test_forecast_totals_sum_the_components_step_by_step_over_the_window():
    from rackpower_nodes.core.actuator_budget import forecast_totals
    from rackpower_nodes.core.allocation import ForecastView

    policy = actuator_config_from_params(_params()).policy       # lead 1 s, window 1 s
    p50 = np.vstack([np.full(50, 100.0), np.arange(50.0)])       # 0.1 s steps from t = 1000
    view = ForecastView(1000.0, 0.1, p50, p50 * 1.1, p50 * 1.2)
    totals = forecast_totals(view, 1000.0, policy)
    # the window [1001, 1002] s is steps 11..20; the total's highest step is the 20th
    assert totals == pytest.approx({"p50": 119.0, "p90": 130.9, "p99": 142.8})
    p50[1, 15] = np.nan                       # a step with a component unknown: skipped
    view = ForecastView(1000.0, 0.1, p50, p50 * 1.1, p50 * 1.2)
    assert forecast_totals(view, 1000.0, policy) == pytest.approx(
        {"p50": 119.0, "p90": 130.9, "p99": 142.8})
    p50[1, :] = np.nan                        # no step left: no quantile
    view = ForecastView(1000.0, 0.1, p50, p50 * 1.1, p50 * 1.2)
    assert forecast_totals(view, 1000.0, policy) == {}
    assert forecast_totals(None, 1000.0, policy) == {}
