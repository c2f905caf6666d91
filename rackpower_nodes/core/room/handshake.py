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
- demand stale (unchanged for `stale_s`, or arrived after the coordinator itself was silent
  for that long) or on fallback (its lease lapsing, budget_source 'fallback'): also its
  guaranteed share, which it takes once its lease runs out. A rack that says 'fallback' for
  the grant it acknowledged no longer counts that grant: `BudgetLease` does not renew a
  lapsing grant with the same seq, so only a new grant (counted as growth) brings it back.

So a rack grows into power another rack gives up only after that rack has acknowledged the
smaller budget. Where a level is counted over its rating anyway (racks we cannot vouch for
are counted at their rating), nobody under it gets more than it holds now. A rack never heard
from gets no grant at all.

Safe as long as a rack that hears the coordinator also gets its grants: one that stops
receiving grants while its demands still arrive falls back to its guaranteed share after its
lease whatever the coordinator counted (it says 'fallback' from half a lease on, and is
counted at its guaranteed share from then). The property test in
test/core/test_room_handshake.py drives real `BudgetLease`s through late, reordered and lost
demands, lost grants (at most two in a row) and a coordinator silent for 1.5 leases.
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
    of each rack (a demand already seen, or older than one seen, changes nothing); `now_s` is
    any clock of the coordinator's own (monotonic), used only to age the demands.
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
        self._last_update_s = -math.inf

    def update(self, targets: Mapping[str, float], demands: Mapping[str, RackDemand],
               now_s: float) -> dict[str, RackGrant]:
        """The grant of every rack heard from (a rack never heard from gets none: it stays on
        its guaranteed share or its own config, and counts at its rating).

        `targets[rack]` is where the rack's budget should go (W; clipped to 0 .. rating; a
        rack without one, or with NaN, keeps its budget, or gets its guaranteed share when it
        has none yet). Shrinks are granted in full; growth water-fills the levels' room left
        when every rack counts at its committed power. Under a level that is already counted
        over its rating (racks we cannot vouch for), no rack gets more than it holds. A grant
        whose budget changed gets the next seq; the others are re-issued with their seq, so
        their leases keep running.
        """
        names = self.tree.rack_names
        # silent for a while (not at the start): leases may have lapsed, demands that arrive
        # now may have waited since our last update
        gap = math.isfinite(self._last_update_s) and now_s - self._last_update_s > self.stale_s
        for rack in names:
            self._hear(rack, demands.get(rack), self._last_update_s if gap else now_s)
        self._last_update_s = float(now_s)
        committed, held = self._committed_now(now_s)
        target = np.array([self._target(r, targets.get(r), j) for j, r in enumerate(names)])
        member = self.tree.member
        before = fsum_over(member, committed)
        over = member[before > self._level_rating].any(axis=0)
        inc = tree_fill(member, self._level_rating - before, target - committed)
        after = np.where(over, np.minimum(target, held), np.minimum(target, committed + inc))
        # never let rounding push a level's committed power over: its rating, or where it was
        grown = trim_to_fit(member, np.maximum(self._level_rating, before),
                            np.maximum(after, committed), committed, np.zeros(len(names)))
        after = np.where(after > committed, grown, after)
        grants = {}
        for j, rack in enumerate(names):
            if self._racks[rack].heard:
                grants[rack] = self._grant(rack, float(after[j]), float(target[j]))
        self._committed = np.maximum(committed, [
            grants[r].budget_w if r in grants else 0.0 for r in names])
        return grants

    def committed_w(self) -> dict[str, float]:
        """Each rack's committed power (W) as of the newest `update`, its new grants included
        (before the first update: every rack at its rating)."""
        return {r: float(c) for r, c in zip(self.tree.rack_names, self._committed)}

    def _hear(self, rack: str, d: RackDemand | None, seen_s: float) -> None:
        st = self._racks[rack]
        if d is None:
            return
        key = (d.stamp_unix, d.acked_seq, d.acked_budget_w, d.budget_source)
        if st.heard and (key == st.key or d.stamp_unix < st.key[0]):
            return                        # nothing new, or older than what we have
        st.heard, st.key, st.seen_s = True, key, float(seen_s)
        st.source = d.budget_source
        if d.acked_seq > st.seq:          # acks a grant we never issued: we restarted
            st.seq, st.budget_w, st.pending, st.first_seq = int(d.acked_seq), math.nan, [], 0
        if d.acked_seq >= st.acked_seq:
            st.acked_seq = int(d.acked_seq)
            st.acked_budget_w = float(d.acked_budget_w)
            st.pending = [(s, b) for s, b in st.pending if s >= st.acked_seq]
        if d.budget_source == "fallback" and d.acked_seq >= st.acked_seq:
            # its lease on grant acked_seq lapsed and cannot be renewed (BudgetLease): that
            # grant no longer counts, and the next grant needs a new seq
            st.pending = [(s, b) for s, b in st.pending if s > st.acked_seq]
            if st.seq <= st.acked_seq:
                st.budget_w = math.nan

    def _committed_now(self, now_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(committed, held) per rack (W): the most it may draw, given everything it may have
        heard, and what it may draw with no new grant at all (the newest grant it follows,
        else what it says it holds): a grant up to `held` never lets it draw more."""
        committed, held = self._rating.copy(), self._guaranteed.copy()
        for j, rack in enumerate(self.tree.rack_names):
            st = self._racks[rack]
            parts = [b for _, b in st.pending]
            acked = st.acked_budget_w if math.isfinite(st.acked_budget_w) else math.nan
            if math.isfinite(acked):
                parts.append(max(acked, 0.0))
            ours = st.first_seq > 0 and st.acked_seq >= st.first_seq
            if st.source == "coordinator" and ours and math.isfinite(st.budget_w):
                held[j] = st.budget_w
            elif math.isfinite(acked):
                held[j] = acked
            if not st.heard or st.source == "config" or (st.source == "coordinator"
                                                         and not ours):
                continue                  # on its own config, or on a grant we never issued
            if st.source != "coordinator" or now_s - st.seen_s > self.stale_s:
                parts.append(self._guaranteed[j])
            if parts:
                committed[j] = min(max(parts), self._rating[j])
        return committed, np.minimum(held, committed)

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
