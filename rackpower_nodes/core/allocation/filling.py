"""Water-filling: the pure division of a rack budget (W) among components, by priority.

Pure numpy, no rclpy. `water_fill` cuts demands to a budget, lower priorities first;
`water_fill_tiers` grants expected draw before anyone's headroom. Whatever the inputs, the
result sums to at most the budget under every usual float64 summation.
"""
from __future__ import annotations

import math

import numpy as np


def _total(x: np.ndarray) -> float:
    """Largest of the usual float64 sums of `x` (numpy pairwise, running, exact, Python)."""
    if x.size == 0:
        return 0.0
    values = x.tolist()
    try:
        exact = math.fsum(values)
    except OverflowError:
        exact = math.inf
    with np.errstate(over="ignore"):
        return max(float(np.sum(x)), float(np.cumsum(x)[-1]), exact, float(sum(values)))


def _fill_inputs(demand_w, floor_w, ceiling_w, priority, budget_w):
    arrays = {}
    for key, value in (("demand_w", demand_w), ("floor_w", floor_w),
                       ("ceiling_w", ceiling_w), ("priority", priority)):
        arr = np.array(value, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"water_fill: {key} has shape {arr.shape}: expected one dimension")
        arrays[key] = arr
    sizes = {key: arr.size for key, arr in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"water_fill: lengths {sizes}: expected equal lengths")
    demand, floor, ceiling, prio = arrays.values()
    budget = float(budget_w)
    if math.isnan(budget) or budget < 0:
        raise ValueError(f"water_fill: budget_w = {budget_w!r}: expected a number >= 0 (W)")
    for key, arr in (("floor_w", floor), ("ceiling_w", ceiling)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            raise ValueError(f"water_fill: {key}[{bad[0]}] = {float(arr[bad[0]])!r}: expected a "
                             "finite number >= 0 (W)")
    bad = np.flatnonzero(floor > ceiling)
    if bad.size:
        i = bad[0]
        raise ValueError(f"water_fill: floor_w[{i}] = {float(floor[i])!r} > ceiling_w[{i}] = "
                         f"{float(ceiling[i])!r}: expected floor_w <= ceiling_w")
    bad = np.flatnonzero(~np.isfinite(prio))
    if bad.size:
        raise ValueError(f"water_fill: priority[{bad[0]}] = {float(prio[bad[0]])!r}: expected a "
                         "finite number")
    return demand, floor, ceiling, prio, budget


def _water_level(excess: np.ndarray, left: float) -> float:
    """Level L >= 0 with sum(min(excess, L)) == left, for 0 <= left < sum(excess)."""
    s = np.sort(excess)
    m = s.size
    before = np.concatenate(([0.0], np.cumsum(s)[:-1]))
    with np.errstate(over="ignore"):
        spend = before + (m - np.arange(m)) * s
    j = int(np.argmax(spend >= left)) if np.any(spend >= left) else m - 1
    return max(0.0, (left - before[j]) / (m - j))


def _fill_levels(grant, target, prio, budget) -> np.ndarray:
    """Add the budget left after `grant` to the excess over it, highest priority level first."""
    result = grant.copy()
    left = budget - _total(grant)
    for level in np.unique(prio)[::-1]:
        idx = np.flatnonzero(prio == level)
        excess = target[idx] - grant[idx]
        need = _total(excess)
        if need <= left:
            result[idx] = target[idx]
            left -= need
            continue
        lvl = _water_level(excess, max(left, 0.0))
        result[idx] = np.where(excess <= lvl, target[idx],
                               np.minimum(grant[idx] + lvl, target[idx]))
        break
    return result


def _grant_by_priority(grant, prio, budget) -> np.ndarray:
    """Floors that do not all fit: whole levels from the highest, the first short one scaled."""
    result = np.zeros_like(grant)
    left = budget
    for level in np.unique(prio)[::-1]:
        idx = np.flatnonzero(prio == level)
        need = _total(grant[idx])
        if need <= left:
            result[idx] = grant[idx]
            left -= need
            continue
        top = float(np.max(grant[idx]))
        if top > 0 and left > 0:
            share = grant[idx] / top  # scaled first so that huge floors cannot overflow
            result[idx] = np.minimum(grant[idx], left * (share / _total(share)))
        break
    return result


def _shave(x, low, prio, budget) -> np.ndarray:
    """Lower `x` towards `low`, lowest priority first, until every float64 sum fits `budget`."""
    x = x.copy()
    for _ in range(4 * x.size + 64):
        over = _total(x) - budget
        if over <= 0:
            return x
        room = x - low
        movable = room > 0
        if not movable.any():
            break
        lowest = prio[movable].min()
        pick = np.where(movable & (prio == lowest), room, -1.0)
        i = int(np.argmax(pick))
        x[i] = max(low[i], x[i] - max(over, float(np.spacing(x[i]))))
    return low.copy() if _total(low) <= budget else np.zeros_like(x)


def water_fill(demand_w, floor_w, ceiling_w, priority, budget_w) -> np.ndarray:
    """Cut per-component demands (W) to a budget (W), lower priorities first.

    The target is demand clipped to [0, ceiling_w] (NaN demand asks for the floor). Targets
    that fit the budget are returned as they are. Otherwise every component first gets
    min(floor, target), or, when even those do not fit, they are granted by priority level,
    highest first, the first level that does not fit scaled proportionally. What budget is left
    goes to the excess over those grants, highest level first: a level whose excess fits gets
    it all, the first one that does not fit is water-filled (one common level), lower levels
    get nothing more. The result never exceeds its target or ceiling, and sums to at most
    `budget_w` under numpy, running, exact and Python float64 summation alike.

    Raises ValueError for arrays of different lengths, a negative or NaN budget, a floor or
    ceiling that is negative or not finite, a floor above its ceiling, or a non-finite priority.
    """
    demand, floor, ceiling, prio, budget = _fill_inputs(
        demand_w, floor_w, ceiling_w, priority, budget_w)
    target = np.clip(np.where(np.isnan(demand), floor, demand), 0.0, ceiling)
    if _total(target) <= budget:
        return target
    grant = np.minimum(floor, target)
    if _total(grant) <= budget:
        return _shave(_fill_levels(grant, target, prio, budget), grant, prio, budget)
    granted = _grant_by_priority(grant, prio, budget)
    return _shave(granted, np.zeros_like(granted), prio, budget)


def water_fill_tiers(need_w, want_w, floor_w, ceiling_w, priority, budget_w) -> np.ndarray:
    """Water-filling in two tiers: first every component's `need_w` (its expected draw,
    capped at `want_w`) by priority as in `water_fill`, floors included; then what budget is
    left goes to the headroom up to `want_w`, again highest priority first. Under a short
    budget a component thus keeps its expected draw while others lose headroom, and lower
    priorities lose first within each tier. The first tier asks for at least the floors; NaN
    need or want asks for the floor only. Same invariants as `water_fill`."""
    floors = np.array(floor_w, dtype=np.float64)
    want = np.array(want_w, dtype=np.float64)
    if want.shape == floors.shape:
        want = np.where(np.isnan(want), floors, want)
    need = np.fmin(np.fmax(np.array(need_w, dtype=np.float64), floors), want)
    first = water_fill(need, floor_w, ceiling_w, priority, budget_w)
    _, floor, ceiling, prio, budget = _fill_inputs(want, floor_w, ceiling_w, priority, budget_w)
    left = budget - _total(first)
    if not left > 0:
        return first
    extra_want = np.maximum(want - first, 0.0)
    extra = water_fill(extra_want, np.zeros_like(first), np.maximum(ceiling - first, 0.0),
                       prio, left)
    top = np.maximum(np.clip(want, 0.0, ceiling), first)      # no rounding above the want
    return _shave(np.minimum(first + extra, top), first, prio, budget)
