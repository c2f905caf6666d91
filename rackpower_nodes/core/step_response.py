"""How fast the allocation catches a step in demand: the step-response experiment.

One component steps from `before_w` to `after_w` while the others hold still; the same loop as
the day-long evaluation (`core/evaluation.py`: controller, actuation delay, simulated PDU that
serves min(demand, allocation in force), measured = served) runs at `rate_hz`, and two figures
come out for the stepping component:

- **time to cover**: from the step until the allocation in force is at or above the demand
  for good (s; inf if never within the run);
- **energy lost**: the demand above the allocation in force, integrated from the step (J).

Proactive mode gets the live forecaster without a model: `ForecastService`'s no-training
fallback (last value plus a quantile margin), the forecast a rack has before its first model.
The simulated PDU comes from the caller (`sim/pdu/`'s `PduModel`: core does not import sim).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation import Component, PolicyConfig
from rackpower_nodes.core.evaluation import EvalSetup, Forecasts, ModeResult, run_mode

RATE_HZ = 10.0                  # the simulator's and the evaluation's step rate
START_UNIX = 1_750_000_000.0    # any fixed time: the fallback forecaster needs no calendar
COVER_TOL_W = 1e-6


@dataclass(frozen=True)
class StepResult:
    """The stepping component's response; times in s, energy in J."""

    mode: str
    delay_s: float
    before_w: float
    after_w: float
    time_to_cover_s: float
    energy_lost_j: float
    allocated_w: np.ndarray          # the stepping component's allocation in force, per step
    demand_w: np.ndarray

    @property
    def delays_to_cover(self) -> float:
        """Time to cover in actuation delays (inf if never covered)."""
        return self.time_to_cover_s / self.delay_s if self.delay_s > 0 else math.nan


def step_demand(n_components: int, stepping: Sequence[int], before_w: float, after_w: float,
                others_w: float, step_at_s: float, run_s: float,
                rate_hz: float = RATE_HZ) -> np.ndarray:
    """(steps, components) demand, W: `stepping` components go from before_w to after_w at
    step_at_s, the others hold others_w."""
    steps = int(round(run_s * rate_hz))
    demand = np.full((steps, n_components), float(others_w))
    k = int(round(step_at_s * rate_hz))
    for i in stepping:
        demand[:k, i] = before_w
        demand[k:, i] = after_w
    return demand


def fallback_forecasts(components: Sequence[Component], rate_hz: float = RATE_HZ
                       ) -> Forecasts:
    """The live forecaster with no model (its fallback), idle = floor, max = ceiling."""
    from rackpower_nodes.core.forecast.serving import ForecastService

    names = [c.id for c in components]
    service = ForecastService(names, [c.floor_w for c in components],
                              [c.ceiling_w for c in components])
    return Forecasts(service, names, None, START_UNIX, rate_hz)


def time_to_cover(allocated_w: np.ndarray, demand_w: np.ndarray, step_k: int,
                  rate_hz: float = RATE_HZ) -> float:
    """Seconds from step `step_k` until the allocation covers the demand for good."""
    short = allocated_w[step_k:] < demand_w[step_k:] - COVER_TOL_W
    if not short.any():
        return 0.0
    last = int(np.flatnonzero(short)[-1])
    if last == len(short) - 1:
        return math.inf
    return (last + 1) / rate_hz


def run_step(mode: str, components: Sequence[Component], policy: PolicyConfig,
             demand_w: np.ndarray, stepping: int, step_at_s: float, delay_s,
             make_pdu: Callable[[], object], rate_hz: float = RATE_HZ,
             dead_band_w: np.ndarray | None = None,
             resolution_w: np.ndarray | None = None) -> tuple[StepResult, ModeResult]:
    """Run `mode` over `demand_w` and measure the response of component `stepping` to its
    step at `step_at_s`; `delay_s` is one delay or one per component (s); `make_pdu()` returns
    a fresh simulated PDU for `components`."""
    setup = EvalSetup(tuple(components), policy, delay_s, forecast_every_s=0.1,
                      dead_band_w=dead_band_w, resolution_w=resolution_w)
    forecasts = fallback_forecasts(components, rate_hz) if mode == "proactive" else None
    res = run_mode(mode, demand_w, START_UNIX, rate_hz, setup, make_pdu(), forecasts,
                   trace_every=1)
    alloc = res.trace["allocated_w"][:, stepping]
    demand = res.trace["demand_w"][:, stepping]
    k = int(round(step_at_s * rate_hz))
    lost_j = float(np.clip(demand[k:] - alloc[k:], 0.0, None).sum()) / rate_hz
    delay = float(np.broadcast_to(np.asarray(delay_s, dtype=float), (len(components),))[
        stepping])
    return StepResult(mode, delay, float(demand[k - 1]), float(demand[k]),
                      time_to_cover(alloc, demand, k, rate_hz), lost_j, alloc, demand), res
