"""The allocation controller's side of redundant feeds: the fill, the contingencies, the loss.

Pure numpy, no rclpy. Powers in W. `FeedGuard` holds a rack's `FeedPlan` for the controller:
every allocation it decides keeps the feed limits (`feed_fill`), each normal decision carries
the contingency for the loss of each feed, computed ahead from that decision's allocation,
and a step that is told a feed is lost applies that contingency at once (a named safe state:
mode `safe`, reason `feed <X> lost`) until the feed is back.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from rackpower_nodes.core.allocation.feeds import (
    FeedPlan, check_feed_plan, contingency_w, feed_fill)
from rackpower_nodes.core.allocation.policy import Component
from rackpower_nodes.core.params import ConfigError


class FeedGuard:
    """A `FeedPlan` checked against the controller's components (same count, floors that
    survive the loss of any feed: ConfigError naming the feed and the numbers otherwise)."""

    def __init__(self, plan: FeedPlan, components: Sequence[Component]):
        if not isinstance(plan, FeedPlan):
            raise ConfigError(f"feeds = {plan!r}: expected a FeedPlan or None")
        if plan.n_components != len(components):
            raise ConfigError(f"feeds: the split has {plan.n_components} rows: expected "
                              f"{len(components)}, one per component in the controller's order")
        errors = check_feed_plan(plan, [c.floor_w for c in components])
        if errors:
            raise ConfigError([f"feeds: {e}" for e in errors])
        self.plan = plan
        # the same feeds with every survivor held to its budget at once after a loss (no
        # overload tolerated): what holds with nobody left to cap
        self.secure = FeedPlan(plan.names, plan.budget_w, plan.budget_w, plan.split, 1.0,
                               plan.cap_time_s)
        self.floor_w = np.array([c.floor_w for c in components])
        self.ceiling_w = np.array([c.ceiling_w for c in components])
        self.priority = np.array([c.priority for c in components], dtype=np.int64)

    def fill(self, demand_w, budget_w: float, lost: Iterable[str] = frozenset(),
             secure: bool = False) -> np.ndarray:
        """`feed_fill` of `demand_w` (W) within `budget_w` (W) and the feed limits; `secure`:
        after losing any feed the survivors stay within their budgets without capping (the
        static split, the safe state the rack is left in when nobody is there to cap)."""
        return feed_fill(demand_w, self.floor_w, self.ceiling_w, self.priority, budget_w,
                         self.secure if secure else self.plan, lost)

    def fill_tiers(self, need_w, want_w, budget_w: float) -> np.ndarray:
        """The controller's two tiers (`water_fill_tiers`) under the feed limits: first every
        component's expected draw `need_w` (capped at `want_w`, floors first) by priority, then
        the headroom up to `want_w` on top of it, again by priority. Filling the feeds after
        the tiers instead would cut a low priority's expected draw to keep a higher one's
        headroom whenever a feed binds."""
        want = np.where(np.isnan(want_w), self.floor_w, np.asarray(want_w, dtype=np.float64))
        need = np.fmin(np.fmax(np.asarray(need_w, dtype=np.float64), self.floor_w), want)
        first = self.fill(need, budget_w)
        return feed_fill(np.maximum(want, first), first, self.ceiling_w, self.priority,
                         budget_w, self.plan)

    def contingencies(self, allocated_w, budget_w: float) -> dict[str, np.ndarray]:
        """Per feed, the allocation (W) to apply at once on its loss: the normal allocation
        `allocated_w` cut to the survivors' budgets, priority order kept (never above it)."""
        out = contingency_w(allocated_w, self.floor_w, self.ceiling_w, self.priority,
                            self.plan, budget_w)
        for a in out.values():
            a.setflags(write=False)
        return out

    def check_lost(self, lost: Iterable[str]) -> frozenset[str]:
        """`lost` as a frozenset of feed names; ValueError naming an unknown one."""
        lost = frozenset(lost)
        self.plan.lost_index(lost)
        return lost

    def on_loss(self, lost: frozenset[str], ready: Mapping[str, np.ndarray],
                last_w: np.ndarray, budget_w: float) -> tuple[np.ndarray, str]:
        """(allocation W, reason) while the feeds in `lost` are lost: the contingency computed
        ahead for a single lost feed (`ready`, from the last normal decision), else the last
        normal allocation `last_w` cut to the survivors; both re-checked against `budget_w`
        (a budget that shrank meanwhile). Components on lost feeds only get 0 W."""
        names = sorted(lost)
        base = ready.get(names[0], last_w) if len(names) == 1 else last_w
        reason = (f"feed {names[0]} lost" if len(names) == 1
                  else f"feeds {', '.join(names)} lost")
        return self.fill(np.minimum(base, last_w), budget_w, lost), reason
