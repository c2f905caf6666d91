"""The rack's side of a coordinator's budget: a lease on the newest grant (pure, no rclpy).

A rack holds a grant for its lease, counted from when the rack received it on its own
monotonic clock. If the coordinator goes silent the rack releases in two steps so that the
room is safe at every moment without anyone talking:

- from lease_s / 2 after the newest grant: min(grant, guaranteed share). Racks holding more
  than their guaranteed share shrink first...
- from lease_s on: the guaranteed share. ...and racks below it grow only once every rack has
  shrunk (each received its last grant at about the same time, give or take lease_s / 2).
  The guaranteed shares fit every level (the tree checks it), so the fallback is safe.

Before any grant the rack is on its guaranteed share too (source 'fallback').
"""
from __future__ import annotations

import math

from rackpower_nodes.core.room.types import RackGrant


class BudgetLease:
    """The budget (W) a rack may allocate now, from the coordinator's grants.

    `on_grant(grant, now_s)` takes a grant (`now_s`: the rack's monotonic clock, s). One with
    a higher seq replaces the one held; the same seq renews the lease while it holds in full
    (the coordinator re-issues its grants every period), but not once it has started to lapse:
    the coordinator may have counted that grant as gone when the rack said 'fallback', so only
    a new seq brings the rack back. A lower seq is late and ignored (a restarted coordinator
    numbers on from the seq the rack acknowledges, `ShrinkFirst`). A grant above
    the rack's rating is clamped to it and counted in `clamped`, so the node can say so; NaN
    or negative budgets are rejected (ValueError). `budget_w(now_s)` and `source(now_s)` give
    the budget and one of BUDGET_SOURCES: 'coordinator' while the grant holds in full,
    'fallback' otherwise.
    """

    def __init__(self, rating_w: float, guaranteed_w: float):
        if not (math.isfinite(rating_w) and rating_w > 0):
            raise ValueError(f"rating_w = {rating_w!r}: expected a finite number > 0 (W)")
        if not (math.isfinite(guaranteed_w) and 0 <= guaranteed_w <= rating_w):
            raise ValueError(f"guaranteed_w = {guaranteed_w!r}: expected a number in 0 .. "
                             f"rating_w = {rating_w!r} (W)")
        self.rating_w = float(rating_w)
        self.guaranteed_w = float(guaranteed_w)
        self.grant: RackGrant | None = None
        self.budget_granted_w = math.nan
        self.received_s = math.nan
        self.clamped = 0

    @property
    def seq(self) -> int:
        """The seq of the newest grant taken (0 before any)."""
        return 0 if self.grant is None else int(self.grant.seq)

    def on_grant(self, grant: RackGrant, now_s: float) -> bool:
        """Take `grant`, received at `now_s`; False when it is ignored (see the class)."""
        budget, lease = float(grant.budget_w), float(grant.lease_s)
        if math.isnan(budget) or budget < 0:
            raise ValueError(f"grant {grant.seq} for {grant.rack!r}: budget_w = {budget!r}: "
                             "expected a number >= 0 (W)")
        if not (math.isfinite(lease) and lease > 0):
            raise ValueError(f"grant {grant.seq} for {grant.rack!r}: lease_s = {lease!r}: "
                             "expected a finite number > 0 (s)")
        if self.grant is not None and (grant.seq < self.grant.seq or (
                grant.seq == self.grant.seq and self._stage(now_s) > 0)):
            return False
        if budget > self.rating_w:
            self.clamped += 1
            budget = self.rating_w
        self.grant, self.budget_granted_w, self.received_s = grant, budget, float(now_s)
        return True

    def _stage(self, now_s: float) -> int:
        """0: the grant holds in full, 1: shrunk to the guaranteed share, 2: fallback."""
        if self.grant is None:
            return 2
        age = now_s - self.received_s
        lease = float(self.grant.lease_s)
        return 0 if age < lease / 2 else (1 if age < lease else 2)

    def budget_w(self, now_s: float) -> float:
        """The budget now (W); see the module docstring."""
        stage = self._stage(now_s)
        if stage == 0:
            return self.budget_granted_w
        if stage == 1:
            return min(self.budget_granted_w, self.guaranteed_w)
        return self.guaranteed_w

    def source(self, now_s: float) -> str:
        """'coordinator' while the newest grant holds in full, 'fallback' otherwise."""
        return "coordinator" if self._stage(now_s) == 0 else "fallback"

    def expires_s(self) -> float:
        """When (rack clock, s) the lease ends and the rack falls back (NaN before a grant)."""
        return math.nan if self.grant is None else self.received_s + float(self.grant.lease_s)
