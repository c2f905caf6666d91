"""The PSUs' own efficiency: their input over output power against its learned curve.

Pure module. Where the BMC reports what a component's power supplies take in and give out
(PMBus READ_PIN / READ_POUT, Redfish ``PowerSupplies[].PowerInputWatts`` /
``PowerOutputWatts``), their ratio is 1 / efficiency, measured by the PSU itself: neither the
workload, nor what the load draws, nor the sensor board's reading enters it. A PSU's losses
are about ``a + b P + c P^2`` at output ``P`` (fixed losses, switching, conduction), so

    in / out = c0 + c1 / P + c2 P

fits its efficiency curve (least squares on a fault-free day, with every coefficient >= 0:
losses do not shrink as the output grows, nor vanish at a lower one); the meters' fixed gain
and offset errors are in the training readings, so in the curve. The curve is trusted over
the outputs seen in training widened by :data:`SPAN_MARGIN`; a minute outside that has no
figure (the detector holds): neither clipping to the range (a server idling below its
training day's lowest output then read as a PSU 2 % worse, tuning seeds) nor extrapolating (a
server busier than on its training day read 1 % worse, its curve rising there where no
training minute showed it) is sound. The health model's figure is the fractional extra input
at the same output, ``ratio / curve(P) - 1``: a PSU losing efficiency moves it by the loss
(+0.03: 3 % more input), a fan, a disk, a process or a sensor fault do not.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fit_psu_curve", "psu_figure"]

#: a component gets the PSU detector when this share of its usable minutes have readings
MIN_SHARE = 0.5
#: the curve is judged on outputs within [lowest / (1 + m), highest x (1 + m)] of training
SPAN_MARGIN = 0.1


def _design(out_w: np.ndarray, scale: float) -> np.ndarray:
    x = np.asarray(out_w, dtype=np.float64) / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack([np.ones_like(x), 1.0 / x, x])


def fit_psu_curve(ratio: np.ndarray, out_w: np.ndarray, use: np.ndarray
                  ) -> tuple[np.ndarray, float] | None:
    """(curve (5,): c0, c1, c2 and the lowest and highest output trained on, W; scale s, W)
    of ``ratio ~ c0 + c1 s / P + c2 P / s`` over the minutes ``use`` with readings
    (``ratio`` in / out, ``out_w`` the mean output, W); None when fewer than
    :data:`MIN_SHARE` of them have one."""
    ok = use & np.isfinite(ratio) & np.isfinite(out_w) & (out_w > 0)
    if ok.sum() < max(10, MIN_SHARE * use.sum()):
        return None
    scale = float(np.median(out_w[ok]))
    x = _design(out_w[ok], scale)
    span = [float(np.min(out_w[ok])), float(np.max(out_w[ok]))]
    if np.ptp(out_w[ok]) < 0.05 * scale:        # a steady load: the level only
        return np.array([float(np.median(ratio[ok])), 0.0, 0.0, *span]), scale
    from scipy.optimize import nnls

    return np.r_[nnls(x, ratio[ok])[0], span], scale


def psu_figure(ratio: np.ndarray, out_w: np.ndarray, coef: np.ndarray, scale: float
               ) -> np.ndarray:
    """Fractional extra input at the same output, ``ratio / curve(out) - 1`` (NaN where no
    reading, no curve, or an output outside the trusted span)."""
    if not np.all(np.isfinite(coef)) or not scale > 0:
        return np.full(np.shape(ratio), np.nan)
    out_w = np.asarray(out_w, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        base = _design(out_w, scale) @ coef[:3]
        inside = (out_w >= coef[3] / (1 + SPAN_MARGIN)) & (out_w <= coef[4] * (1 + SPAN_MARGIN))
        return np.where((base > 0) & inside, np.asarray(ratio) / base - 1.0, np.nan)
