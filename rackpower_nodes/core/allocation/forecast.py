"""The power forecast as the controller sees it, and its peak over the actuation window.

Pure numpy, no rclpy. Powers in W, times in s (Unix time for instants). `ForecastView` holds
the p50/p90/p99 quantiles per component and horizon step, in the controller's order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation.policy import QUANTILES, PolicyConfig, _is_number


def _frozen_array(value, dtype=np.float64) -> np.ndarray:
    arr = np.array(value, dtype=dtype)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class ForecastView:
    """A power forecast in the controller's component order.

    `t_unix`: forecast origin, s. Step k (1-based) covers [t_unix + (k-1) step_s, t_unix +
    k step_s]. `p50_w`, `p90_w`, `p99_w`: (n_components, horizon) W, NaN where unknown.
    `model`: "name version". `fallback`: (n,) bool, True where the persistence fallback made it.
    """

    t_unix: float
    step_s: float
    p50_w: np.ndarray
    p90_w: np.ndarray
    p99_w: np.ndarray
    model: str = ""
    fallback: np.ndarray | None = None

    def __post_init__(self):
        if not _is_number(self.t_unix) or not math.isfinite(self.t_unix):
            raise ValueError(f"ForecastView t_unix = {self.t_unix!r}: expected a finite time, s")
        if not _is_number(self.step_s) or not math.isfinite(self.step_s) or self.step_s <= 0:
            raise ValueError(f"ForecastView step_s = {self.step_s!r}: expected a finite "
                             "number > 0, s")
        shape = None
        for key in QUANTILES:
            arr = _frozen_array(getattr(self, f"{key}_w"))
            if arr.ndim != 2 or (shape is not None and arr.shape != shape):
                raise ValueError(f"ForecastView {key}_w has shape {arr.shape}: expected "
                                 f"(n_components, horizon){'' if shape is None else shape}")
            shape = arr.shape
            object.__setattr__(self, f"{key}_w", arr)
        if self.fallback is not None:
            flags = _frozen_array(self.fallback, bool)
            if flags.shape != (shape[0],):
                raise ValueError(f"ForecastView fallback has shape {flags.shape}: expected "
                                 f"({shape[0]},)")
            object.__setattr__(self, "fallback", flags)

    @property
    def n_components(self) -> int:
        return self.p50_w.shape[0]

    @property
    def horizon(self) -> int:
        """Number of steps."""
        return self.p50_w.shape[1]

    def quantile_w(self, quantile: str) -> np.ndarray:
        """The (n_components, horizon) array of one quantile, W."""
        if quantile not in QUANTILES:
            raise ValueError(f"quantile = {quantile!r}: expected one of {', '.join(QUANTILES)}")
        return getattr(self, f"{quantile}_w")


def _steps_since(forecast: ForecastView, t: float) -> float:
    """(t - origin) / step_s, snapped to a whole number when within float noise of one."""
    u = (t - forecast.t_unix) / forecast.step_s
    near = round(u)
    return float(near) if abs(u - near) < 1e-9 else u


def forecast_peak(forecast: ForecastView, now_s: float, cfg: PolicyConfig,
                  quantile: str) -> np.ndarray:
    """Per component, the highest `quantile` forecast (W) over the actuation window.

    The window is [now_s + lead_s, now_s + lead_s + window_s] (s); every horizon step that
    overlaps it by more than an instant counts. A window reaching past the horizon is cut to
    the horizon's end (a window lying wholly past it uses the last step; one before the
    origin, the first). NaN where a component has no forecast value in those steps.
    """
    if not _is_number(now_s) or not math.isfinite(now_s):
        raise ValueError(f"now_s = {now_s!r}: expected a finite time, s")
    values = forecast.quantile_w(quantile)
    n, horizon = values.shape
    if horizon == 0:
        return np.full(n, np.nan)
    start = now_s + cfg.lead_s
    first = math.floor(_steps_since(forecast, start)) + 1
    last = math.ceil(_steps_since(forecast, start + cfg.window_s))
    last = min(max(last, 1), horizon)
    first = min(max(first, 1), last)
    return np.fmax.reduce(values[:, first - 1:last], axis=1)


def forecast_now(forecast: ForecastView, now_s: float, quantile: str = "p50") -> np.ndarray:
    """Per component, the `quantile` forecast (W) of the step covering `now_s` (clamped)."""
    values = forecast.quantile_w(quantile)
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    k = min(max(math.ceil(_steps_since(forecast, now_s)), 1), values.shape[1])
    return values[:, k - 1].copy()
