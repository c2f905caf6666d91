"""Side-by-side evaluation of the allocation modes on one simulated day (fast mode, no ROS).

Each mode runs the same loop the live graph runs, at the simulator's rate (10 Hz):

1. the controller (`core/allocation/`) computes an allocation from the newest measured power
   and, in proactive mode, the newest forecast;
2. the allocation reaches the hardware `delay_s` later, per component (PDU outlet registers
   take effect in about 0.1 s, BMC power caps in 0.5-2 s), as the PDU link writes it:
   where components are capped through BMCs (`dead_band_w`, `resolution_w`), changes under
   the dead band are not written and limits are whole watts rounded down, shrinks first
   and growth within the budget (`core/actuation.py`);
3. the simulated PDU (`sim/pdu/`) serves each component min(demand, allocation in force),
   counts the energy throttled away and runs the breaker's trip curve;
4. what the PDU served is what the sensor measures: the next step's measured power, and the
   forecaster's input (the live `ForecastService`: the same windows, model and fallback).

Demand is the simulator's unthrottled power. Work throttled away is counted as lost, not
replayed later (a conservative simplification: real throttled work finishes later, as more
demand).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rackpower_nodes.core.actuation import settle
from rackpower_nodes.core.allocation import (
    AllocationController, Component, ForecastView, PolicyConfig)

_log = logging.getLogger(__name__)

VIOLATION_TOL_W = 1e-6
TRACE_EVERY = 10                 # keep one step in ten for plots
# a component-step counts as under-allocated when its demand exceeds the allocation in force
# by more than max(UNDER_TOL_FRAC x demand, UNDER_TOL_W): a shortfall of a few mW is not an
# under-allocation an operator would see (energy counts every shortfall)
UNDER_TOL_FRAC = 0.01
UNDER_TOL_W = 2.0


@dataclass
class ModeResult:
    """What one mode did over the run; energies in Wh, powers in W."""

    mode: str
    steps: int
    seconds: float
    under_energy_wh: float = 0.0     # energy demanded above the allocation (throttled away)
    demand_energy_wh: float = 0.0
    stranded_w: list[float] = field(default_factory=list, repr=False)  # per step, rack
    breaker_trips: int = 0
    budget_violations: int = 0       # steps whose allocations broke the budget or a ceiling
    corrections: int = 0
    safe_steps: int = 0
    forecasts: int = 0
    fallback_forecasts: int = 0
    wall_s: float = 0.0
    trace: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    under_steps_by_component: np.ndarray | None = field(default=None, repr=False)
    under_steps_by_hour: np.ndarray | None = field(default=None, repr=False)

    @property
    def under_steps(self) -> int:
        """Component-steps with demand above the allocation in force by more than the
        tolerance (UNDER_TOL_FRAC, UNDER_TOL_W)."""
        c = self.under_steps_by_component
        return 0 if c is None else int(c.sum())

    @property
    def n_components(self) -> int:
        return len(self.trace.get("allocated_w", np.zeros((0, 0)))[0]) if self.trace else 0

    def row(self, n_components: int) -> dict[str, float]:
        stranded = np.asarray(self.stranded_w)
        comp_steps = max(self.steps * n_components, 1)
        return {
            "mode": self.mode,
            "under_alloc_pct": 100.0 * self.under_steps / comp_steps,
            "under_alloc_comp_h": self.under_steps * (self.seconds / max(self.steps, 1))
            / 3600.0,
            "under_alloc_wh": self.under_energy_wh,
            "perf_lost_pct": 100.0 * self.under_energy_wh / max(self.demand_energy_wh, 1e-9),
            "stranded_mean_w": float(stranded.mean()) if stranded.size else math.nan,
            "stranded_p95_w": float(np.percentile(stranded, 95)) if stranded.size else math.nan,
            "breaker_trips": self.breaker_trips,
            "budget_violations": self.budget_violations,
            "corrections": self.corrections,
            "safe_pct": 100.0 * self.safe_steps / max(self.steps, 1),
        }


@dataclass(frozen=True)
class EvalSetup:
    """The rack as the actuator sees it, and the loop's timing."""

    components: tuple[Component, ...]
    policy: PolicyConfig
    delay_s: float | Sequence[float] = 1.0   # written -> in force, s: one, or per component
    forecast_every_s: float = 0.5    # how often the forecaster runs (the live one: 0.1 s)
    dead_band_w: np.ndarray | None = None    # per component; None = every change written
    resolution_w: np.ndarray | None = None   # per component; None = exact values


def bmc_actuation(cap_urls: Sequence[str], min_change_w: float
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(dead band, resolution) per component for `EvalSetup`: whole watts and the dead band
    where a component has a BMC power cap URL; (None, None) when none has."""
    capped = np.array([bool(u) for u in cap_urls])
    if not capped.any():
        return None, None
    return np.where(capped, float(min_change_w), 0.0), np.where(capped, 1.0, 0.0)


class Forecasts:
    """Feeds a ForecastService with what the PDU served and asks it for forecasts.

    Args:
        service: a ForecastService for `names` (in the controller's order).
        telemetry: per component (steps, 6) host telemetry at the step rate, or None.
        events_at: the scheduler's snapshot at a time (``JobLog.events_at``), pushed to the
            service before each forecast as the predictor node does; None: no scheduler.
    """

    def __init__(self, service, names: Sequence[str], telemetry: np.ndarray | None,
                 start_unix: float, rate_hz: float, events_at=None):
        self.service, self.names = service, list(names)
        self.telemetry = telemetry
        self.events_at = events_at
        self.start_unix, self.rate_hz = start_unix, rate_hz
        self._pushed = 0
        self._tele_every = max(int(round(rate_hz)), 1)

    def push(self, served_w: np.ndarray, upto: int) -> None:
        """Push steps [pushed, upto) of `served_w` (steps, components)."""
        a = self._pushed
        if upto <= a:
            return
        t0 = self.start_unix + a / self.rate_hz
        svc = self.service
        svc.push_power_block(t0, 1.0 / self.rate_hz, self.names, served_w[a:upto].T)
        if self.telemetry is not None:
            first = -(-a // self._tele_every) * self._tele_every
            for k in range(first, upto, self._tele_every):
                t = self.start_unix + k / self.rate_hz
                for i, name in enumerate(self.names):
                    svc.push_telemetry(t, name, self.telemetry[i, k])
        self._pushed = upto

    def forecast(self, t_unix: float) -> tuple[ForecastView, bool]:
        if self.events_at is not None:
            self.service.push_workload_events(self.events_at(t_unix))
        fc = self.service.forecast(t_unix)
        view = ForecastView(fc.t_unix, fc.step_s, fc.p50_w, fc.p90_w, fc.p99_w,
                            model=f"{fc.model_name} {fc.model_version}",
                            fallback=np.asarray(fc.fallback))
        return view, bool(np.any(fc.fallback))


def delay_steps(delay_s, n: int, rate_hz: float) -> np.ndarray:
    """Per component actuation delay in whole steps (>= 0)."""
    delays = np.broadcast_to(np.asarray(delay_s, dtype=np.float64), (n,))
    if not np.all(np.isfinite(delays)) or np.any(delays < 0):
        raise ValueError(f"delay_s = {delay_s!r}: expected finite delays >= 0, s")
    return np.rint(delays * rate_hz).astype(np.int64)


def run_mode(mode: str, demand_w: np.ndarray, start_unix: float, rate_hz: float,
             setup: EvalSetup, pdu, forecasts: Forecasts | None = None,
             progress: Callable[[int], None] | None = None,
             trace_every: int = TRACE_EVERY, controller: AllocationController | None = None,
             lost_feeds: Callable[[float], frozenset[str]] | None = None) -> ModeResult:
    """Run `mode` over `demand_w` (steps, components) W at `rate_hz`.

    `pdu` is the simulated PDU model (sim/pdu/ `PduModel`) for these components, fresh.
    `forecasts` is needed for proactive mode. The trace keeps one step in `trace_every`.
    `controller`: a fresh controller to run instead of one made from `setup` (e.g. a
    feed-aware one); `lost_feeds(t_unix)`: the feeds the actuator knows lost at each step,
    passed to its `step` (the feed-loss evaluation, sim/feeds/; None: not passed).
    """
    if mode == "proactive" and forecasts is None:
        raise ValueError("proactive mode needs forecasts (a model or the fallback)")
    steps, n = demand_w.shape
    dt = 1.0 / rate_hz
    ctrl = (AllocationController(setup.components, setup.policy, mode) if controller is None
            else controller)
    budget = setup.policy.budget_w
    ceiling = ctrl.ceiling_w
    delay = delay_steps(setup.delay_s, n, rate_hz)
    fc_every = max(int(round(setup.forecast_every_s * rate_hz)), 1)
    # the allocations of the last max(delay) steps: component i gets the one of k - delay[i]
    sent = np.repeat(ctrl.static_allocation()[None, :], int(delay.max()) + 1, axis=0)
    columns = np.arange(n)
    in_force = ctrl.static_allocation()
    exact = setup.dead_band_w is None and setup.resolution_w is None
    dead_band = np.zeros(n) if setup.dead_band_w is None else np.asarray(setup.dead_band_w)
    resolution = np.zeros(n) if setup.resolution_w is None else np.asarray(setup.resolution_w)
    outlets = np.arange(n)
    served_log = np.zeros_like(demand_w, dtype=np.float64)
    measured = np.full(n, np.nan)
    held = np.full(n, np.nan)        # the allocation in force when `measured` was served
    view = None
    res = ModeResult(mode, steps, steps * dt)
    res.stranded_w = np.zeros(steps)
    res.under_steps_by_component = np.zeros(n, np.int64)
    per_hour = int(round(3600 * rate_hz))
    res.under_steps_by_hour = np.zeros(-(-steps // per_hour), np.int64)
    keep = np.arange(0, steps, trace_every)
    trace_alloc = np.zeros((len(keep), n))
    trace_served = np.zeros((len(keep), n))
    began = time.perf_counter()
    for k in range(steps):
        t = start_unix + k * dt
        if forecasts is not None and mode == "proactive" and k % fc_every == 0:
            forecasts.push(served_log, k)
            view, fallback = forecasts.forecast(t)
            res.forecasts += 1
            res.fallback_forecasts += fallback
        extra = {} if lost_feeds is None else {"lost_feeds": lost_feeds(t)}
        decision = ctrl.step(t, measured, view, in_force_w=held, **extra)
        res.corrections += len(decision.corrections)
        res.safe_steps += decision.mode == "safe"
        alloc = np.asarray(decision.allocated_w, dtype=np.float64)
        if (alloc.sum() > budget + VIOLATION_TOL_W or np.any(alloc > ceiling + VIOLATION_TOL_W)
                or np.any(alloc < 0)):
            res.budget_violations += 1
        sent[k % len(sent)] = alloc
        arriving = sent[(k - delay) % len(sent), columns]
        if exact:
            in_force = arriving
        else:
            in_force = settle(in_force, arriving, dead_band, resolution, budget)
        pdu.set_allocations(outlets, in_force)
        served = pdu.apply(demand_w[k], dt)
        served_log[k] = served
        measured = np.asarray(served, dtype=np.float64)
        held = in_force.copy()
        short = demand_w[k] - in_force
        under = short > np.maximum(UNDER_TOL_FRAC * demand_w[k], UNDER_TOL_W)
        res.under_steps_by_component += under
        res.under_steps_by_hour[k // per_hour] += int(np.count_nonzero(under))
        res.under_energy_wh += float(np.clip(short, 0.0, None).sum()) * dt / 3600.0
        res.demand_energy_wh += float(demand_w[k].sum()) * dt / 3600.0
        res.stranded_w[k] = in_force.sum() - measured.sum()
        if k % trace_every == 0:
            trace_alloc[k // trace_every] = in_force
            trace_served[k // trace_every] = served
        if progress is not None and k % 36000 == 0:
            progress(k)
        if pdu.tripped:
            _log.warning("%s: breaker tripped at step %d: the run ends here", mode, k)
            res.steps = k + 1
            res.seconds = res.steps * dt
            res.stranded_w = res.stranded_w[:k + 1]
            break
    res.breaker_trips = int(pdu.trips)
    res.wall_s = time.perf_counter() - began
    res.trace = {"t_s": keep * dt, "allocated_w": trace_alloc, "served_w": trace_served,
                 "demand_w": demand_w[keep]}
    return res


def format_table(results: Sequence[ModeResult], n_components: int) -> str:
    """A markdown table, one row per mode."""
    cols = [("mode", "mode", "{}"), ("under_alloc_pct", "under-alloc time %", "{:.3f}"),
            ("under_alloc_comp_h", "under-alloc comp-h", "{:.3f}"),
            ("under_alloc_wh", "under-alloc Wh", "{:.1f}"),
            ("perf_lost_pct", "perf lost %", "{:.4f}"),
            ("stranded_mean_w", "stranded mean W", "{:.0f}"),
            ("stranded_p95_w", "stranded p95 W", "{:.0f}"),
            ("breaker_trips", "breaker trips", "{}"),
            ("budget_violations", "budget violations", "{}"),
            ("corrections", "corrections", "{}"), ("safe_pct", "safe %", "{:.2f}")]
    lines = ["| " + " | ".join(c[1] for c in cols) + " |",
             "|" + "---|" * len(cols)]
    for r in results:
        row = r.row(n_components)
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |")
    return "\n".join(lines)
