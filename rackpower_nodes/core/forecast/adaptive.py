"""What the forecast service learns while it serves: matured errors and the peak calibration.

:class:`ServingState` belongs to one model in service (:class:`~.serving.ForecastService`
makes a new one with each model it loads) and is fed every closed step's means as they arrive:

- a :class:`~.challengers.ServedForecaster` model is asked through its live calls
  (``forecast``, ``observe``): each measured step matures the forecasts that targeted it, so
  the variant served per component class and the bias it subtracts follow the newest errors;
  any other model is asked through ``predict``;
- with calibration on, the published per-step quantiles are shifted by a
  :class:`~.peak.PeakCalibrator` (conformal per component class, online from the peaks that
  matured) so that their max over the actuation window, which is what the allocator's
  ``forecast_peak`` reads, is calibrated; a :class:`~.peak.PeakTracker` matures the window
  peaks from the same step means. Without scores yet (the first ``min_scores`` matured origins
  of a class) the offsets are 0. The offsets shift every step; p50 <= p90 <= p99 and >= 0 hold
  afterwards.

Components are classed by :func:`~.peak.class_of` (``srv07`` -> ``srv``). Numpy only here; the
members bring their own libraries. Not thread-safe: the service calls it under its lock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.forecast.base import Forecaster
from rackpower_nodes.core.forecast.challengers import ServedForecaster
from rackpower_nodes.core.forecast.features import WindowSpec
from rackpower_nodes.core.forecast.peak import (
    PeakCalibrator, PeakTracker, class_of, forecast_peaks, window_steps)

__all__ = ["CalibrationSettings", "ServingState"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationSettings:
    """Peak calibration of the published quantiles: ``enabled``; the actuation window the
    allocator reads, ``[now + lead_s, now + lead_s + window_s]`` (s; the pdu_actuator's
    ``policy.lead_s``/``policy.window_s``); ``unit`` of the scores (``"scale"``: max_w,
    ``"spread"``: the raw p99 - p50 window-peak spread), ``gamma``, ``buffer``, ``min_scores``
    as in :class:`~.peak.PeakCalibrator`."""

    enabled: bool = True
    lead_s: float = 1.0
    window_s: float = 1.0
    unit: str = "scale"
    gamma: float = 0.005
    buffer: int = 5000
    min_scores: int = 20


class ServingState:
    """The online state of one model in service for ``components`` (ids, max_w in W)."""

    def __init__(self, model: Forecaster, spec: WindowSpec, components: Sequence[str],
                 max_w: np.ndarray, calibration: CalibrationSettings) -> None:
        self.model, self.spec = model, spec
        self.keys = [str(c) for c in components]
        self.classes = [class_of(c) for c in self.keys]
        self.max_w = np.asarray(max_w, np.float64)
        self.served = isinstance(model, ServedForecaster)
        self.last_fed: int | None = None
        self.calibrator: PeakCalibrator | None = None
        self.tracker: PeakTracker | None = None
        if calibration.enabled:
            first, last = window_steps(calibration.lead_s, calibration.window_s, spec.step_s)
            last = min(last, spec.horizon_steps)          # as forecast_peak cuts the window
            first = min(first, last)
            self.calibrator = PeakCalibrator(
                self.classes, first, last, scale_w=self.max_w, gamma=calibration.gamma,
                buffer=calibration.buffer, min_scores=calibration.min_scores,
                unit=calibration.unit)
            self.tracker = PeakTracker(self.calibrator)
        self._offsets = np.full((len(self.keys), 3), np.nan)

    def feed(self, steps: np.ndarray, means: np.ndarray) -> None:
        """Closed steps (k,) global indices, ascending, and their means (k, components),
        normalised by max_w (NaN where a component has none); steps already fed are skipped."""
        for step, row in zip(np.asarray(steps, np.int64), np.asarray(means, np.float64),
                             strict=True):
            if self.last_fed is not None and step <= self.last_fed:
                continue
            self.last_fed = int(step)
            if self.served:
                self.model.observe(float(step) * self.spec.step_s, self.keys, row, self.classes)
            if self.tracker is not None:
                self.tracker.feed(int(step), row * self.max_w)

    def predict(self, x: np.ndarray, last: np.ndarray, use: np.ndarray,
                last_step: np.ndarray) -> np.ndarray:
        """(use.sum(), H, 3) normalised quantiles of the components in ``use``, whose newest
        closed steps are ``last_step`` (global indices, (components,))."""
        idx = np.flatnonzero(use)
        if not self.served:
            return self.model.predict(x[idx], last[idx])
        out = np.empty((len(idx), self.spec.horizon_steps, 3), np.float32)
        for step in np.unique(last_step[idx]):          # one origin per live call
            sel = last_step[idx] == step
            rows = idx[sel]
            out[sel] = self.model.forecast(
                float(step) * self.spec.step_s, [self.keys[i] for i in rows], x[rows],
                last[rows], [self.classes[i] for i in rows])
        return out

    def calibrate(self, q_w: np.ndarray, use: np.ndarray, last_step: np.ndarray) -> np.ndarray:
        """``q_w`` (components, H, 3) W with the calibrated offsets added to the components in
        ``use`` (the others, in fallback, unchanged), ordered and >= 0; the raw and served
        window peaks are issued to the tracker at the newest origin."""
        if self.calibrator is None or not use.any():
            return q_w
        cal, out = self.calibrator, q_w.copy()
        idx = np.flatnonzero(use)
        self._offsets[:] = np.nan
        self._offsets[idx] = cal.offsets_w(idx, forecast_peaks(q_w[idx], cal.first, cal.last))
        p50, p90, p99 = cal.adjust(idx, q_w[idx, :, 0], q_w[idx, :, 1], q_w[idx, :, 2])
        adjusted = np.maximum(np.stack([p50, p90, p99], axis=-1), 0.0)
        out[idx] = np.maximum.accumulate(adjusted, axis=2)
        origin = int(last_step[idx].max())
        raw = np.full((len(self.keys), 3), np.nan)
        served = np.full((len(self.keys), 3), np.nan)
        at = idx[last_step[idx] == origin]
        raw[at] = forecast_peaks(q_w[at], cal.first, cal.last)
        served[at] = forecast_peaks(out[at], cal.first, cal.last)
        self.tracker.issue(origin, raw, served)
        return out

    def offsets_w(self) -> np.ndarray | None:
        """(components, 3) calibration offsets added at the last forecast, W (NaN for a
        component in fallback; None: calibration off)."""
        return None if self.calibrator is None else self._offsets.copy()
