"""Trade-off curves of the allocation modes and their comparison at matched stranded power.

Pure numpy. A mode run at one margin gives one point: mean stranded power (W, allocated in
force minus served, rack) against what the margin failed to buy: under-allocated energy (Wh)
and under-allocated time (%). Sweeping the margin (the same structure for every mode:
``+frac x power, at least min_w W``) gives a curve per mode. Two modes are compared where
their curves overlap, never point against point: :func:`matched_points` picks stranded powers
inside the overlap of every curve and :func:`at_stranded` reads each curve there by linear
interpolation between its neighbouring points (a curve is first reduced to its lower envelope:
a point that strands more *and* loses more than another is never the mode's best).

:func:`by_event_class` splits a run's shortfall by what the component was doing when it came:
within ``after_start_s`` of a job start on its host, else by the running job's power class
(``cpu``, ``gpu-train``, ``gpu-infer``, ``io``), else ``idle`` (no job known).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Curve", "TradeoffError", "at_stranded", "by_event_class", "matched_points",
           "ratios_at"]

METRICS = ("under_alloc_wh", "under_alloc_pct")


class TradeoffError(ValueError):
    """Curves that cannot be compared; the message names the mode and the reason."""


@dataclass(frozen=True)
class Curve:
    """One mode's points: ``stranded_w`` (mean W) and each metric of :data:`METRICS`."""

    mode: str
    stranded_w: np.ndarray
    values: Mapping[str, np.ndarray]

    @classmethod
    def from_rows(cls, mode: str, rows: Sequence[Mapping]) -> Curve:
        """From evaluation rows (``ModeResult.row`` dicts) of one mode, any order."""
        if not rows:
            raise TradeoffError(f"mode {mode!r}: no points")
        stranded = np.array([float(r["stranded_mean_w"]) for r in rows])
        if not np.all(np.isfinite(stranded)):
            raise TradeoffError(f"mode {mode!r}: a point has no stranded power")
        values = {m: np.array([float(r[m]) for r in rows]) for m in METRICS}
        return cls(mode, stranded, values)

    def envelope(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(stranded, metric) of the lower envelope, stranded ascending: each kept point
        loses strictly less than every point that strands less."""
        order = np.lexsort((self.values[metric], self.stranded_w))
        xs, ys = self.stranded_w[order], self.values[metric][order]
        keep_x, keep_y = [], []
        for x, y in zip(xs, ys):
            if keep_y and y >= keep_y[-1]:
                continue
            if keep_x and x == keep_x[-1]:
                continue
            keep_x.append(x)
            keep_y.append(y)
        return np.array(keep_x), np.array(keep_y)


def at_stranded(curve: Curve, metric: str, stranded_w: float) -> float:
    """``metric`` of ``curve``'s lower envelope at ``stranded_w`` (linear between points);
    NaN outside the curve's stranded range (never extrapolated)."""
    xs, ys = curve.envelope(metric)
    if len(xs) == 0 or stranded_w < xs[0] - 1e-9 or stranded_w > curve.stranded_w.max() + 1e-9:
        return math.nan
    if stranded_w >= xs[-1]:
        return float(ys[-1])     # past the last improving point the envelope is flat
    return float(np.interp(stranded_w, xs, ys))


def matched_points(curves: Sequence[Curve], n: int = 3) -> np.ndarray:
    """``n`` stranded powers (W) spread over the overlap of all curves' ranges (at 1/(n+1),
    ..., n/(n+1) of it). Raises when the ranges do not overlap."""
    lo = max(float(c.stranded_w.min()) for c in curves)
    hi = min(float(c.stranded_w.max()) for c in curves)
    if not hi > lo:
        names = ", ".join(f"{c.mode} [{c.stranded_w.min():.0f}, {c.stranded_w.max():.0f}] W"
                          for c in curves)
        raise TradeoffError(f"the curves' stranded ranges do not overlap ({names}): widen "
                            "the margin sweep")
    return lo + (hi - lo) * np.arange(1, n + 1) / (n + 1)


def ratios_at(curve: Curve, reference: Curve, points: Sequence[float],
              metric: str = "under_alloc_wh") -> list[tuple[float, float, float, float]]:
    """Per point: (stranded W, curve's metric, reference's metric, ratio curve/reference);
    the ratio is NaN where the reference is 0 and the curve is not."""
    out = []
    for x in points:
        a, b = at_stranded(curve, metric, x), at_stranded(reference, metric, x)
        if b > 0:
            ratio = a / b
        else:
            ratio = 1.0 if a == 0 else math.nan
        out.append((float(x), a, b, ratio))
    return out


def by_event_class(short_w: np.ndarray, t_unix: np.ndarray, hosts: Sequence[str],
                   events_at, after_start_s: float = 60.0, every: int = 10) -> dict[str, float]:
    """Under-allocated energy (Wh) per event class.

    ``short_w`` (steps, components): demand minus the allocation in force, W (negative
    counts 0); ``t_unix`` (steps,) step starts; ``hosts`` the component ids; ``events_at(t)``
    the jobs known at ``t`` (``JobLog.events_at``). The class of a component at a step is
    looked up every ``every`` steps (a job changes class on a scale of seconds, not steps).
    """
    short = np.clip(np.asarray(short_w, dtype=np.float64), 0.0, None)
    t = np.asarray(t_unix, dtype=np.float64)
    if short.shape != (len(t), len(hosts)):
        raise TradeoffError(f"short_w has shape {short.shape}, expected ({len(t)}, "
                            f"{len(hosts)})")
    dt = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
    out: dict[str, float] = {}
    for a in range(0, len(t), every):
        block = short[a:a + every]
        if not block.any():
            continue
        snap = events_at(float(t[a]))
        for i, host in enumerate(hosts):
            e = float(block[:, i].sum()) * dt / 3600.0
            if e <= 0:
                continue
            cls = _event_class(snap.for_host(host) if snap is not None else (), float(t[a]),
                               after_start_s)
            out[cls] = out.get(cls, 0.0) + e
    return out


def _event_class(jobs, t: float, after_start_s: float) -> str:
    running = [j for j in jobs if j.state == "running" and j.start_unix <= t]
    if any(t - j.start_unix <= after_start_s for j in running):
        return "job start"
    if not running:
        return "idle"
    newest = max(running, key=lambda j: j.start_unix)
    return newest.power_class or "job"
