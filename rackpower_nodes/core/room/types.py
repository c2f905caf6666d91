"""The shapes shared by the room's power coordination (pure: no rclpy, no sim).

A room is a power tree: the room (or a feed, a UPS) at the top, rows below it, racks as the
leaves. Every level has a continuous rating (its breaker x derating, W); a rack also has a
guaranteed share, the budget it falls back to when its coordinator goes silent. The sums of the
guaranteed shares under every level fit that level's rating, so the fallback is safe without
anyone talking.

Each rack sends a `RackDemand` (msg/RackDemand.msg); the coordinator divides each level's
rating among the racks below it in global priority order (`divide`), then releases the new
budgets shrink-first (`ShrinkFirst`) as `RackGrant`s (msg/RackBudget.msg); a rack holds a grant
for its lease and falls back to its guaranteed share after it (`BudgetLease`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

BUDGET_SOURCES = ("coordinator", "fallback", "config")


@dataclass(frozen=True)
class RackDemand:
    """One rack's demand summary and its acknowledgement of the newest grant.

    `priority` lists the rack's priority classes, descending (higher keeps its power longer);
    `floor_w[k]` is the sum of the floors (idle power) of class `priority[k]`, `demand_w[k]`
    what that class asks for over the window (>= floor). `total_w` maps a quantile name (p50,
    p90, p99) to the rack total over the window. `rating_w` is the rack's own continuous
    budget; `acked_seq`/`acked_budget_w` what the rack confirms it has applied: the devices
    hold allocations that fit within `acked_budget_w` (0/NaN before any grant).
    """

    rack: str
    stamp_unix: float
    window_s: float
    priority: tuple[int, ...]
    floor_w: tuple[float, ...]
    demand_w: tuple[float, ...]
    rating_w: float
    guaranteed_w: float
    total_w: dict[str, float] = field(default_factory=dict)
    acked_seq: int = 0
    acked_budget_w: float = math.nan
    budget_source: str = "config"

    @property
    def total_floor_w(self) -> float:
        return float(sum(self.floor_w))

    @property
    def total_demand_w(self) -> float:
        return float(sum(self.demand_w))


@dataclass(frozen=True)
class RackGrant:
    """What a coordinator grants one rack: `budget_w` now, `target_w` once the shrinks it
    waits for are acknowledged, valid `lease_s` after the rack receives it."""

    rack: str
    seq: int
    budget_w: float
    target_w: float
    lease_s: float
    coordinator: str = ""
