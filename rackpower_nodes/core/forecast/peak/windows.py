"""Window peaks (realised and forecast), the no-training baseline and the headroom metric.

Definitions: the package docstring (:mod:`rackpower_nodes.core.forecast.peak`). Numpy only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["QUANTILES", "baseline_peaks", "class_of", "forecast_peaks", "headroom_for_coverage",
           "peak_changes", "realised_peaks", "window_steps"]

QUANTILES = (0.5, 0.9, 0.99)
_CHUNK = 2048                       # origins per vectorised quantile call


def window_steps(lead_s: float, window_s: float, step_s: float) -> tuple[int, int]:
    """(first, last) 1-based horizon steps of the window [lead_s, lead_s + window_s] after the
    origin (s), by forecast_peak's rule: every step overlapping it by more than an instant."""
    for key, value in (("lead_s", lead_s), ("window_s", window_s), ("step_s", step_s)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{key} = {value!r}: expected a finite number >= 0, s")
    if step_s <= 0 or window_s <= 0:
        raise ValueError(f"step_s = {step_s!r}, window_s = {window_s!r}: expected both > 0, s")

    def snap(u: float) -> float:
        return float(round(u)) if abs(u - round(u)) < 1e-9 else u

    first = math.floor(snap(lead_s / step_s)) + 1
    last = max(math.ceil(snap((lead_s + window_s) / step_s)), first)
    return first, last


def _check_window(first: int, last: int) -> None:
    if not (isinstance(first, (int, np.integer)) and isinstance(last, (int, np.integer))
            and 1 <= first <= last):
        raise ValueError(f"window steps first = {first!r}, last = {last!r}: expected integers "
                         "with 1 <= first <= last")


def realised_peaks(power: np.ndarray, first: int, last: int) -> np.ndarray:
    """(n,) float64: for each origin j, ``max(power[j + first .. j + last])`` (W); NaN for the
    last ``last`` origins, whose window is not complete. ``power``: (n,) step means, W."""
    _check_window(first, last)
    p = np.asarray(power, np.float64)
    if p.ndim != 1:
        raise ValueError(f"power has shape {p.shape}: expected (n,) step means")
    out = np.full(len(p), np.nan)
    if len(p) > last:
        win = sliding_window_view(p[first:], last - first + 1)   # row i: steps i+first..i+last
        out[:len(p) - last] = win[:len(p) - last].max(axis=1)
    return out


def forecast_peaks(quantiles: np.ndarray, first: int, last: int) -> np.ndarray:
    """Max over horizon steps first..last of ``quantiles`` (..., horizon[, Q]) -> (...[, Q]).

    The horizon axis is the second to last for a 3-d (n, horizon, Q) array, else the last."""
    _check_window(first, last)
    q = np.asarray(quantiles, np.float64)
    axis = 1 if q.ndim == 3 else q.ndim - 1
    if q.shape[axis] < last:
        raise ValueError(f"forecast has {q.shape[axis]} horizon steps: the window needs {last}")
    return np.take(q, np.arange(first - 1, last), axis=axis).max(axis=axis)


def peak_changes(power: np.ndarray, first: int, last: int) -> np.ndarray:
    """(n,) realised peak - last measured step per origin, W (NaN where not complete)."""
    return realised_peaks(power, first, last) - np.asarray(power, np.float64)


def baseline_peaks(last_w: np.ndarray, changes: np.ndarray, mature_after: int,
                   trailing: int = 1800, min_history: int = 30,
                   prior: Sequence[float] | None = None,
                   quantiles: Sequence[float] = QUANTILES) -> np.ndarray:
    """The no-training peak forecast per origin of one component's time-ordered origins.

    Args:
        last_w: (n,) last measured step at each origin, W.
        changes: (n,) realised peak - last of each origin, W (NaN: unknown, e.g. not complete).
        mature_after: origin i's change is known from origin ``i + mature_after`` on (the
            window's last step over the origin stride, rounded up).
        trailing: the newest matured origins used; min_history: below this many known ones,
            ``prior`` (one change per quantile, W) is used; without a prior, 0.

    Returns:
        (n, len(quantiles)) float64 peak forecasts, W, non-decreasing along the quantiles.
    """
    last_w = np.asarray(last_w, np.float64)
    d = np.asarray(changes, np.float64)
    if last_w.shape != d.shape or last_w.ndim != 1:
        raise ValueError(f"last_w {last_w.shape} and changes {d.shape}: expected equal (n,)")
    if mature_after < 1 or trailing < 1 or min_history < 1:
        raise ValueError(f"mature_after = {mature_after}, trailing = {trailing}, min_history = "
                         f"{min_history}: expected integers >= 1")
    qs = np.asarray(quantiles, np.float64)
    fallback = np.zeros(len(qs)) if prior is None else np.asarray(prior, np.float64)
    if fallback.shape != qs.shape:
        raise ValueError(f"prior has {fallback.size} values: expected one per quantile "
                         f"({qs.size})")
    n = len(d)
    out = np.tile(fallback, (n, 1))
    # origin j knows the changes of origins 0 .. j - mature_after: the newest `trailing` of them
    windows = sliding_window_view(np.concatenate([np.full(trailing, np.nan), d]), trailing)
    hi = np.arange(n) - mature_after + 1                  # row hi: d[hi - trailing .. hi - 1]
    rows = np.flatnonzero(hi >= min_history)
    for start in range(0, len(rows), _CHUNK):
        idx = rows[start:start + _CHUNK]
        w = windows[hi[idx]]
        known = np.isfinite(w)
        counts = known.sum(axis=1)
        full = counts == trailing
        q = np.empty((len(idx), len(qs)))
        q[full] = np.quantile(w[full], qs, axis=1).T
        for r in np.flatnonzero(~full & (counts >= min_history)):   # young or gappy rows
            q[r] = np.quantile(w[r][known[r]], qs)
        use = counts >= min_history
        out[idx[use]] = q[use]
    return last_w[:, None] + np.maximum.accumulate(out, axis=1)


def headroom_for_coverage(last_w: np.ndarray, p99_peak_w: np.ndarray, realised_w: np.ndarray,
                          target: float = 0.99) -> tuple[float, float]:
    """(headroom W, factor c): ``c * mean(m)`` with ``m = max(p99 peak - last, 0)`` and ``c``
    the smallest factor with ``realised <= last + c m`` for a ``target`` fraction of origins.

    Origins with a NaN anywhere are left out; infinite when no factor reaches the target."""
    last_w, peak, real = (np.asarray(a, np.float64) for a in (last_w, p99_peak_w, realised_w))
    keep = np.isfinite(last_w) & np.isfinite(peak) & np.isfinite(real)
    if not keep.any():
        raise ValueError("headroom_for_coverage: no origin with finite last, peak and realised")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target = {target!r}: expected a fraction in (0, 1)")
    m = np.maximum(peak[keep] - last_w[keep], 0.0)
    rise = real[keep] - last_w[keep]
    need = np.zeros(len(m))
    up = rise > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        need[up] = np.where(m[up] > 0, rise[up] / m[up], np.inf)
    k = math.ceil(target * len(need)) - 1
    c = float(np.partition(need, k)[k])
    return (c * float(m.mean()) if math.isfinite(c) else math.inf), c


def class_of(component_id: str) -> str:
    """Default component class: the id's leading letters (``srv07`` -> ``srv``, ``tor-a`` ->
    ``tor``); for ``<server>/<workload>`` ids (BSC) the server."""
    if "/" in component_id:
        return component_id.split("/", 1)[0]
    m = re.match(r"[A-Za-z]+", component_id)
    return m.group(0) if m else component_id

