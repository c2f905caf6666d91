"""Step response: how fast a throttled component's allocation catches its new demand.

Through the same loop as the day-long evaluation (controller -> actuation delay -> simulated
PDU serving min(demand, allocation in force) -> measured), on a small rack with a budget that
allows the step, and on one where it does not. The full table (step sizes x modes x delays)
is benchmarks/bench_step_response.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from rackpower_nodes.core.allocation import Component, PolicyConfig
from rackpower_nodes.core.step_response import RATE_HZ, run_step, step_demand
from rackpower_nodes.sim.pdu import PduModel

STEP_AT_S, RUN_S = 10.0, 30.0
COMPONENTS = (Component("gpu", 50.0, 800.0, priority=3),
              Component("cpu", 50.0, 800.0, priority=1),
              Component("disk", 20.0, 400.0, priority=2),
              Component("nic", 20.0, 400.0, priority=2))


def _run(mode, delay_s, breaker_w, stepping, before=60.0, after=200.0, others=100.0, **kw):
    policy = PolicyConfig(breaker_w=breaker_w, lead_s=1.0, window_s=1.0)
    demand = step_demand(len(COMPONENTS), stepping, before, after, others, STEP_AT_S, RUN_S)
    ceilings = np.array([c.ceiling_w for c in COMPONENTS])
    return [run_step(mode, COMPONENTS, policy, demand, i, STEP_AT_S, delay_s,
                     lambda: PduModel(ceilings, breaker_w=breaker_w), **kw)[0]
            for i in stepping]


@pytest.mark.parametrize("mode", ["reactive", "proactive"])
@pytest.mark.parametrize("delay_s", [0.5, 1.0, 2.0])
def test_a_60_to_200_w_step_is_covered_within_two_actuation_delays(mode, delay_s):
    (res,) = _run(mode, delay_s, 10_000.0, [0])
    assert res.before_w == 60.0 and res.after_w == 200.0
    assert res.time_to_cover_s <= 2 * delay_s, res.time_to_cover_s


@pytest.mark.parametrize("mode", ["reactive", "proactive"])
def test_through_bmc_caps_whole_watts_and_a_dead_band(mode):
    """The BMC writes whole watts and skips changes under its 5 W dead band."""
    n = len(COMPONENTS)
    (res,) = _run(mode, 1.0, 10_000.0, [0], dead_band_w=np.full(n, 5.0),
                  resolution_w=np.ones(n))
    assert res.time_to_cover_s <= 2.0, res.time_to_cover_s


def test_with_register_writes_the_control_period_bounds_the_recovery():
    """PDU registers take effect within 0.1 s, the control period: the hold that tells a
    throttled component from noise (0.2 s) and two periods of measurement dominate."""
    (res,) = _run("reactive", 0.1, 10_000.0, [0])
    assert res.time_to_cover_s <= 0.5, res.time_to_cover_s


def test_priorities_decide_who_waits_when_the_budget_does_not_allow_both():
    """gpu (priority 3) and cpu (priority 1) step from 60 to 300 W together; the budget
    (640 W) covers the others' 200 W and only one of them: the gpu is covered (doubling its
    draw per delay, there is no slack to take more), the cpu waits, held below its demand,
    and loses the energy."""
    gpu, cpu = _run("reactive", 1.0, 800.0, [0, 1], after=300.0)
    assert gpu.time_to_cover_s <= 3.0, gpu.time_to_cover_s
    assert math.isinf(cpu.time_to_cover_s)
    assert cpu.energy_lost_j > 5 * gpu.energy_lost_j
    k = int(RATE_HZ * (STEP_AT_S + 3.0))
    assert np.all(gpu.allocated_w[k:] >= 300.0)
    assert np.all(cpu.allocated_w[k:] < 300.0)
