"""Global-priority division of a power tree's ratings among its racks (pure, no rclpy).

`divide` turns the racks' demand summaries into budgets: floors first, then the priority
classes of the whole room from the highest down, each water-filled over the tree (max-min fair
within a class), then the rating left over spread as headroom. `priority_order_violations` is
the global priority rule as a checker, for tests and the room evaluation.

Invariants, whatever the demands: no rack's budget exceeds its rating (the tree's, or the
smaller one the rack reports), no level's budgets sum above its rating (exact sums), every
rack gets at least its floors, and no class is cut while a lower class that shares a saturated
level with it keeps more than its floor.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.room.fill import fsum_over, tree_fill, trim_to_fit
from rackpower_nodes.core.room.tree import PowerTree
from rackpower_nodes.core.room.types import RackDemand

CHECK_TOL_W = 1e-6
"""`priority_order_violations` ignores shortfalls, excesses and headroom below this (W)."""


@dataclass(frozen=True)
class Division:
    """The budgets (W) of every rack of the tree, and `by_class[rack][priority]`: the part of
    the rack's budget granted to each of its priority classes, floors included. A rack's
    budget minus the sum of its classes is the spread headroom; a rack without a demand has
    no classes (it is held at its default)."""

    budget_w: dict[str, float]
    by_class: dict[str, dict[int, float]]

    def headroom_w(self, rack: str) -> float:
        """The part of `rack`'s budget beyond what its classes were granted (W)."""
        return self.budget_w[rack] - math.fsum(self.by_class.get(rack, {}).values())


@dataclass
class _Classes:
    """The talking racks' demands as arrays: `floor[k, j]`, `want[k, j]` for class `prio[k]`."""

    prio: list[int]
    floor: np.ndarray
    want: np.ndarray
    rating: np.ndarray
    talking: np.ndarray


def _classes(tree: PowerTree, demands: Mapping[str, RackDemand]) -> _Classes:
    names = tree.rack_names
    rating = np.array([tree.racks[r].rating_w for r in names], dtype=np.float64)
    talking = np.array([r in demands for r in names], dtype=bool)
    per_rack: list[dict[int, tuple[float, float]]] = []
    for j, rack in enumerate(names):
        got: dict[int, tuple[float, float]] = {}
        d = demands.get(rack)
        if d is not None:
            reported = float(d.rating_w)
            if math.isfinite(reported) and reported > 0:
                rating[j] = min(rating[j], reported)
            got = _rack_classes(d)
        per_rack.append(got)
    prio = sorted({p for got in per_rack for p in got}, reverse=True)
    floor = np.zeros((len(prio), len(names)))
    want = np.zeros((len(prio), len(names)))
    for j, got in enumerate(per_rack):
        for k, p in enumerate(prio):
            floor[k, j], want[k, j] = got.get(p, (0.0, 0.0))
    return _Classes(prio, floor, want, rating, talking)


def _rack_classes(d: RackDemand) -> dict[int, tuple[float, float]]:
    """{priority: (floor, demand)} of one demand, checked; demand below the floor or NaN asks
    for the floor; classes listed twice are added."""
    n = len(d.priority)
    if len(d.floor_w) != n or len(d.demand_w) != n:
        raise ValueError(f"rack {d.rack!r}: priority, floor_w and demand_w have lengths "
                         f"{n}, {len(d.floor_w)}, {len(d.demand_w)}: expected equal lengths")
    got: dict[int, tuple[float, float]] = {}
    for p, f, w in zip(d.priority, d.floor_w, d.demand_w):
        f, w = float(f), float(w)
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"rack {d.rack!r}: floor_w = {f!r} for class {p}: expected a "
                             "finite number >= 0 (W)")
        if math.isinf(w) and w > 0:
            raise ValueError(f"rack {d.rack!r}: demand_w = {w!r} for class {p}: expected a "
                             "finite number (W)")
        w = f if math.isnan(w) else max(w, f)
        old = got.get(int(p), (0.0, 0.0))
        got[int(p)] = (old[0] + f, old[1] + w)
    return got


def divide(tree: PowerTree, demands: Mapping[str, RackDemand], *,
           default_w: Mapping[str, float] | None = None) -> Division:
    """Divide the tree's ratings among its racks in global priority order (budgets in W).

    1. Floors: every rack that sent a demand gets the sum of its classes' floors; a rack with
       no entry in `demands` is held at `default_w[rack]` (its guaranteed share when absent),
       clipped to its rating, and counted as using it. Demands of racks not in the tree are
       ignored. If that does not fit a rack's or a level's rating, ValueError names it and
       the numbers (the coordinator keeps its old budgets).
    2. Classes, from the highest priority in the whole room down: each class's demand above
       its floor is granted as far as the rack's rating and every level above it allow;
       when it does not all fit, the racks share fairly (max-min, `tree_fill`).
    3. Headroom: the rating left over is spread over the talking racks in proportion to their
       total demand, within every rack and level rating. It is not part of any class.
    A rack's rating is the tree's, or the smaller `RackDemand.rating_w` it reports.
    """
    names = tree.rack_names
    c = _classes(tree, demands)
    member = tree.member
    level_rating = np.array([lv.rating_w for lv in tree.levels.values()], dtype=np.float64)
    held = np.zeros(len(names))
    for j, rack in enumerate(names):
        if not c.talking[j]:
            value = (default_w or {}).get(rack, tree.racks[rack].guaranteed_w)
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"default_w[{rack!r}] = {value!r}: expected a finite "
                                 "number >= 0 (W)")
            held[j] = min(value, c.rating[j])
    base = held + np.array([math.fsum(col) for col in c.floor.T])
    _check_floors(tree, c, base, level_rating)
    grant = c.floor.copy()
    alloc = base.copy()
    for k in range(len(c.prio)):
        extra = tree_fill(member, level_rating - fsum_over(member, alloc),
                          np.minimum(c.want[k] - c.floor[k], c.rating - alloc))
        grant[k] += extra
        alloc = np.minimum(alloc + extra, c.rating)
    total_demand = np.where(c.talking, c.want.sum(axis=0), 0.0)
    spread = tree_fill(member, level_rating - fsum_over(member, alloc), c.rating - alloc,
                       weight=total_demand)
    budget = np.minimum(alloc + spread, c.rating)
    # Rounding: give back ulps from the spread first, then from the lowest classes.
    budget = trim_to_fit(member, level_rating, budget, np.maximum(alloc, base),
                         np.zeros(len(names)))
    lowest = np.array([min((p for k, p in enumerate(c.prio) if grant[k, j] > c.floor[k, j]),
                           default=math.inf) for j in range(len(names))])
    budget = trim_to_fit(member, level_rating, budget, base, lowest)
    by_class = {}
    for j, rack in enumerate(names):
        classes = {}
        for k, p in enumerate(c.prio):
            if c.want[k, j] > 0 or c.floor[k, j] > 0 or _has_class(demands, rack, p):
                classes[p] = float(min(grant[k, j], c.want[k, j]))
        by_class[rack] = classes
    return Division({r: float(b) for r, b in zip(names, budget)}, by_class)


def _has_class(demands: Mapping[str, RackDemand], rack: str, p: int) -> bool:
    d = demands.get(rack)
    return d is not None and p in {int(q) for q in d.priority}


def _check_floors(tree: PowerTree, c: _Classes, base: np.ndarray,
                  level_rating: np.ndarray) -> None:
    for j, rack in enumerate(tree.rack_names):
        if base[j] > c.rating[j]:
            raise ValueError(f"rack {rack!r}: floors {base[j]:g} W exceed its rating "
                             f"{c.rating[j]:g} W")
    sums = fsum_over(tree.member, base)
    for i, name in enumerate(tree.levels):
        if sums[i] > level_rating[i]:
            raise ValueError(f"level {name!r}: floors and held budgets of its racks sum to "
                             f"{sums[i]:g} W > its rating {level_rating[i]:g} W")


def priority_order_violations(tree: PowerTree, demands: Mapping[str, RackDemand],
                              division: Division, tol_w: float = CHECK_TOL_W) -> list[str]:
    """The global priority rule as a checker; one message per class that breaks it.

    A class p of rack r is cut (granted less than its demand) while a class q < p of a rack
    r' keeps more than its floor, or r' has spread headroom, where power could have moved from
    r' to r: r' is r itself, or r has room under its own rating and r' sits under the nearest
    saturated level above r (full up to `tol_w`; then every level between them has room).
    Empty when the rule holds.
    """
    c = _classes(tree, demands)
    names = tree.rack_names
    budget = np.array([division.budget_w[r] for r in names], dtype=np.float64)
    level_names = list(tree.levels)
    sums = fsum_over(tree.member, budget)
    full = {name for i, name in enumerate(level_names)
            if sums[i] >= tree.levels[name].rating_w - tol_w}
    lowest_excess = {}
    for j, rack in enumerate(names):
        got = division.by_class.get(rack, {})
        excess = [p for k, p in enumerate(c.prio)
                  if got.get(p, 0.0) > c.floor[k, j] + tol_w]
        if c.talking[j] and budget[j] - math.fsum(got.values()) > tol_w:
            excess.append(-math.inf)
        lowest_excess[rack] = min(excess, default=math.inf)
    out = []
    for j, rack in enumerate(names):
        got = division.by_class.get(rack, {})
        for k, p in enumerate(c.prio):
            if got.get(p, 0.0) >= c.want[k, j] - tol_w:
                continue
            donors = [rack]
            if budget[j] < c.rating[j] - tol_w:
                level = next((lv for lv in tree.ancestors(rack) if lv in full), None)
                donors = list(tree.racks_under(level)) if level else donors
            for other in donors:
                if lowest_excess[other] < p:
                    what = ("spread headroom" if lowest_excess[other] == -math.inf
                            else f"class {lowest_excess[other]} above its floor")
                    out.append(f"rack {rack!r} class {p}: granted {got.get(p, 0.0):g} W < "
                               f"demand {c.want[k, j]:g} W while rack {other!r} keeps {what}")
                    break
    return out
