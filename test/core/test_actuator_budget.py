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
