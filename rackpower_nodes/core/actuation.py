"""How a new allocation replaces the one the devices hold, keeping the budget at every step.

Pure numpy, shared by the PDU link (`drivers/pdu_link/`, which writes real devices between
the steps) and the evaluation (`core/evaluation.py`, which assumes every write lands):

1. changes smaller than a device's dead band, or than its resolution (they would round to
   what it holds), are not written (the held value stays);
2. values shrink first;
3. then values grow, each by at most what is left of the budget after what is held, in
   component order;
4. a device with a resolution (BMCs: whole watts) holds the value rounded down to it.
"""
from __future__ import annotations

import numpy as np

__all__ = ["grow_within_budget", "round_down", "settle", "skip_small_changes"]


def skip_small_changes(held_w: np.ndarray, want_w: np.ndarray,
                       dead_band_w: np.ndarray | float,
                       resolution_w: np.ndarray | float = 0.0) -> np.ndarray:
    """`want_w` with the held value kept where it differs by less than the dead band or the
    resolution."""
    return np.where(np.abs(want_w - held_w) < np.maximum(dead_band_w, resolution_w),
                    held_w, want_w)


def grow_within_budget(held_w: np.ndarray, want_w: np.ndarray, grow: np.ndarray,
                       budget_w: float) -> np.ndarray:
    """Targets for the components in `grow`: towards `want_w`, each growth cut so that the
    sum of the held values never passes `budget_w` (earlier components first)."""
    room = budget_w - float(held_w.sum())
    target = np.array(held_w, dtype=np.float64)
    for i in np.flatnonzero(grow):
        step = min(want_w[i] - held_w[i], max(room, 0.0))
        target[i] += step
        room -= step
    return target


def round_down(values_w: np.ndarray, resolution_w: np.ndarray | float) -> np.ndarray:
    """Values rounded down to a multiple of the resolution (0: unchanged)."""
    res = np.broadcast_to(np.asarray(resolution_w, dtype=np.float64), np.shape(values_w))
    safe = np.where(res > 0, res, 1.0)
    return np.where(res > 0, np.floor(values_w / safe) * safe, values_w)


def settle(held_w: np.ndarray, want_w: np.ndarray, dead_band_w: np.ndarray | float,
           resolution_w: np.ndarray | float, budget_w: float) -> np.ndarray:
    """What the devices hold once `want_w` is written over `held_w` and every write lands."""
    held = np.array(held_w, dtype=np.float64)
    want = skip_small_changes(held, np.asarray(want_w, dtype=np.float64), dead_band_w,
                              resolution_w)
    shrink = want < held
    held[shrink] = round_down(want, resolution_w)[shrink]
    grow = want > held
    if grow.any():
        held[grow] = round_down(grow_within_budget(held, want, grow, budget_w),
                                resolution_w)[grow]
    return held
