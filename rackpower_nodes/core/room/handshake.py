"""Shrink-first release of new rack budgets (pure, no rclpy): the coordinator's side.

`divide` says where every rack's budget should go; `ShrinkFirst` says how far each may go
now. A shrink is granted at once; growth only as far as every level still fits when each rack
is counted at its committed power: what it may be drawing given everything it may have heard.
That is, for a rack whose demand is fresh and follows the coordinator,

    committed = max(acked_budget_w, every budget granted with seq >= acked_seq)

(the rack confirmed its devices fit within acked_budget_w after applying grant acked_seq; it
may since have received, and applied, any newer grant). Other racks count at more:

- never heard from, on its own config (budget_source 'config'), or following a grant this
  instance never issued (after a coordinator restart, until it acknowledges one of ours):
  its rating;
- demand stale (unchanged for `stale_s`) or on fallback (its lease lapsing, budget_source
  'fallback'): also its guaranteed share, which it takes once its lease runs out.

So a rack grows into power another rack gives up only after that rack has acknowledged the
smaller budget. Safe as long as a rack that hears the coordinator also gets its grants: one
that stops receiving grants while its demands still arrive falls back to its guaranteed share
after its lease whatever the coordinator counted (it says 'fallback' from half a lease on,
and is counted at its guaranteed share from then).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from rackpower_nodes.core.room.fill import TOL_W, fsum_over, tree_fill, trim_to_fit
from rackpower_nodes.core.room.tree import PowerTree
from rackpower_nodes.core.room.types import RackDemand, RackGrant

MAX_PENDING = 64
"""Unacknowledged grants kept per rack; older ones merge (seq of the newer, the larger W)."""


@dataclass
class _Rack:
    """What the coordinator knows of one rack."""

    seq: int = 0
    budget_w: float = math.nan              # the newest grant's budget (NaN before any)
    target_w: float = math.nan
    pending: list[tuple[int, float]] = field(default_factory=list)  # grants, seq >= acked
    heard: bool = False
    key: tuple = ()                         # the newest demand's identity (change detection)
    seen_s: float = -math.inf               # when that demand first arrived (our clock)
    acked_seq: int = 0
    acked_budget_w: float = math.nan
    source: str = "config"
    first_seq: int = 0                      # the first seq this instance issued (0: none)


class ShrinkFirst:
    """Turns target budgets (W) into `RackGrant`s, shrinks first (see the module docstring).

    `lease_s`: the lease every grant carries (s); `stale_s`: a rack whose demand has not
    changed for this long (default lease_s / 2) is counted as stale; `coordinator`: the name
    put in every grant. `update` is called every coordinator period with the newest demand
    of each rack (racks missing from it count as not heard this time); `now_s` is any clock of
    the coordinator's own (monotonic), used only to age the demands.
    """

    def __init__(self, tree: PowerTree, lease_s: float, coordinator: str = "room",
                 stale_s: float | None = None):
        if not (math.isfinite(lease_s) and lease_s > 0):
            raise ValueError(f"lease_s = {lease_s!r}: expected a finite number > 0 (s)")
        stale_s = lease_s / 2 if stale_s is None else stale_s
        if not (math.isfinite(stale_s) and stale_s > 0):
            raise ValueError(f"stale_s = {stale_s!r}: expected a finite number > 0 (s)")
        self.tree = tree
        self.lease_s = float(lease_s)
        self.stale_s = float(stale_s)
        self.coordinator = coordinator
        self._racks = {name: _Rack() for name in tree.rack_names}
        self._rating = np.array([tree.racks[r].rating_w for r in tree.rack_names])
        self._guaranteed = np.array([tree.racks[r].guaranteed_w for r in tree.rack_names])
        self._level_rating = np.array([lv.rating_w for lv in tree.levels.values()])
        self._committed = self._rating.copy()

    def update(self, targets: Mapping[str, float], demands: Mapping[str, RackDemand],
               now_s: float) -> dict[str, RackGrant]:
        """The grant of every rack of the tree for this period.

        `targets[rack]` is where the rack's budget should go (W; clipped to 0 .. rating; a
        rack without one, or with NaN, keeps its budget, or gets its guaranteed share when it
        has none yet). Shrinks are granted in full; growth water-fills the levels' room left
        when every rack counts at its committed power. A grant whose budget changed gets the
        next seq; the others are re-issued with their seq, so their leases keep running.
        """
        names = self.tree.rack_names
        for rack in names:
            self._hear(rack, demands.get(rack), now_s)
        committed = self._committed_now(now_s)
        target = np.array([self._target(r, targets.get(r), j) for j, r in enumerate(names)])
        member = self.tree.member
        before = fsum_over(member, committed)
        inc = tree_fill(member, self._level_rating - before, target - committed)
        after = np.maximum(committed, np.minimum(target, committed + inc))
        # never let rounding push a level over: its rating, or where it already was
        after = trim_to_fit(member, np.maximum(self._level_rating, before), after, committed,
                            np.zeros(len(names)))
        grants = {}
        for j, rack in enumerate(names):
            grants[rack] = self._grant(rack, float(min(target[j], after[j])), target[j])
        self._committed = np.maximum(committed, [g.budget_w for g in grants.values()])
        return grants

    def committed_w(self) -> dict[str, float]:
        """Each rack's committed power (W) as of the newest `update`, its new grants included
        (before the first update: every rack at its rating)."""
        return {r: float(c) for r, c in zip(self.tree.rack_names, self._committed)}

    def _hear(self, rack: str, d: RackDemand | None, now_s: float) -> None:
        st = self._racks[rack]
        if d is None:
            return
        key = (d.stamp_unix, d.acked_seq, d.acked_budget_w, d.budget_source)
        if st.heard and key == st.key:
            return
        st.heard, st.key, st.seen_s = True, key, float(now_s)
        st.source = d.budget_source
        if d.acked_seq > st.seq:          # acks a grant we never issued: we restarted
            st.seq, st.budget_w, st.pending, st.first_seq = int(d.acked_seq), math.nan, [], 0
        if d.acked_seq >= st.acked_seq:
            st.acked_seq = int(d.acked_seq)
            st.acked_budget_w = float(d.acked_budget_w)
            st.pending = [(s, b) for s, b in st.pending if s >= st.acked_seq]

    def _committed_now(self, now_s: float) -> np.ndarray:
        out = self._rating.copy()
        for j, rack in enumerate(self.tree.rack_names):
            st = self._racks[rack]
            ours = st.first_seq > 0 and st.acked_seq >= st.first_seq
            if not st.heard or st.source == "config" or (st.source == "coordinator"
                                                         and not ours):
                continue                  # on its own config, or on a grant we never issued
            parts = [b for _, b in st.pending]
            if math.isfinite(st.acked_budget_w):
                parts.append(max(st.acked_budget_w, 0.0))
            if st.source != "coordinator" or now_s - st.seen_s > self.stale_s:
                parts.append(self._guaranteed[j])
            if parts:
                out[j] = min(max(parts), self._rating[j])
        return out

    def _target(self, rack: str, value: float | None, j: int) -> float:
        st = self._racks[rack]
        if value is None or math.isnan(value):
            value = st.budget_w if math.isfinite(st.budget_w) else self._guaranteed[j]
        return float(min(max(value, 0.0), self._rating[j]))

    def _grant(self, rack: str, budget: float, target: float) -> RackGrant:
        st = self._racks[rack]
        if not (math.isfinite(st.budget_w) and abs(budget - st.budget_w) <= TOL_W):
            st.seq += 1
            st.first_seq = st.first_seq or st.seq
            st.budget_w = budget
            st.pending.append((st.seq, budget))
            if len(st.pending) > MAX_PENDING:
                (_, b0), (s1, b1) = st.pending[:2]
                st.pending[:2] = [(s1, max(b0, b1))]
        st.target_w = target
        return RackGrant(rack, st.seq, st.budget_w, target, self.lease_s, self.coordinator)
