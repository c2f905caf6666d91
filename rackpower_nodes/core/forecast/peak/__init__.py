"""The peak over the actuation window: realised peaks, a no-training baseline, calibration.

:mod:`.windows`: window steps, realised and forecast peaks, the baseline, the headroom metric;
:mod:`.calibration`: :class:`PeakCalibrator`, :func:`replay` (a test stream served as live)
and :class:`PeakTracker`.

What the allocator uses is, per component, the highest forecast quantile over its actuation
window (``core.allocation.forecast.forecast_peak``): horizon steps ``first .. last`` (1-based,
step k covering ``[(k - 1) step_s, k step_s]`` after the origin; :func:`window_steps` gives
them for a policy's ``lead_s``/``window_s``). Numpy only, no rclpy. Powers in W.

Origins and peaks
    An origin ``j`` is the index of the last measured step of a series of step means ``power``
    (W). Its realised peak is ``max(power[j + first .. j + last])``
    (:func:`realised_peaks`); the forecast's peak is the max of a per-step quantile array
    over the same steps (:func:`forecast_peaks`). The origin *matures* at step ``j + last``.

No-training baseline (:func:`baseline_peaks`)
    Last measured step + the empirical p50/p90/p99 of the component's own recent peak changes
    (realised peak - last value) over the ``trailing`` newest origins matured by then; causal;
    with fewer than ``min_history`` matured origins it uses ``prior`` (e.g. the changes' quantiles
    of the component's class in other data).

Calibration (:class:`PeakCalibrator`)
    Per component class, split-conformal offsets from a calibration slice, then online
    recalibration while serving::

        cal = PeakCalibrator(classes, first, last, scale_w=max_w)      # one class per component
        cal.calibrate(component_idx, raw_peaks, realised)              # held-out slice
        p50, p90, p99 = cal.adjust(i, p50, p90, p99)                   # per-step arrays, serve
        cal.observe(i, raw_peaks_i, realised_i, served_peaks_i)        # when the origin matures

    ``raw_peaks``: the forecaster's window peaks (n, 3) or (3,) per origin, W; ``realised``: the
    realised peak, W. The score of an origin is ``(realised - raw peak) / scale_w`` per quantile
    (scaled by the component's max_w, so servers of different size share one class; pass
    ``scale_w=None`` for watts; ``unit="spread"`` divides by the origin's raw p99 - p50 peak
    spread instead, so offsets follow the forecaster's own uncertainty, at least
    ``min_spread`` x max_w). The offset of quantile q is a quantile of the class's scores at a
    level steered by adaptive conformal inference (Gibbs & Candes 2021): after each matured
    origin ``level += gamma * (miss - (1 - q))``, miss = 1 when the realised peak exceeded the
    peak as served. The scores are a rolling buffer of the newest ``buffer``: the calibration
    slice's first, then each matured origin's. ``adjust`` adds the offset (W) to every step of
    each quantile array (so each window max moves by exactly the offset) and keeps
    p50 <= p90 <= p99 per step.
    :class:`PeakTracker` drives ``observe`` from the realised step means for a live service.

Headroom for 99 % coverage (:func:`headroom_for_coverage`)
    With ``m = max(p99 peak - last, 0)`` per origin (W) and ``c`` the smallest factor such that
    ``last + c m`` covers ``target`` (0.99) of the realised peaks, the headroom is ``c * mean(m)``
    (W); infinite if no factor does (a zero margin where the peak rose). Same for every method.
"""

from rackpower_nodes.core.forecast.peak.calibration import PeakCalibrator, PeakTracker, replay
from rackpower_nodes.core.forecast.peak.windows import (
    QUANTILES, baseline_peaks, class_of, forecast_peaks, headroom_for_coverage, peak_changes,
    realised_peaks, window_steps)

__all__ = ["QUANTILES", "PeakCalibrator", "PeakTracker", "baseline_peaks", "class_of",
           "forecast_peaks", "headroom_for_coverage", "peak_changes", "realised_peaks", "replay",
           "window_steps"]
