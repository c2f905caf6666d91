"""One power coordinator's period, without ROS: the newest demand of every rack in, a grant
per rack out (the `power_coordinator` node wires it to DDS).

Every period the level's rating is divided among its racks in global priority order
(`core/room/divide.py`), and the new budgets are released shrink-first
(`core/room/handshake.py`): a rack grows only once the racks that must shrink for it have
acknowledged their smaller budget. A rack whose newest demand is older than `demand_stale_s`
(or that was never heard) is counted at its guaranteed share, all of it kept: it falls back
to that share by itself when its lease runs out, and may use all of it. When the division
fails (the floors do not fit the rating), the previous targets are kept (the guaranteed
shares before any success) and the failure is reported.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rackpower_nodes.core.room import RackDemand, RackGrant, ShrinkFirst, divide

GUARANTEED_TOL_W = 0.5       # a rack's guaranteed share may differ from the tree's this much, W


@dataclass(frozen=True)
class Period:
    """What one period decided: the grants to publish, the targets they head for (W), the
    racks counted as silent, the division's failure ('' when it worked), and each rack's
    committed power as the shrink-first release counts it (W)."""

    grants: dict[str, RackGrant]
    targets: dict[str, float]
    stale: frozenset[str]
    error: str = ""
    committed_w: dict[str, float] = field(default_factory=dict)


class RoomCoordinator:
    """Divides `tree`'s rating at one level among `racks` every period; times are monotonic
    seconds, powers W."""

    def __init__(self, tree, racks: Sequence[str], name: str, lease_s: float,
                 demand_stale_s: float):
        self.tree = tree
        self.racks = tuple(racks)
        self.name = name
        self.lease_s = float(lease_s)
        self.demand_stale_s = float(demand_stale_s)
        self.shrink = ShrinkFirst(tree, self.lease_s, name, stale_s=self.demand_stale_s)
        self.demands: dict[str, RackDemand] = {}
        self.received: dict[str, float] = {}
        self.targets: dict[str, float] = {r: self.guaranteed_w(r) for r in self.racks}

    def guaranteed_w(self, rack: str) -> float:
        return float(self.tree.racks[rack].guaranteed_w)

    def on_demand(self, demand: RackDemand, now_s: float) -> str:
        """Keep `demand` as its rack's newest: '', or why it was ignored (a rack not served,
        a malformed summary: one rack's bad message must not stop the whole division)."""
        why = _malformed(demand)
        if demand.rack not in self.racks:
            why = f"not a rack below {self.name} ({', '.join(self.racks)})"
        if why:
            return f"rack_demand of rack {demand.rack!r} ignored: {why}"
        self.demands[demand.rack] = demand
        self.received[demand.rack] = now_s
        return self.mismatch(demand.rack)

    def mismatch(self, rack: str) -> str:
        """'' or what the rack's own configuration says against the tree: a guaranteed share
        above the tree's would overload a level when everyone falls back (the tree's is the
        one counted; the rack must be configured with it)."""
        d = self.demands.get(rack)
        tree_g = self.guaranteed_w(rack)
        if d is None or abs(d.guaranteed_w - tree_g) <= GUARANTEED_TOL_W:
            return ""
        return (f"rack {rack} is configured with budget.guaranteed_w = {d.guaranteed_w:g} W, "
                f"the power tree gives it {tree_g:g} W: set the rack's to the tree's"
                + (" (above it, its fallback can overload a level)"
                   if d.guaranteed_w > tree_g else ""))

    def silent(self, now_s: float) -> frozenset[str]:
        return frozenset(r for r in self.racks
                         if now_s - self.received.get(r, -math.inf) > self.demand_stale_s)

    def period(self, now_s: float) -> Period:
        """Divide, release shrink-first, and say what was decided."""
        stale = self.silent(now_s)
        # a silent rack is left out: divide holds it at its guaranteed share, all of it used
        fresh = {r: d for r, d in self.demands.items() if r not in stale}
        error = ""
        try:
            self.targets = {r: float(w) for r, w in divide(self.tree, fresh).budget_w.items()
                            if r in self.racks}
        except ValueError as exc:
            error = f"division failed, previous budgets kept: {exc}"
        # a silent rack's last word (its acknowledgement) is still the best known
        grants = self.shrink.update(self.targets, self.demands, now_s)
        return Period(grants=dict(grants), targets=dict(self.targets), stale=stale,
                      error=error, committed_w=self.shrink.committed_w())



def _malformed(d: RackDemand) -> str:
    """Why a demand summary cannot be divided ('' when it can)."""
    n = len(d.priority)
    if len(d.floor_w) != n or len(d.demand_w) != n:
        return (f"priority, floor_w and demand_w have {n}, {len(d.floor_w)} and "
                f"{len(d.demand_w)} values: expected one per class")
    if any(not (math.isfinite(f) and f >= 0) for f in d.floor_w):
        return f"floor_w = {list(d.floor_w)}: expected finite values >= 0 W"
    if any(math.isinf(w) for w in d.demand_w):
        return f"demand_w = {list(d.demand_w)}: expected finite values (W)"
    return ""
