"""Feed loss in fast mode: the real controller run against `FeedRack` through a loss.

Each case runs the evaluation loop of core/evaluation.py (`run_mode`: the controller, the
per-component actuation delay, what the rack served measured back) with `FeedRack` as the
simulated hardware, a feed failing at `loss_at_s` and restored `loss_s` later:

- ``feed-aware``: the controller with the rack's `FeedPlan` (core/allocation/feeds.py): per
  feed budgets in normal operation, the contingency allocation of each feed computed ahead
  every cycle and applied once the actuator sees the loss (`detect_s` after it; the caps
  then take the actuation delay to act);
- ``no contingency``: the same feed-aware controller never told of the loss (the
  counterfactual: what the contingency caps prevent);
- ``plain budget``: the controller without feeds, one rack budget (the policy's); when the
  actuator sees the loss its budget drops to the survivors' budgets from that cycle on, and
  the caps it then computes take the same actuation delay;
- ``no capping``: every component allowed its ceiling, nothing capped.

Times in s, powers in W, energies in J.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation import AllocationController, Decision
from rackpower_nodes.core.allocation.feeds import FeedPlan, tolerated_multiple
from rackpower_nodes.core.allocation.forecast import _frozen_array
from rackpower_nodes.core.evaluation import EvalSetup, Forecasts, ModeResult, run_mode
from rackpower_nodes.sim.feeds.config import FeedConfig
from rackpower_nodes.sim.feeds.model import FeedRack

__all__ = ["CASES", "LossRun", "NoCapping", "PlainBudget", "feed_plan", "make_controller",
           "run_case"]

CASES = ("feed-aware", "no contingency", "plain budget", "no capping")


def feed_plan(feeds: FeedConfig, cap_time_s: float) -> FeedPlan:
    """The controller's plan of `feeds` (in its component order): the configured split,
    the budgets, and the overload a survivor carries for `cap_time_s` on the trip curve."""
    multiple = tolerated_multiple(cap_time_s, feeds.thermal_constant_s, feeds.magnetic_multiple)
    return FeedPlan(feeds.names, feeds.breaker_w, feeds.budget_w, feeds.split, multiple,
                    cap_time_s)


class PlainBudget(AllocationController):
    """The controller without feeds: one rack budget; once the actuator reports feeds lost,
    the budget is the survivors' budgets (W, `feed_budget_w` by feed name), back to the
    policy's when they return."""

    def __init__(self, components, cfg, mode: str, feed_budget_w: Mapping[str, float]):
        super().__init__(components, cfg, mode)
        self._normal_w = float(cfg.budget_w)
        self._feed_budget_w = dict(feed_budget_w)

    def step(self, *args, lost_feeds: frozenset[str] = frozenset(), **kwargs) -> Decision:
        left = sum(w for name, w in self._feed_budget_w.items() if name not in lost_feeds)
        self.set_budget(min(self._normal_w, left) if lost_feeds and left > 0
                        else self._normal_w)
        return super().step(*args, **kwargs)


class NoCapping:
    """Every component allowed its ceiling (W) at every step: no controller at all."""

    def __init__(self, components):
        self.ceiling_w = _frozen_array([c.ceiling_w for c in components])

    def static_allocation(self) -> np.ndarray:
        return self.ceiling_w.copy()

    def step(self, t_unix: float, *args, **kwargs) -> Decision:
        nan = _frozen_array(np.full(self.ceiling_w.size, np.nan))
        return Decision(t_unix, "none", "no capping", self.ceiling_w, nan, self.ceiling_w, ())


def make_controller(case: str, setup: EvalSetup, mode: str, plan: FeedPlan):
    """(controller, tells it the lost feeds) for `case` (one of CASES)."""
    if case in ("feed-aware", "no contingency"):
        ctrl = AllocationController(setup.components, setup.policy, mode, feeds=plan)
        return ctrl, case == "feed-aware"
    if case == "plain budget":
        budgets = dict(zip(plan.names, plan.budget_w.tolist()))
        return PlainBudget(setup.components, setup.policy, mode, budgets), True
    if case == "no capping":
        return NoCapping(setup.components), False
    raise ValueError(f"case = {case!r}: expected one of {', '.join(CASES)}")


@dataclass
class LossRun:
    """One case over one window: the loop's result and the feed rack's counters."""

    case: str
    result: ModeResult
    stats: dict
    priority: np.ndarray

    def loss(self) -> dict | None:
        """The scheduled loss (the first event caused by a failure), None without one."""
        return next((e for e in self.stats["events"] if e["cause"] == "lost"), None)

    def summary(self) -> dict:
        """The loss in numbers (a survivor's worst when there are several)."""
        event = self.loss()
        prios = sorted(set(self.priority.tolist()), reverse=True)
        total = np.asarray(self.stats["throttled_by_component_j"])
        out = {"case": self.case, "trips": self.stats["trips"],
               "ran_s": self.result.seconds, "throttled_j": self.stats["throttled_j"],
               "dark_j": self.stats["dark_j"],
               "safe_pct": 100.0 * self.result.safe_steps / max(self.result.steps, 1),
               "throttled_by_priority_j": {int(p): float(total[self.priority == p].sum())
                                           for p in prios}}
        if event is None:
            return out
        surv = list(event["survivors"].values())
        caps = [s["time_to_cap_s"] for s in surv]
        rated = [s["time_to_rating_s"] for s in surv]
        by_comp = np.asarray(event["throttled_by_component_j"])
        out.update({
            "lost": event["feed"], "survivor_trips": sum(s["trips"] for s in surv),
            "peak_multiple": max(s["peak_multiple"] for s in surv),
            "peak_heat": max(s["peak_heat"] for s in surv),
            "over_rating_s": max(s["over_rating_s"] for s in surv),
            "time_to_cap_s": None if None in caps else max(caps),
            "time_to_rating_s": None if None in rated else max(rated),
            "loss_throttled_j": event["throttled_j"], "loss_dark_j": event["dark_j"],
            "loss_throttled_by_priority_j": {
                int(p): float(by_comp[self.priority == p].sum()) for p in prios}})
        return out


def run_case(case: str, demand_w: np.ndarray, start_unix: float, rate_hz: float,
             setup: EvalSetup, feeds: FeedConfig, plan: FeedPlan, mode: str = "reactive",
             loss: tuple[str, float, float] | None = None, detect_s: float = 0.3,
             forecasts: Forecasts | None = None, hold_s: float = 1.0,
             progress: Callable[[int], None] | None = None) -> LossRun:
    """`case` over `demand_w` (steps, n) W in the controller's order (`feeds` and `plan` in
    it too); `loss`: (feed, lost at s, for s) or None (normal operation)."""
    if not (math.isfinite(detect_s) and detect_s >= 0):
        raise ValueError(f"detect_s = {detect_s!r}: expected a finite number >= 0, s")
    rack = FeedRack(feeds, hold_s=hold_s)
    if loss is not None:
        name, at_s, for_s = loss
        rack.fail_feed(name, at_s)
        rack.restore_feed(name, at_s + for_s)
    ctrl, told = make_controller(case, setup, mode, plan)
    result = run_mode(mode if case != "no capping" else "static", demand_w, start_unix,
                      rate_hz, setup, rack, forecasts if case != "no capping" else None,
                      progress=progress, controller=ctrl,
                      lost_feeds=(lambda _t: rack.lost_seen(detect_s)) if told else None)
    priority = np.array([c.priority for c in setup.components])
    return LossRun(case, result, rack.stats(), priority)


def priorities(components: Sequence) -> list[int]:
    """The priority classes present, highest first."""
    return sorted({int(c.priority) for c in components}, reverse=True)
