"""Conformal calibration of window-peak forecasts per component class, recalibrated online.

See the package docstring (:mod:`rackpower_nodes.core.forecast.peak`) for the API and the
scores. Numpy only. Powers in W; scores in units of each component's ``scale_w``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.core.forecast.peak.windows import QUANTILES, class_of, forecast_peaks

__all__ = ["PeakCalibrator", "PeakTracker", "replay"]


class _ClassState:
    """One class: a ring of the newest scores (n, Q) and the ACI level per quantile."""

    def __init__(self, size: int, quantiles: np.ndarray) -> None:
        self.scores = np.empty((size, len(quantiles)))
        self.count = 0
        self.pos = 0
        self.target = quantiles
        self.level = quantiles.copy()
        self.offsets: np.ndarray | None = None

    def add(self, scores: np.ndarray) -> None:
        for row in np.atleast_2d(scores):
            self.scores[self.pos] = row
            self.pos = (self.pos + 1) % len(self.scores)
            self.count = min(self.count + 1, len(self.scores))
        self.offsets = None

    def current(self, min_scores: int) -> np.ndarray:
        if self.offsets is None:
            if self.count < min_scores:
                self.offsets = np.zeros(len(self.target))
            else:
                held = self.scores[:self.count]
                self.offsets = np.array([
                    np.quantile(held[:, k], min(max(lvl, 0.0), 1.0), method="higher")
                    for k, lvl in enumerate(self.level)])
        return self.offsets


class PeakCalibrator:
    """Split-conformal offsets per component class, steered online by adaptive conformal
    inference.

    Args:
        classes: (n_components,) class label of each component (``for_components`` derives
            them from ids); first, last: the window's 1-based horizon steps.
        quantiles: the levels of the three arrays adjusted (p50, p90, p99).
        scale_w: (n_components,) W per score unit (max_w); None: scores in W.
        gamma: ACI step per matured origin; 0 keeps the split-conformal level.
        buffer: newest scores kept per class (the calibration slice first).
        min_scores: a class with fewer scores gets no offset.
        unit: what a score is divided by. ``"scale"``: the component's ``scale_w`` (offsets
            are a fixed share of max_w); ``"spread"``: the origin's raw p99 - p50 window-peak
            spread, at least ``min_spread`` x scale_w (locally adaptive: offsets grow where the
            forecaster itself is unsure and shrink where it is sure).
    """

    def __init__(self, classes: Sequence[str], first: int, last: int,
                 quantiles: Sequence[float] = QUANTILES, scale_w: Sequence[float] | None = None,
                 gamma: float = 0.005, buffer: int = 5000, min_scores: int = 20,
                 unit: str = "scale", min_spread: float = 0.005) -> None:
        self.classes = [str(c) for c in classes]
        n = len(self.classes)
        if not n:
            raise ValueError("PeakCalibrator: classes is empty; expected one per component")
        if not 1 <= first <= last:
            raise ValueError(f"first = {first!r}, last = {last!r}: expected 1 <= first <= last")
        self.first, self.last = int(first), int(last)
        self.quantiles = np.asarray(quantiles, np.float64)
        if (self.quantiles.ndim != 1 or np.any(np.diff(self.quantiles) <= 0)
                or np.any((self.quantiles <= 0) | (self.quantiles >= 1))):
            raise ValueError(f"quantiles = {quantiles!r}: expected increasing levels in (0, 1)")
        scale = np.ones(n) if scale_w is None else np.asarray(scale_w, np.float64)
        if scale.shape != (n,) or not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError(f"scale_w = {scale_w!r}: expected {n} finite values > 0, W")
        if not (math.isfinite(gamma) and 0 <= gamma < 1):
            raise ValueError(f"gamma = {gamma!r}: expected a number in [0, 1)")
        if buffer < 1 or min_scores < 1:
            raise ValueError(f"buffer = {buffer!r}, min_scores = {min_scores!r}: expected >= 1")
        if unit not in ("scale", "spread") or not (math.isfinite(min_spread)
                                                   and min_spread > 0):
            raise ValueError(f"unit = {unit!r}, min_spread = {min_spread!r}: expected 'scale' "
                             "or 'spread', and a fraction of scale_w > 0")
        self.unit, self.min_spread = unit, float(min_spread)
        self.scale_w = scale
        self.gamma, self.min_scores = float(gamma), int(min_scores)
        self._state = {c: _ClassState(int(buffer), self.quantiles)
                       for c in dict.fromkeys(self.classes)}

    @classmethod
    def for_components(cls, ids: Sequence[str], mapping: dict[str, str] | None = None,
                       **kwargs) -> PeakCalibrator:
        """Classes from ``mapping`` (id -> class) where given, else :func:`class_of` (id)."""
        mapping = mapping or {}
        return cls([mapping.get(i, class_of(i)) for i in ids], **kwargs)

    def _unit_w(self, comp: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """W per score unit for components ``comp`` (...) with raw peaks (..., Q)."""
        scale = self.scale_w[comp]
        if self.unit == "scale":
            return scale
        return np.maximum(raw[..., -1] - raw[..., 0], self.min_spread * scale)

    def _scores(self, component, raw_peaks, realised) -> tuple[np.ndarray, np.ndarray]:
        comp = np.atleast_1d(np.asarray(component, np.int64))
        raw = np.asarray(raw_peaks, np.float64).reshape(len(comp), len(self.quantiles))
        real = np.atleast_1d(np.asarray(realised, np.float64))
        if real.shape != comp.shape or comp.min() < 0 or comp.max() >= len(self.classes):
            raise ValueError(f"component {component!r} / realised {realised!r}: expected "
                             f"indices in 0..{len(self.classes) - 1} and one peak each")
        return comp, (real[:, None] - raw) / self._unit_w(comp, raw)[:, None]

    def calibrate(self, component, raw_peaks, realised) -> None:
        """Split conformal from a held-out slice: its scores fill the classes' buffers and
        each level restarts at the conformal ``ceil((n + 1) q) / n`` of the class's count."""
        comp, scores = self._scores(component, raw_peaks, realised)
        ok = np.all(np.isfinite(scores), axis=1)
        for c in dict.fromkeys(self.classes):
            st = self._state[c]
            st.add(scores[ok & (np.array(self.classes)[comp] == c)])
            n = max(st.count, 1)
            st.level = np.minimum(np.ceil((n + 1) * self.quantiles) / n, 1.0)
            st.offsets = None

    def offsets_w(self, component, raw_peaks=None) -> np.ndarray:
        """(..., Q) offsets now in force for component index/indices, W; ``raw_peaks``
        (..., Q) W, the origins' raw window peaks, are needed with ``unit="spread"``."""
        comp = np.asarray(component, np.int64)
        rows = np.array([self._state[self.classes[i]].current(self.min_scores)
                         for i in comp.ravel()]).reshape(*comp.shape, -1)
        if self.unit == "spread" and raw_peaks is None:
            raise ValueError("offsets_w: unit='spread' needs the raw window peaks")
        raw = None if raw_peaks is None else np.asarray(raw_peaks, np.float64)
        return rows * self._unit_w(comp, raw)[..., None]

    def adjust(self, component, p50, p90, p99) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated per-step arrays: each quantile + its offset on every step, then
        p90 >= p50 and p99 >= p90 per step. ``component``: an index with (horizon,) arrays or
        an index array with (len, horizon) arrays (W)."""
        arrays = [np.asarray(a, np.float64) for a in (p50, p90, p99)]
        raw = None
        if self.unit == "spread":
            stacked = np.stack(arrays, axis=-1)                     # (..., horizon, Q)
            raw = forecast_peaks(stacked.reshape(-1, *stacked.shape[-2:]), self.first,
                                 self.last).reshape(*stacked.shape[:-2], -1)
        off = self.offsets_w(component, raw)
        out = [a + off[..., k, None] if off.ndim > 1 else a + off[k]
               for k, a in enumerate(arrays)]
        out[1] = np.maximum(out[1], out[0])
        out[2] = np.maximum(out[2], out[1])
        return out[0], out[1], out[2]

    def adjust_peaks(self, component, raw_peaks) -> np.ndarray:
        """The window peaks of ``adjust``'s arrays from the raw peaks (..., Q), W: the max
        over steps of the ordered arrays is the cumulative max of the shifted peaks."""
        raw = np.asarray(raw_peaks, np.float64)
        shifted = raw + self.offsets_w(component, raw)
        return np.maximum.accumulate(shifted, axis=-1)

    def observe(self, component: int, raw_peaks, realised: float, served_peaks=None) -> None:
        """A matured origin of one component: its raw forecast peaks (Q,), W, the realised
        peak, W, and the peaks as served (default: the raw ones adjusted now). Skipped when
        any is NaN."""
        comp, scores = self._scores(component, raw_peaks, realised)
        if not np.all(np.isfinite(scores)):
            return
        served = (self.adjust_peaks(int(comp[0]), raw_peaks) if served_peaks is None
                  else np.asarray(served_peaks, np.float64))
        st = self._state[self.classes[int(comp[0])]]
        miss = (float(realised) > served).astype(np.float64)
        st.level = np.clip(st.level + self.gamma * (miss - (1.0 - self.quantiles)), 0.0, 1.0)
        st.add(scores)


def replay(cal: PeakCalibrator, component: np.ndarray, origin_step: np.ndarray,
           raw_peaks: np.ndarray, realised: np.ndarray, online: bool = True) -> np.ndarray:
    """Serve a test stream through ``cal`` as a live service would; (n, Q) served peaks, W.

    Origins are taken in ``origin_step`` order; before serving one at step s, every origin
    whose window ended by s (``step + cal.last <= s``) is observed (``online``; else the
    calibrator stays as it is)."""
    order = np.argsort(origin_step, kind="stable")
    comp = np.asarray(component, np.int64)
    steps = np.asarray(origin_step, np.int64)
    raw = np.asarray(raw_peaks, np.float64)
    served = np.empty_like(raw)
    done = 0
    for pos, i in enumerate(order):
        while online and done < pos and steps[order[done]] + cal.last <= steps[i]:
            j = order[done]
            cal.observe(int(comp[j]), raw[j], float(realised[j]), served[j])
            done += 1
        served[i] = cal.adjust_peaks(int(comp[i]), raw[i])
    return served


class PeakTracker:
    """Drives ``cal.observe`` from the realised step means of a live service.

    ``issue(step, raw_peaks, served_peaks)`` at each forecast (origin = the last measured
    step, peaks (n_components, Q), W); ``feed(step, means_w)`` with every step's means
    (n_components,), W. When step ``origin + last`` arrives, the origin is observed with
    the max of the means of steps ``origin + first .. origin + last`` (a component with a
    missing step is skipped)."""

    def __init__(self, cal: PeakCalibrator) -> None:
        self.cal = cal
        self._pending: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._means: dict[int, np.ndarray] = {}

    def issue(self, step: int, raw_peaks, served_peaks) -> None:
        self._pending[int(step)] = (np.asarray(raw_peaks, np.float64),
                                    np.asarray(served_peaks, np.float64))

    def feed(self, step: int, means_w) -> int:
        """Record one step's means; returns how many origins matured and were observed."""
        step = int(step)
        self._means[step] = np.asarray(means_w, np.float64)
        matured = 0
        for origin in [o for o in self._pending if o + self.cal.last <= step]:
            raw, served = self._pending.pop(origin)
            rows = [self._means.get(s) for s in range(origin + self.cal.first,
                                                      origin + self.cal.last + 1)]
            if any(r is None for r in rows):
                continue
            peak = np.max(np.stack(rows), axis=0)
            for i in range(len(peak)):
                self.cal.observe(i, raw[i], float(peak[i]), served[i])
            matured += 1
        oldest = min(self._pending, default=step) + self.cal.first
        for s in [s for s in self._means if s < min(oldest, step - self.cal.last)]:
            del self._means[s]
        return matured
