"""The fast-mode room loop: every rack's real controller under shared or fixed budgets.

Each rack step (1 s by default, the demand aggregated to 1 s means and peaks: `demand.py`):

1. shared mode, every `period_s` (5 s): each rack's demand summary (`rack_demand`: per
   priority class its floors and the most its controller asked for over the last period,
   the quantiles of its measured total, its acknowledgement) goes to `divide` (global
   priority order over the power tree) and `ShrinkFirst` (budgets grow only after the
   shrinks they wait for are acknowledged); each rack's controller takes its grant's
   budget. The fixed modes hold one budget per rack for the whole run: the guaranteed share,
   or a static proportional split of the room rating down the tree;
2. each rack's `AllocationController` (reactive, as the actuator runs it) decides from the
   power measured in the previous step (its 1 s peak as served) and the allocation in force;
3. an allocation comes into force one or two rack steps after it is decided (every other
   rack takes two, as a slow BMC power cap can; PDU registers take 0.1 s, BMC caps 1-2 s);
   each component is served min(demand, allocation in force);
4. the rack acknowledges a grant once the allocation it decided under it is in force (one or
   two rack steps later: `LoopSettings.delay_steps`), with what its devices hold
   (`committed_w`); it reports `fallback` until it has acknowledged a grant.

Breakers at every level (rack, row, room) run the simulator's trip curve on the served power
after the run (`metrics.breaker_trips`); the allocations in force are checked against every
level's rating in every step.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation import AllocationController
from rackpower_nodes.core.room.divide import Division, divide, priority_order_violations
from rackpower_nodes.core.room.handshake import ShrinkFirst
from rackpower_nodes.core.room.summary import committed_w, rack_demand
from rackpower_nodes.core.room.types import RackDemand
from rackpower_nodes.sim.room.demand import RackDay
from rackpower_nodes.sim.room.layout import Room, RoomRack
from rackpower_nodes.sim.room.metrics import (
    LOAD_TOL_W, UNDER_TOL_FRAC, UNDER_TOL_W, RoomResult, breaker_trips)

_log = logging.getLogger(__name__)

MODES = ("shared", "fixed-guaranteed", "fixed-proportional")
MAX_EXAMPLES = 5
BOUND_FRAC = 1e-3     # a rack allocating all but 0.1 % of its budget is held by it


@dataclass(frozen=True)
class LoopSettings:
    """The loop's timing: the coordinator's period and the lease of its grants (s), and the
    actuation delay of the racks in rack steps, cycled over the racks in config order (the
    default: every other rack takes two steps, as a BMC power cap can, the others one)."""

    period_s: float = 5.0
    lease_s: float = 15.0
    delay_steps: tuple[int, ...] = (1, 2)

    def __post_init__(self):
        if not (self.period_s > 0 and self.lease_s > 0) or not self.delay_steps or any(
                isinstance(d, bool) or not isinstance(d, int) or d < 1
                for d in self.delay_steps):
            raise ValueError(f"{self!r}: expected period_s > 0, lease_s > 0 and delays of "
                             "whole steps >= 1")


def proportional_split(room: Room) -> dict[str, float]:
    """Fixed budgets: the room rating split down the tree in proportion to the ratings below
    each level, never above a level's or a rack's own rating (W)."""
    tree = room.tree
    out: dict[str, float] = {}

    def share(name: str, budget: float) -> None:
        kids = tree.levels[name].children
        ratings = [tree.levels[k].rating_w if k in tree.levels else tree.racks[k].rating_w
                   for k in kids]
        total = math.fsum(ratings)
        for kid, rating in zip(kids, ratings):
            mine = min(rating, budget * rating / total)
            if kid in tree.levels:
                share(kid, mine)
            else:
                out[kid] = mine

    share(tree.top, tree.levels[tree.top].rating_w)
    return out


def class_split(d: RackDemand, budget_w: float) -> dict[int, float]:
    """How a rack spends a fixed budget by class (floors first, then classes highest first),
    for the priority checker in the fixed modes (W)."""
    left = budget_w - d.total_floor_w
    out = {}
    for p, f, w in sorted(zip(d.priority, d.floor_w, d.demand_w), reverse=True):
        extra = min(max(w - f, 0.0), max(left, 0.0))
        out[int(p)] = f + extra
        left -= extra
    return out


class _RackRun:
    """One rack's controller, its allocations on their way into force (`delay` steps) and
    what it measured and asked for."""

    def __init__(self, rack: RoomRack, day: RackDay, budget_w: float, guaranteed_w: float,
                 classes: list[int], delay: int = 1):
        self.rack, self.day, self.guaranteed_w = rack, day, guaranteed_w
        self.ctrl = AllocationController(rack.components, rack.policy, "reactive")
        self.budget_w = budget_w
        self.ctrl.set_budget(budget_w)
        self.seq = 0
        # (allocation, seq, budget) decided in the last `delay` steps, oldest first; the
        # oldest is in force now
        start = (self.ctrl.static_allocation(), 0, budget_w)
        self.pipeline = deque([start] * delay)
        self.in_force, self.acked_seq, self.budget_in_force = start
        self.acked_w = math.nan
        self.measured = np.full(len(rack.components), np.nan)
        self.priority = np.array([c.priority for c in rack.components])
        self.floor = np.array([c.floor_w for c in rack.components])
        self.ceiling = np.array([c.ceiling_w for c in rack.components])
        self.cls = np.array([classes.index(int(p)) for p in self.priority])
        self.asked = np.zeros(len(rack.components))       # max demand over the period
        self.totals: list[float] = []

    def grant(self, seq: int, budget_w: float) -> None:
        self.seq = seq
        if budget_w != self.budget_w:
            self.budget_w = budget_w
            self.ctrl.set_budget(budget_w)

    def summary(self, t: float, period_s: float) -> RackDemand:
        totals = np.array(self.totals) if self.totals else np.array([math.nan])
        quant = (dict(zip(("p50", "p90", "p99"),
                          np.quantile(totals, (0.5, 0.9, 0.99)).tolist()))
                 if np.all(np.isfinite(totals)) else None)
        asked = np.clip(np.fmax(self.asked, self.floor), 0.0, self.ceiling)
        d = rack_demand(self.rack.name, t, period_s, self.priority, self.floor, asked,
                        self.rack.rating_w, self.guaranteed_w, total_w=quant,
                        acked_seq=self.acked_seq, acked_budget_w=self.acked_w,
                        budget_source="coordinator" if self.acked_seq else "fallback")
        self.asked[:] = 0.0
        self.totals.clear()
        return d

    def step(self, k: int, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decide at step k, serve it, move the pipeline on: (mean above the allocation in
        force, peak above it, the allocation in force) per component, W."""
        decision = self.ctrl.step(t, self.measured, None, in_force_w=self.in_force)
        self.asked = np.fmax(self.asked, decision.demand_w)
        mean = self.day.mean_w[k]
        peak = self.day.peak_w[k]
        held = self.in_force
        self.measured = np.minimum(peak, held).astype(np.float64)
        self.totals.append(float(np.minimum(mean, held).sum()))
        short_mean = np.maximum(mean - held, 0.0)
        short_peak = np.maximum(peak - held, 0.0)
        self.pipeline.append((np.asarray(decision.allocated_w, dtype=np.float64), self.seq,
                              self.budget_w))
        self.pipeline.popleft()
        # from the next step on the devices hold the allocation decided under grant
        # `acked_seq`: acknowledge it, with what they hold
        self.in_force, self.acked_seq, self.budget_in_force = self.pipeline[0]
        self.acked_w = committed_w(self.in_force, self.ceiling)
        return short_mean, short_peak, held


def run_room(room: Room, days: Mapping[str, RackDay], mode: str, margin: str = "",
             settings: LoopSettings = LoopSettings(),
             progress: Callable[[str], None] | None = None) -> RoomResult:
    """Run `mode` (one of MODES) over the racks' days; see the module doc."""
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}: expected one of {', '.join(MODES)}")
    tree = room.tree
    names = tree.rack_names
    first = days[names[0]]
    steps, step_s = first.steps, first.step_s
    period = max(int(round(settings.period_s / step_s)), 1)
    classes = sorted({c.priority for r in room.racks for c in r.components}, reverse=True)
    if mode == "fixed-proportional":
        fixed = proportional_split(room)
    else:
        fixed = {r: tree.racks[r].guaranteed_w for r in names}
    delays = settings.delay_steps
    runs = [_RackRun(room.rack(r), days[r], fixed[r], tree.racks[r].guaranteed_w, classes,
                     delays[j % len(delays)]) for j, r in enumerate(names)]
    shrink = ShrinkFirst(tree, settings.lease_s, "room-eval") if mode == "shared" else None
    member = np.array([[r in tree.racks_under(lv) for r in names] for lv in tree.levels],
                      dtype=np.float64)
    level_rating = np.array([lv.rating_w for lv in tree.levels.values()])
    n_cls = len(classes)
    res = RoomResult(mode, margin, steps, step_s, tuple(classes), np.zeros(n_cls),
                     np.zeros(n_cls), np.zeros(n_cls))
    served = np.zeros((steps, len(names)))
    alloc = np.zeros((steps, len(names)))
    budgets = np.zeros((steps, len(names)))
    res.throttled_w = np.zeros(steps)
    res.held_back = np.zeros(steps, bool)
    res.budget_throttled_wh = np.zeros(n_cls)
    began = time.perf_counter()
    for k in range(steps):
        t = first.start_unix + k * step_s
        if k % period == 0:
            _coordinate(res, tree, runs, mode, shrink, t, settings.period_s, fixed, k)
        for j, run in enumerate(runs):
            budgets[k, j] = run.budget_in_force
            short_mean, short_peak, held = run.step(k, t)
            mean = run.day.mean_w[k]
            under = short_peak > np.maximum(UNDER_TOL_FRAC * run.day.peak_w[k], UNDER_TOL_W)
            # held back by its budget: under-allocated with the budget all allocated
            bound = under.any() and held.sum() >= budgets[k, j] * (1.0 - BOUND_FRAC)
            res.throttled_rack_steps += bound
            res.throttled_wh += np.bincount(run.cls, short_mean, n_cls) * step_s / 3600.0
            res.throttled_peak_wh += np.bincount(run.cls, short_peak, n_cls) * step_s / 3600.0
            res.demand_wh += np.bincount(run.cls, mean, n_cls) * step_s / 3600.0
            if bound:
                res.held_back[k] = True
                res.budget_throttled_wh += np.bincount(run.cls, short_mean,
                                                       n_cls) * step_s / 3600.0
                res.throttled_w[k] += float(short_mean.sum())
            served[k, j] = float(np.minimum(mean, held).sum())
            alloc[k, j] = float(held.sum())
        if progress is not None and k % 3600 == 0 and k:
            progress(f"{mode} {margin}: {k * step_s / 3600:.0f} h, "
                     f"{time.perf_counter() - began:.0f} s")
    res.wall_s = time.perf_counter() - began
    _finish(res, room, names, member, level_rating, served, alloc, budgets)
    return res


def _coordinate(res: RoomResult, tree, runs, mode, shrink, t, period_s, fixed, k) -> None:
    """One coordinator step: the summaries, the division (shared) and the priority check."""
    if k == 0:
        return          # nothing measured yet: every rack starts on its initial budget
    demands = {run.rack.name: run.summary(t, period_s) for run in runs}
    if mode == "shared":
        division = divide(tree, demands)
        grants = shrink.update(division.budget_w, demands, t)
        for run in runs:
            g = grants[run.rack.name]
            run.grant(g.seq, g.budget_w)
    else:
        division = Division(dict(fixed), {r: class_split(d, fixed[r])
                                          for r, d in demands.items()})
    bad = priority_order_violations(tree, demands, division)
    res.coordinator_steps += 1
    if bad:
        res.priority_violation_steps += 1
        if len(res.violation_examples) < MAX_EXAMPLES:
            res.violation_examples.append(f"t+{k * runs[0].day.step_s:.0f} s: {bad[0]}")


def _finish(res, room, names, member, level_rating, served, alloc, budgets) -> None:
    """Level loads, stranded power, checks against the ratings and the breakers."""
    tree = room.tree
    level_served = served @ member.T
    level_alloc = alloc @ member.T
    rack_rating = np.array([tree.racks[r].rating_w for r in names])
    all_served = np.hstack([served, level_served])
    ratings = np.concatenate([rack_rating, level_rating])
    res.level_names = (*names, *tree.levels)
    res.level_kinds = (("rack",) * len(names)
                       + tuple("room" if lv == tree.top else "row" for lv in tree.levels))
    res.level_max_served = all_served.max(axis=0) / ratings
    res.level_max_alloc = np.hstack([alloc, level_alloc]).max(axis=0) / ratings
    over = np.hstack([alloc, level_alloc]) > ratings + LOAD_TOL_W
    res.over_rating_steps = int(over.any(axis=1).sum())
    top = list(tree.levels).index(tree.top)
    res.headroom_w = level_alloc[:, top] - level_served[:, top]
    res.stranded_w = level_rating[top] - level_alloc[:, top]
    trips, _ = breaker_trips(all_served, ratings, room.derating, res.step_s)
    res.trips = {kind: int(sum(t for t, k in zip(trips, res.level_kinds) if k == kind))
                 for kind in ("rack", "row", "room")}
    res.trip_levels = [n for n, t in zip(res.level_names, trips) if t]
