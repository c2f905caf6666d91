"""A rack's demand summary for its power coordinator (pure, no rclpy).

`rack_demand` groups the rack's per-component floors and demands by priority class into a
`RackDemand`; `committed_w` is what the rack's devices hold, which the rack reports as the
budget it has applied (`RackDemand.acked_budget_w`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from rackpower_nodes.core.room.types import BUDGET_SOURCES, RackDemand


def _array(name: str, values, n: int | None) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} has shape {arr.shape}: expected one value per component")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} values: expected {n}, one per component")
    return arr


def rack_demand(rack: str, stamp_unix: float, window_s: float, priority: Sequence[int],
                floor_w: Sequence[float], demand_w: Sequence[float], rating_w: float,
                guaranteed_w: float, total_w: Mapping[str, float] | None = None,
                acked_seq: int = 0, acked_budget_w: float = math.nan,
                budget_source: str = "config") -> RackDemand:
    """The `RackDemand` of a rack from per-component arrays (W), one entry per component.

    Components are grouped by `priority`, classes in descending order; a class's floor is
    the sum of its components' floors and its demand the sum of max(demand, floor) (a NaN
    demand asks for the floor). Raises ValueError naming the argument for arrays of different
    lengths, a negative or non-finite floor, an infinite demand, a non-integer priority, a
    rating that is not > 0 or a guaranteed share outside 0 .. rating, a negative acked_seq,
    or a budget_source not in BUDGET_SOURCES.
    """
    prio = _array("priority", priority, None)
    n = prio.size
    floor, demand = _array("floor_w", floor_w, n), _array("demand_w", demand_w, n)
    bad = np.flatnonzero(~np.isfinite(prio) | (prio != np.round(prio)))
    if bad.size:
        raise ValueError(f"priority[{bad[0]}] = {float(prio[bad[0]])!r}: expected an integer")
    bad = np.flatnonzero(~np.isfinite(floor) | (floor < 0))
    if bad.size:
        raise ValueError(f"floor_w[{bad[0]}] = {float(floor[bad[0]])!r}: expected a finite "
                         "number >= 0 (W)")
    bad = np.flatnonzero(np.isinf(demand))
    if bad.size:
        raise ValueError(f"demand_w[{bad[0]}] = {float(demand[bad[0]])!r}: expected a finite "
                         "number or NaN (W)")
    if not (math.isfinite(rating_w) and rating_w > 0):
        raise ValueError(f"rating_w = {rating_w!r}: expected a finite number > 0 (W)")
    if not (math.isfinite(guaranteed_w) and 0 <= guaranteed_w <= rating_w):
        raise ValueError(f"guaranteed_w = {guaranteed_w!r}: expected a number in 0 .. "
                         f"rating_w = {rating_w!r} (W)")
    if int(acked_seq) != acked_seq or acked_seq < 0:
        raise ValueError(f"acked_seq = {acked_seq!r}: expected an integer >= 0")
    if budget_source not in BUDGET_SOURCES:
        raise ValueError(f"budget_source = {budget_source!r}: expected one of "
                         f"{', '.join(BUDGET_SOURCES)}")
    want = np.fmax(demand, floor)
    classes = sorted({int(p) for p in prio}, reverse=True)
    return RackDemand(
        rack=rack, stamp_unix=float(stamp_unix), window_s=float(window_s),
        priority=tuple(classes),
        floor_w=tuple(math.fsum(floor[prio == p]) for p in classes),
        demand_w=tuple(math.fsum(want[prio == p]) for p in classes),
        rating_w=float(rating_w), guaranteed_w=float(guaranteed_w),
        total_w={str(k): float(v) for k, v in (total_w or {}).items()},
        acked_seq=int(acked_seq), acked_budget_w=float(acked_budget_w),
        budget_source=budget_source)


def committed_w(held_w: Sequence[float], ceiling_w: Sequence[float]) -> float:
    """What a rack's devices hold (W): the sum of the allocations they confirm, a component
    whose held value is NaN (nothing enforces it) counted at its ceiling. Raises ValueError
    for arrays of different lengths or a NaN/negative ceiling where it is needed."""
    held = _array("held_w", held_w, None)
    ceiling = _array("ceiling_w", ceiling_w, held.size)
    counted = np.where(np.isnan(held), ceiling, held)
    bad = np.flatnonzero(np.isnan(counted) | (counted < 0))
    if bad.size:
        i = bad[0]
        raise ValueError(f"held_w[{i}] = {float(held[i])!r} with ceiling_w[{i}] = "
                         f"{float(ceiling[i])!r}: expected a held value or a ceiling >= 0 (W)")
    return math.fsum(counted.tolist())
