"""Redundant A/B feeds: per-feed budgets that survive the loss of either feed.

Pure numpy, no rclpy. Powers in W, times in s.

The physics. A dual-corded server draws from an A and a B PDU, each fed by its own breaker,
split about evenly between its two power supplies (a measured or configured fraction). When one
feed is lost, the server's supplies move its whole load to the surviving feed at once, and
that feed's breaker carries it until the power caps (BMC power limits, which take 0.5-2 s to
act) bring the load down. A thermal-magnetic breaker tolerates an overload for a while: the
magnetic element trips at once above `magnetic_multiple` x its rating, the thermal one after
thermal_constant_s / (r**2 - 1) s at a load of r x its rating (the curve the simulator models,
`sim/pdu/model.py`; a feed run within its budget, below its rating, carries no heat into the
overload). So, with a component's power `a_i` split over feeds by `split[i, f]`:

1. in normal operation every feed's load sum_i a_i split[i, f] stays within its budget
   (breaker x derating);
2. after losing any feed g, each survivor's load before capping, with each component's share
   on g moved to its own surviving feeds, stays within `overload_multiple` x its breaker, the
   overload it tolerates for `cap_time_s` (`tolerated_multiple`);
3. the contingency allocation for each feed, computed ahead every cycle (`contingency_w`),
   brings the survivors within their budgets once the caps act.

Every constraint is linear with non-negative weights, so `feed_fill` divides power by priority
level like `water_fill` (floors first, then the excess over them, highest priority first, one
common level within a priority level) while every constraint holds: a component stops rising
when a constraint it loads is full, the others go on (progressive filling).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation.filling import _fill_inputs, _total
from rackpower_nodes.core.allocation.forecast import _frozen_array
from rackpower_nodes.core.params import ConfigError

SPLIT_TOLERANCE = 1e-6
"""How far a split row may sum from 1 before it is a config error (it is then normalised)."""


def tolerated_multiple(cap_time_s: float, thermal_constant_s: float = 30.0,
                       magnetic_multiple: float = 10.0) -> float:
    """Largest load / rating a breaker carries for `cap_time_s` s from cold without tripping.

    From the trip curve of `sim/pdu/model.py`: the thermal element trips after
    thermal_constant_s / (r**2 - 1) s at r x the rating, so r = sqrt(1 + thermal_constant_s /
    cap_time_s); the magnetic element trips at once above `magnetic_multiple`, which bounds it.
    E.g. 30 s and 2 s: 4.0; 30 s and 0.5 s: 7.8. Raises ValueError for values <= 0 (or a
    magnetic multiple <= 1).
    """
    for key, value in (("cap_time_s", cap_time_s), ("thermal_constant_s", thermal_constant_s),
                       ("magnetic_multiple", magnetic_multiple)):
        if not _finite(value) or value <= 0:
            raise ValueError(f"{key} = {value!r}: expected a finite number > 0")
    if magnetic_multiple <= 1.0:
        raise ValueError(f"magnetic_multiple = {magnetic_multiple!r}: expected > 1")
    return min(math.sqrt(1.0 + thermal_constant_s / cap_time_s), float(magnetic_multiple))


def _finite(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, bool) and math.isfinite(value))


@dataclass(frozen=True, eq=False)
class FeedPlan:
    """The rack's feeds and how each component draws from them.

    `names`: the feeds (e.g. ('A', 'B')); `breaker_w` (F,): each feed's breaker rating, W;
    `budget_w` (F,): its continuous budget, W (<= the rating); `split` (n, F): the fraction of
    component i's power drawn from feed f, each row summing to 1 (a single-corded component
    has a single 1); `overload_multiple`: the load / rating a feed may carry for `cap_time_s`
    after the other feed is lost, before the caps act (see `tolerated_multiple`). Raises
    ConfigError naming each bad field.
    """

    names: tuple[str, ...]
    breaker_w: np.ndarray
    budget_w: np.ndarray
    split: np.ndarray
    overload_multiple: float
    cap_time_s: float

    def __post_init__(self):
        errors = []
        names = tuple(self.names) if isinstance(self.names, (tuple, list)) else ()
        if (not names or any(not isinstance(x, str) or not x for x in names)
                or len(set(names)) != len(names)):
            errors.append(f"names = {self.names!r}: expected one or more distinct non-empty "
                          "feed names")
        f = len(names)
        arrays = {}
        for key in ("breaker_w", "budget_w"):
            arr = np.array(getattr(self, key), dtype=np.float64)
            if arr.shape != (f,) or not np.all(np.isfinite(arr)) or np.any(arr < 0) or (
                    key == "breaker_w" and np.any(arr <= 0)):
                errors.append(f"{key} = {arr.tolist()!r}: expected {f} finite values "
                              f"{'> 0' if key == 'breaker_w' else '>= 0'} W, one per feed")
            arrays[key] = arr
        if not errors and np.any(arrays["budget_w"] > arrays["breaker_w"]):
            errors.append(f"budget_w = {arrays['budget_w'].tolist()!r}: above breaker_w = "
                          f"{arrays['breaker_w'].tolist()!r}: expected each budget <= its "
                          "breaker rating")
        split = np.array(self.split, dtype=np.float64)
        if split.ndim != 2 or split.shape[1] != f or split.shape[0] == 0:
            errors.append(f"split has shape {split.shape}: expected (n, {f}), one row per "
                          "component, one column per feed")
        elif not np.all(np.isfinite(split)) or np.any(split < 0) or np.any(split > 1):
            errors.append("split: expected fractions in [0, 1]")
        else:
            bad = np.flatnonzero(np.abs(split.sum(axis=1) - 1.0) > SPLIT_TOLERANCE)
            if bad.size:
                errors.append(f"split[{bad[0]}] = {split[bad[0]].tolist()!r}: expected "
                              "fractions summing to 1")
            else:
                split = split / split.sum(axis=1, keepdims=True)
        if not _finite(self.overload_multiple) or self.overload_multiple < 1.0:
            errors.append(f"overload_multiple = {self.overload_multiple!r}: expected a finite "
                          "number >= 1")
        if not _finite(self.cap_time_s) or self.cap_time_s <= 0:
            errors.append(f"cap_time_s = {self.cap_time_s!r}: expected a finite number > 0 s")
        if errors:
            raise ConfigError(errors)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "breaker_w", _frozen_array(arrays["breaker_w"]))
        object.__setattr__(self, "budget_w", _frozen_array(arrays["budget_w"]))
        object.__setattr__(self, "split", _frozen_array(split))
        object.__setattr__(self, "overload_multiple", float(self.overload_multiple))
        object.__setattr__(self, "cap_time_s", float(self.cap_time_s))

    @property
    def n_components(self) -> int:
        return int(self.split.shape[0])

    def lost_index(self, lost: Iterable[str]) -> np.ndarray:
        """(F,) bool: which feeds are in `lost`; ValueError naming an unknown feed."""
        mask = np.zeros(len(self.names), dtype=bool)
        for name in lost:
            if name not in self.names:
                raise ValueError(f"lost feed {name!r}: expected one of {', '.join(self.names)}")
            mask[self.names.index(name)] = True
        return mask


def moved_split(plan: FeedPlan, lost: Iterable[str] = frozenset()) -> np.ndarray:
    """(n, F) split after losing `lost`: each component's share on a lost feed moves to its
    surviving feeds in proportion to their shares; a component on lost feeds only: all 0."""
    mask = plan.lost_index(lost)
    split = np.where(mask[None, :], 0.0, plan.split)
    left = split.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(left > 0, split / np.where(left > 0, left, 1.0), 0.0)


def feed_load_w(plan: FeedPlan, alloc_w, lost: Iterable[str] = frozenset()) -> np.ndarray:
    """(F,) each feed's load, W, for per-component power `alloc_w` (n,), after losing `lost`
    (a lost feed carries 0 W; a component on lost feeds only draws nothing)."""
    alloc = np.asarray(alloc_w, dtype=np.float64)
    if alloc.shape != (plan.n_components,):
        raise ValueError(f"alloc_w has shape {alloc.shape}: expected ({plan.n_components},)")
    return alloc @ moved_split(plan, lost)


def feed_limits(plan: FeedPlan, budget_w: float,
                lost: Iterable[str] = frozenset()) -> list[tuple[str, np.ndarray, float]]:
    """The linear limits `feed_fill` keeps: (what, weights (n,), cap W), each meaning
    sum_i weights[i] * a_i <= cap. Normal operation (`lost` empty): the total, each feed's
    budget, and each survivor's tolerated overload after losing each feed; after a loss: the
    total and each survivor's budget."""
    lost = frozenset(lost)
    n = plan.n_components
    limits = [("total", np.ones(n), float(budget_w))]
    split = moved_split(plan, lost)
    for f, name in enumerate(plan.names):
        if name not in lost:
            limits.append((f"feed {name} budget", split[:, f], float(plan.budget_w[f])))
    if lost or len(plan.names) < 2:
        return limits
    for g, gone in enumerate(plan.names):
        after = moved_split(plan, {gone})
        for f, name in enumerate(plan.names):
            if f != g:
                limits.append((f"feed {name} after losing {gone}", after[:, f],
                               plan.overload_multiple * float(plan.breaker_w[f])))
    return limits


def _level(excess: np.ndarray, weights: np.ndarray, room: np.ndarray) -> float:
    """Largest common level L >= 0 with weights @ min(excess, L) <= room for every row (K, m);
    inf when every excess fits."""
    order = np.argsort(excess)
    e, w = excess[order], weights[:, order]
    before = np.concatenate((np.zeros((w.shape[0], 1)), np.cumsum(w * e, axis=1)[:, :-1]),
                            axis=1)
    tail = np.cumsum(w[:, ::-1], axis=1)[:, ::-1]
    at = before + e[None, :] * tail               # load of each row at L = e[j]
    best = math.inf
    for k in range(w.shape[0]):
        if room[k] <= 0:
            return 0.0
        hit = np.flatnonzero(at[k] >= room[k])
        if hit.size:
            j = hit[0]
            best = min(best, max(0.0, (room[k] - before[k, j]) / tail[k, j]))
    return best


def _raise(start, goal, weights, cap, prio) -> np.ndarray:
    """Raise `start` towards `goal`, highest priority level first, one common level within a
    level; a component stops when a limit it loads is full (progressive filling)."""
    x = start.copy()
    for level in np.unique(prio)[::-1]:
        active = (prio == level) & (goal > x)
        while active.any():
            room = cap - weights @ x
            excess = np.where(active, goal - x, 0.0)
            used = weights[:, active] > 0
            rows = used.any(axis=1)
            lvl = _level(excess[active], weights[rows][:, active], room[rows])
            add = np.minimum(excess, lvl)
            x = x + add
            full = rows & np.isfinite(cap) & (cap - weights @ x
                                              <= 1e-9 * np.maximum(np.abs(cap), 1.0))
            stopped = (add >= excess) | (weights[full] > 0).any(axis=0)
            if not (active & stopped).any():
                break                                  # float corner: nothing moved
            active &= ~stopped
    return x


def _shave(x, low, weights, cap, prio) -> np.ndarray:
    """Lower `x` towards `low`, lowest priority first, until every limit holds under every
    usual float64 summation (`_total`)."""
    x = x.copy()
    for _ in range(4 * x.size * max(len(cap), 1) + 64):
        over = [(_total(w * x) - c, w) for w, c in zip(weights, cap) if _total(w * x) > c]
        if not over:
            return x
        excess, w = over[0]
        movable = (x > low) & (w > 0)
        if not movable.any():
            break
        lowest = prio[movable].min()
        i = int(np.argmax(np.where(movable & (prio == lowest), x - low, -1.0)))
        x[i] = max(low[i], x[i] - max(excess / w[i], float(np.spacing(x[i]))))
    return np.zeros_like(x)


def feed_fill(demand_w, floor_w, ceiling_w, priority, budget_w, plan: FeedPlan,
              lost: Iterable[str] = frozenset()) -> np.ndarray:
    """Per-component allocation (W) by priority that keeps every limit of `feed_limits`.

    As `water_fill`: the target is demand clipped to [0, ceiling] (NaN demand asks for the
    floor); every component first gets min(floor, target), highest priority level first, then
    the excess over it, highest level first, one common level within a level. A component
    stops rising when a limit it loads is full; components that load only other limits go on.
    Normal operation (`lost` empty): the total stays within `budget_w`, each feed within its
    budget, and after losing any one feed each survivor within overload_multiple x its
    breaker. After losing `lost`: the total and each survivor within its budget; a component
    on lost feeds only gets 0 W (it has no power). Raises ValueError for bad arrays (as
    `water_fill`), a plan for another number of components or an unknown feed.
    """
    demand, floor, ceiling, prio, budget = _fill_inputs(
        demand_w, floor_w, ceiling_w, priority, budget_w)
    if not isinstance(plan, FeedPlan) or plan.n_components != demand.size:
        raise ValueError(f"plan = {plan!r}: expected a FeedPlan for {demand.size} components")
    lost = frozenset(lost)
    dead = ~(moved_split(plan, lost).sum(axis=1) > 0)
    target = np.clip(np.where(np.isnan(demand), floor, demand), 0.0, ceiling)
    target[dead] = 0.0
    limits = feed_limits(plan, budget, lost)
    weights = np.array([w for _, w, _ in limits])
    cap = np.array([c for _, _, c in limits])
    weights[0, dead] = 0.0                      # the dead draw nothing, from any budget
    grant = _raise(np.zeros_like(target), np.minimum(floor, target), weights, cap, prio)
    grant = _shave(grant, np.zeros_like(grant), weights, cap, prio)
    return _shave(_raise(grant, target, weights, cap, prio), grant, weights, cap, prio)


def contingency_w(demand_w, floor_w, ceiling_w, priority, plan: FeedPlan,
                  budget_w: float = math.inf) -> dict[str, np.ndarray]:
    """For each feed, the allocation (W) to apply at once if that feed is lost: `feed_fill`
    with that feed lost, so it fits the survivors' budgets (and `budget_w`), priority order
    kept. Computed every cycle from the normal allocation, it is ready before any loss."""
    return {name: feed_fill(demand_w, floor_w, ceiling_w, priority, budget_w, plan, {name})
            for name in plan.names}


def check_feed_plan(plan: FeedPlan, floor_w: Sequence[float]) -> list[str]:
    """What makes a plan impossible, one message each: floors (W) that load a feed above its
    budget in normal operation, or a survivor above its budget after losing a feed (naming
    the feeds, the loads and the budgets). Empty when the plan can hold every floor."""
    floor = np.asarray(floor_w, dtype=np.float64)
    if floor.shape != (plan.n_components,):
        return [f"floor_w has shape {floor.shape}: expected ({plan.n_components},)"]
    errors = []
    cases: list[tuple[str, frozenset]] = [("", frozenset())]
    if len(plan.names) > 1:
        cases += [(f"after losing feed {g}, ", frozenset({g})) for g in plan.names]
    for text, lost in cases:
        load = feed_load_w(plan, floor, lost)
        for f, name in enumerate(plan.names):
            if name not in lost and load[f] > plan.budget_w[f]:
                errors.append(f"{text}the floors on feed {name} sum to {load[f]:g} W, above "
                              f"its budget {plan.budget_w[f]:g} W")
    return errors


def loads_after_loss(plan: FeedPlan, alloc_w) -> Mapping[str, np.ndarray]:
    """For each feed g, every feed's load (W) the moment g is lost, before any capping."""
    return {g: feed_load_w(plan, alloc_w, {g}) for g in plan.names}
