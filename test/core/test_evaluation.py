"""The side-by-side evaluation (core/evaluation.py) on short runs; its command line,
`rackpower-evaluate`: test/tools/test_evaluate_cli.py."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO

from rackpower_nodes.core.actuator_config import load_actuator_config_yaml
from rackpower_nodes.core.evaluation import UNDER_TOL_FRAC, UNDER_TOL_W, EvalSetup, run_mode
from rackpower_nodes.sim.pdu import PduModel
from rackpower_nodes.sim.rack_sim import generate

CONFIG = REPO / "config" / "rack.yaml"


@pytest.fixture(scope="module")
def day():
    return generate(0.25, seed=11)


@pytest.fixture(scope="module")
def setup():
    cfg = load_actuator_config_yaml(CONFIG)
    return EvalSetup(cfg.components, cfg.policy, delay_s=1.0, forecast_every_s=0.5)


def _demand(day, setup):
    names = [c.id for c in setup.components]
    return day.power_w[:, [day.names.index(n) for n in names]].astype(np.float64)


def _pdu(setup):
    return PduModel([c.ceiling_w for c in setup.components], setup.policy.breaker_w)


@pytest.mark.parametrize("mode", ["reactive", "static"])
def test_modes_keep_the_budget_and_account_for_every_step(day, setup, mode):
    demand = _demand(day, setup)
    pdu = _pdu(setup)
    res = run_mode(mode, demand, day.start_unix, day.rate_hz, setup, pdu, trace_every=1)
    assert res.steps == len(demand)
    assert res.budget_violations == 0 and res.breaker_trips == 0
    # the loop's own accounting agrees with the PDU model's
    assert res.under_energy_wh == pytest.approx(pdu.stats()["under_allocated_j"] / 3600, rel=1e-6)
    assert res.demand_energy_wh == pytest.approx(demand.sum() / day.rate_hz / 3600, rel=1e-6)
    alloc = res.trace["allocated_w"]
    assert np.all(alloc.sum(axis=1) <= setup.policy.budget_w + 1e-6)
    assert np.all(alloc <= np.array([c.ceiling_w for c in setup.components]) + 1e-9)
    assert np.all(res.trace["served_w"] <= alloc + 1e-9)      # the PDU enforced them
    row = res.row(len(setup.components))
    assert row["stranded_mean_w"] > 0
    assert res.under_steps_by_component.sum() == res.under_steps == res.under_steps_by_hour.sum()
    # under-allocated time counts shortfalls above the tolerance; the PDU counts every one
    short = demand - alloc
    counted = short > np.maximum(UNDER_TOL_FRAC * demand, UNDER_TOL_W)
    np.testing.assert_array_equal(res.under_steps_by_component, counted.sum(axis=0))
    np.testing.assert_allclose((short > 1e-9).sum(axis=0) / day.rate_hz,
                               pdu.under_allocated_s, atol=1e-6)
    assert np.all(res.under_steps_by_component <= (short > 1e-9).sum(axis=0))


def test_static_never_moves_and_reactive_follows_demand(day, setup):
    demand = _demand(day, setup)
    static = run_mode("static", demand, day.start_unix, day.rate_hz, setup, _pdu(setup))
    reactive = run_mode("reactive", demand, day.start_unix, day.rate_hz, setup, _pdu(setup))
    assert np.ptp(static.trace["allocated_w"], axis=0).max() == 0.0
    assert static.corrections == 0
    # following demand strands far less power than a fixed nameplate split
    assert (reactive.row(16)["stranded_mean_w"] < 0.5 * static.row(16)["stranded_mean_w"])


def test_a_breaker_smaller_than_configured_trips_and_ends_the_run(day, setup):
    """A misconfigured budget (the real breaker is a quarter of what the config says): the
    allocations are within the configured budget, the real breaker still trips."""
    pdu = PduModel([c.ceiling_w for c in setup.components], setup.policy.breaker_w / 4)
    res = run_mode("reactive", _demand(day, setup), day.start_unix, day.rate_hz, setup, pdu)
    assert res.breaker_trips == 1 and pdu.tripped
    assert res.steps < len(_demand(day, setup))
    assert res.budget_violations == 0


def test_proactive_needs_forecasts(day, setup):
    with pytest.raises(ValueError, match="proactive mode needs forecasts"):
        run_mode("proactive", _demand(day, setup), day.start_unix, day.rate_hz, setup,
                 _pdu(setup))
