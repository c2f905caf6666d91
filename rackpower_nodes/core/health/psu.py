"""The PSUs' own efficiency: their input over output power against its learned curve.

Pure module. Where the BMC reports what a component's power supplies take in and give out
(PMBus READ_PIN / READ_POUT, Redfish ``PowerSupplies[].PowerInputWatts`` /
``PowerOutputWatts``), their ratio is 1 / efficiency, measured by the PSU itself: neither the
workload, nor what the load draws, nor the sensor board's reading enters it.

The curve is learned on a fault-free day in two parts. A PSU's losses are about
``a + b P + c P^2`` at output ``P`` (fixed losses, switching, conduction), so

    in / out = c0 + c1 / P + c2 P

(least squares with every coefficient >= 0: losses do not shrink as the output grows, nor
vanish at a lower one). A real curve also has its controller's mode changes in it (burst
mode at light load, phase shedding, the slope change past half load of an 80 PLUS curve),
which that smooth form misses: over the top of a host's outputs it read 0.7-1.8 % high on
the simulated Platinum curve (tuning seed 60006, office srv05: a runaway's raised output
read as a PSU 0.9 % worse and named ``psu_efficiency``). So the relative residual of the
smooth form is learned too, piecewise linear with :data:`KNOTS` knots at quantiles of the
outputs trained on (each segment rests on as many minutes), held flat beyond the end knots.
Alone, the knots bent the wrong way at light load (a straight segment under the ``1 / P``
rise read an idling server's PSU 1.1 % worse, tuning seed 60007, mixed srv06): the smooth
form carries the shape, the knots its departures. The meters' fixed gain and offset errors
are in the training readings, so in the curve.

The curve is trusted over the outputs seen in training widened by :data:`SPAN_MARGIN`; a
minute outside that has no figure (the detector holds): neither clipping to the range (a
server idling below its training day's lowest output then read as a PSU 2 % worse, tuning
seeds) nor extrapolating further is sound. The health model's figure is the fractional
extra input at the same output, ``ratio / curve(P) - 1``: a PSU losing efficiency moves it
by the loss (+0.03: 3 % more input), a fan, a disk, a process or a sensor fault do not.
"""
from __future__ import annotations

import numpy as np

from rackpower_nodes.core.health.learning import hat_weights

__all__ = ["CURVE_LEN", "KNOTS", "fit_psu_curve", "psu_figure"]

#: a component gets the PSU detector when this share of its usable minutes have readings
MIN_SHARE = 0.5
#: the curve is judged on outputs within [lowest / (1 + m), highest x (1 + m)] of training
SPAN_MARGIN = 0.1
#: knots of the residual's piecewise linear correction (at most; fewer where outputs repeat)
KNOTS = 8
#: training minutes per knot at least (fewer minutes, fewer knots)
MIN_PER_KNOT = 30
#: a curve's length: c0, c1, c2, scale (W), lowest and highest output trained on (W), the
#: knots' outputs (W), the correction at each (NaN where there are fewer knots)
CURVE_LEN = 6 + 2 * KNOTS


def _design(out_w: np.ndarray, scale: float) -> np.ndarray:
    x = np.asarray(out_w, dtype=np.float64) / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack([np.ones_like(x), 1.0 / x, x])


def fit_psu_curve(ratio: np.ndarray, out_w: np.ndarray, use: np.ndarray) -> np.ndarray | None:
    """(:data:`CURVE_LEN`,) the curve of ``ratio`` (in / out) against ``out_w`` (the minute's
    mean output, W), learned over the minutes ``use`` with readings; None when fewer than
    :data:`MIN_SHARE` of them have one. A steady load (outputs within 5 % of their median)
    gets its level only."""
    ok = use & np.isfinite(ratio) & np.isfinite(out_w) & (out_w > 0)
    if ok.sum() < max(10, MIN_SHARE * use.sum()):
        return None
    out, r = out_w[ok], ratio[ok]
    scale = float(np.median(out))
    curve = np.full(CURVE_LEN, np.nan)
    curve[3:6] = [scale, out.min(), out.max()]
    if np.ptp(out) < 0.05 * scale:
        curve[:3] = [float(np.median(r)), 0.0, 0.0]
        return curve
    from scipy.optimize import nnls

    x = _design(out, scale)
    curve[:3] = nnls(x, r)[0]
    k = int(np.clip(len(out) // MIN_PER_KNOT, 2, KNOTS))
    knots = np.unique(np.quantile(out, np.linspace(0.0, 1.0, k)))
    residual = r / (x @ curve[:3]) - 1.0
    curve[6:6 + len(knots)] = knots
    curve[6 + KNOTS:6 + KNOTS + len(knots)] = np.linalg.lstsq(hat_weights(out, knots), residual,
                                                              rcond=None)[0]
    return curve


def psu_figure(ratio: np.ndarray, out_w: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Fractional extra input at the same output, ``ratio / curve(out) - 1`` (NaN where no
    reading, no curve, or an output outside the trusted span)."""
    curve = np.asarray(curve, dtype=np.float64)
    out_w = np.asarray(out_w, dtype=np.float64)
    if not (np.all(np.isfinite(curve[:6])) and curve[3] > 0):
        return np.full(np.shape(ratio), np.nan)
    knots, corr = curve[6:6 + KNOTS], curve[6 + KNOTS:]
    have = np.isfinite(knots) & np.isfinite(corr)
    with np.errstate(divide="ignore", invalid="ignore"):
        base = _design(out_w, curve[3]) @ curve[:3]
        if have.any():
            base = base * (1.0 + np.interp(out_w, knots[have], corr[have]))
        inside = ((out_w >= curve[4] / (1 + SPAN_MARGIN))
                  & (out_w <= curve[5] * (1 + SPAN_MARGIN)))
        return np.where((base > 0) & inside, np.asarray(ratio) / base - 1.0, np.nan)
