"""What the allocation core's tests share: the hypothesis settings of their property tests,
the budget checks an allocation must pass, and a two-component rack with flat forecasts.

- `PROPERTY`: 1000 examples, no deadline;
- `sums`, `fits`: the float64 sums a reader of an allocation might compute, and whether every
  one of them stays within a budget (W);
- `rack`, `flat`: a gpu + cpu `AllocationController` and a `ForecastView` with the same value
  (W) at every step.
"""
from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, settings

from rackpower_nodes.core.allocation import (
    AllocationController, Component, ForecastView, PolicyConfig)

__all__ = ["PROPERTY", "fits", "flat", "rack", "sums"]

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

