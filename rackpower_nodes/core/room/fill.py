"""Max-min water-filling over a power tree (pure numpy, no rclpy).

`tree_fill` raises the increments of every rack together (in proportion to its weight) and
freezes a rack when it reaches its limit or when a level above it saturates: progressive
filling, which gives the weighted max-min fair share of the levels' headroom. `trim_to_fit`
removes the last floating-point ulps by which a sum could still exceed a rating.
"""
from __future__ import annotations

import math

import numpy as np

TOL_W = 1e-7
"""A rack within this many watts of its limit, or a level with this little headroom, is full."""


def tree_fill(member: np.ndarray, level_room_w: np.ndarray, limit_w: np.ndarray,
              weight: np.ndarray | None = None, tol_w: float = TOL_W) -> np.ndarray:
    """Increments x (W, one per rack) with 0 <= x <= limit_w and, for every level i,
    sum of x over the racks under it (`member[i]`) <= level_room_w[i] (up to float rounding;
    see `trim_to_fit`).

    All racks with room rise together at `weight` W per step (1 each when None: the plain
    max-min fair share); a rack stops at its limit, every rack under a level stops when that
    level is full. A rack with weight 0 or limit 0 gets nothing. Each round freezes at least
    one rack or one level, so at most racks + levels rounds run.
    """
    limit = np.maximum(np.nan_to_num(np.asarray(limit_w, dtype=np.float64)), 0.0)
    n = limit.size
    weight = np.ones(n) if weight is None else np.nan_to_num(np.asarray(weight, float))
    top = float(np.max(weight, initial=0.0))
    # relative weights; one below 1e-12 of the largest would only get rounding noise
    weight = np.where(weight > 1e-12 * top, weight / top, 0.0) if top > 0 else weight * 0.0
    room = np.maximum(np.asarray(level_room_w, dtype=np.float64), 0.0)
    x = np.zeros(n)
    member_f = member.astype(np.float64)
    active = (limit > tol_w) & (weight > 0)
    if member.size:
        active &= ~member[room <= tol_w].any(axis=0)
    for _ in range(n + member.shape[0] + 1):
        if not active.any():
            break
        w = np.where(active, weight, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_rack = np.where(active, (limit - x) / np.where(active, weight, 1.0), np.inf)
            load = member_f @ w if member.size else np.zeros(0)
            t_level = np.where(load > 0, room / np.where(load > 0, load, 1.0), np.inf)
        i_rack = int(np.argmin(t_rack))
        i_level = int(np.argmin(t_level)) if t_level.size else -1
        by_rack = i_level < 0 or t_rack[i_rack] <= t_level[i_level]
        t = float(t_rack[i_rack] if by_rack else t_level[i_level])
        if not math.isfinite(t):
            break
        inc = w * t
        x = np.minimum(x + inc, limit)
        if member.size:
            room = np.maximum(room - member_f @ inc, 0.0)
        done = active & (limit - x <= tol_w)
        if by_rack:
            done[i_rack] = True
            x[i_rack] = limit[i_rack]
        else:
            room[i_level] = 0.0
        active &= ~done
        if member.size:
            active &= ~member[(room <= tol_w) & (load > 0)].any(axis=0)
    return x


def fsum_over(member: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Exact sums (math.fsum) of `values` over the racks under each level."""
    return np.array([math.fsum(values[row]) for row in member], dtype=np.float64)


def trim_to_fit(member: np.ndarray, level_rating_w: np.ndarray, values: np.ndarray,
                low: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Lower `values` towards `low` (never below it) until no level's exact sum exceeds its
    rating; the rack with the smallest `order` under an over-full level gives first. Meant for
    the last rounding ulps: the caller has made the sums fit up to float error."""
    values = values.copy()
    for _ in range(4 * values.size + 64):
        over = fsum_over(member, values) - level_rating_w
        bad = np.flatnonzero(over > 0)
        if not bad.size:
            return values
        level = bad[0]
        movable = member[level] & (values > low)
        if not movable.any():
            return values
        pick = np.flatnonzero(movable)[np.argmin(order[movable])]
        cut = max(float(over[level]), float(np.spacing(values[pick])))
        values[pick] = max(low[pick], values[pick] - cut)
    return values
