"""Where a rack's actuator takes its budget from (no rclpy): its own configuration, or a power
coordinator's grants held under a lease (docs/room.md).

With `budget.source: coordinator` the rack allocates min(lease budget, its own rating): the
newest grant while the coordinator talks, at most its guaranteed share from half a lease of
silence on, exactly its guaranteed share from a whole lease on (`core/room/lease.py`). The
static split and the write on the way out fit the guaranteed share, so a rack left alone
never holds more than the room counts on. Each control step the rack reports its demand
(`RackDemand`) and acknowledges the newest grant once what its devices hold (unknown values
counted at the ceiling) fits within it: only then may the coordinator give that power to
another rack.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation import QUANTILES, ForecastView, PolicyConfig
from rackpower_nodes.core.allocation.forecast import forecast_peak
from rackpower_nodes.core.params import ParamSpec, param
from rackpower_nodes.core.room import (
    BudgetLease, RackDemand, RackGrant, committed_w, rack_demand)

BUDGET_SOURCE_CHOICES = ("config", "coordinator")
ACK_TOLERANCE_W = 0.01       # float32 register rounding of what the devices hold, W

BUDGET_PARAMETERS: tuple[ParamSpec, ...] = (
    param("budget.source", "config", "string",
          "Where the budget comes from: config (breaker x derating) or coordinator (a "
          "power_coordinator's grants on rack_budget, never above breaker x derating)",
          choices=BUDGET_SOURCE_CHOICES),
    param("budget.guaranteed_w", 0.0, "double",
          "With budget.source coordinator: the rack's guaranteed share, the budget it falls "
          "back to when the coordinator is silent, W (at least the sum of the floors, at "
          "most breaker x derating; the power tree's value for this rack)", (0.0, 1e7)),
    param("coordinator.rack_id", "", "string",
          "With budget.source coordinator: this rack's id in the power tree; '' = the "
          "node's namespace without '/'"),
)


@dataclass(frozen=True)
class BudgetSettings:
    source: str = "config"
    guaranteed_w: float = math.nan      # W, coordinator only
    rack_id: str = ""                   # '' = the node's namespace

    @property
    def coordinated(self) -> bool:
        return self.source == "coordinator"


def budget_settings_from(v: dict, budget_w: float, floors_w: float,
                         errors: list[str]) -> BudgetSettings:
    """The budget settings of checked parameter values `v` (see BUDGET_PARAMETERS), with
    every problem appended to `errors`; `budget_w`: breaker x derating, `floors_w`: the sum
    of the floors, W."""
    source = v.get("budget.source", "config")
    rack_id = str(v.get("coordinator.rack_id", "")).strip("/")
    if source != "coordinator":
        return BudgetSettings(source, math.nan, rack_id)
    guaranteed = float(v.get("budget.guaranteed_w", 0.0))
    if guaranteed <= 0.0:
        errors.append("budget.guaranteed_w: missing; expected the rack's guaranteed share, W "
                      "(required with budget.source coordinator)")
    elif guaranteed < floors_w - 1e-9:
        errors.append(f"budget.guaranteed_w = {guaranteed:g}: below the sum of the floors "
                      f"components.floor_w = {floors_w:g} W (the rack could not keep its idle "
                      "power on its own)")
    elif guaranteed > budget_w + 1e-9:
        errors.append(f"budget.guaranteed_w = {guaranteed:g}: above the rack budget "
                      f"budget.breaker_a x budget.voltage_v x budget.derating = {budget_w:g} W")
    return BudgetSettings(source, guaranteed, rack_id)


def forecast_totals(forecast: ForecastView | None, t_unix: float,
                    policy: PolicyConfig) -> dict[str, float]:
    """{quantile: W} for RackDemand.total_w: the components' forecasts of each quantile summed
    step by step, the highest step over the actuation window [t_unix + lead_s, + window_s].
    A sum of quantiles, not the quantile of the sum (that would need the components' joint
    distribution). {} without a forecast; a step where a component is unknown is skipped, a
    quantile with no step left is left out."""
    if forecast is None:
        return {}
    out = {}
    total = {q: np.sum(forecast.quantile_w(q), axis=0, keepdims=True) for q in QUANTILES}
    view = ForecastView(forecast.t_unix, forecast.step_s, total["p50"], total["p90"],
                        total["p99"])
    for q in QUANTILES:
        peak = float(forecast_peak(view, t_unix, policy, q)[0])
        if math.isfinite(peak):
            out[q] = peak
    return out


class RackBudgetKeeper:
    """A rack's budget from its coordinator: the lease on the newest grant, the
    acknowledgement and the demand summary. Times `now_s` are monotonic, s; powers W."""

    def __init__(self, rack: str, rating_w: float, guaranteed_w: float):
        self.rack = rack
        self.rating_w = float(rating_w)
        self.guaranteed_w = float(guaranteed_w)
        self.lease = BudgetLease(self.rating_w, self.guaranteed_w)
        self.newest: RackGrant | None = None
        self.acked_seq = 0
        self.acked_budget_w = math.nan
        self.start_cap_w = self.guaranteed_w    # until the first grant (hold_at_start)
        self._said: str | None = None

    def on_grant(self, grant: RackGrant, now_s: float) -> str:
        """Take a grant addressed to this rack: '' when taken, else why it was ignored (for
        another rack; late: a seq below the newest one's, or the same seq once its lease has
        started to lapse, see `BudgetLease`). ValueError for a grant without a budget or a
        lease."""
        if grant.rack != self.rack:
            return f"rack_budget for rack {grant.rack!r} ignored: this is rack {self.rack!r}"
        if not self.lease.on_grant(grant, now_s):
            return (f"grant {grant.seq} from {grant.coordinator or 'the coordinator'} ignored: "
                    f"not newer than grant {self.newest.seq} (a lower seq is late; the same "
                    "seq no longer renews a lease that has started to lapse: only a new one "
                    "brings the rack back)")
        self.newest = grant
        return ""

    def hold_at_start(self, held_w: np.ndarray, floor_w: np.ndarray,
                      ceiling_w: np.ndarray) -> None:
        """Until the first grant, allocate no more than the devices hold now (what a previous
        run of this rack left, which a running coordinator still counts on), at least the
        floors, at most the guaranteed share; W per component in."""
        held = committed_w(held_w, ceiling_w)
        self.start_cap_w = min(self.guaranteed_w, max(float(np.sum(floor_w)), held))

    def budget_w(self, now_s: float) -> float:
        """The budget in force: min(the lease's, the rack's own rating), W; before any grant
        at most `start_cap_w`."""
        budget = min(float(self.lease.budget_w(now_s)), self.rating_w)
        return budget if self.newest is not None else min(budget, self.start_cap_w)

    def source(self, now_s: float) -> str:
        return self.lease.source(now_s)

    def source_change(self, now_s: float) -> str:
        """'' or, when the source changed since the last call, what changed (for the log)."""
        source = self.source(now_s)
        before, self._said = self._said, source
        if before is None or before == source:
            return ""
        return f"budget source {before} -> {source}: {self.budget_w(now_s):.0f} W"

    def acknowledge(self, held_w: np.ndarray, ceiling_w: np.ndarray) -> None:
        """Acknowledge the newest grant once what the devices hold fits within it."""
        grant = self.newest
        if grant is None or grant.seq == self.acked_seq:
            return
        if committed_w(held_w, ceiling_w) <= grant.budget_w + ACK_TOLERANCE_W:
            self.acked_seq, self.acked_budget_w = grant.seq, float(grant.budget_w)

    def demand(self, stamp_unix: float, window_s: float, priority: Sequence[int],
               floor_w: Sequence[float], demand_w: Sequence[float], now_s: float,
               total_w: dict[str, float] | None = None) -> RackDemand:
        """The rack's demand summary (per component in, per class out). Off the
        coordinator's lease (fallback) the rack may fill its budget in force whatever it
        acknowledged, so it reports at least that as acknowledged: a restarted coordinator
        counts it so before it grows anyone."""
        source, acked = self.source(now_s), self.acked_budget_w
        if source != "coordinator":
            acked = self.budget_w(now_s) if math.isnan(acked) else max(acked,
                                                                        self.budget_w(now_s))
        return rack_demand(self.rack, stamp_unix, window_s, priority, floor_w, demand_w,
                           self.rating_w, self.guaranteed_w, total_w=total_w,
                           acked_seq=self.acked_seq,
                           acked_budget_w=acked, budget_source=source)
