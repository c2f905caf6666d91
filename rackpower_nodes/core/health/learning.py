"""What the health model's fits share: LightGBM boosters, out-of-sample predictions by
cross-fitting, the summaries its scales are read from, and the burst score's load terms.

lightgbm is imported inside :func:`booster` (see :mod:`.baseline` on why).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rackpower_nodes.core.health.config import HealthConfig
from rackpower_nodes.core.health.minutes import burst_score, load_steps
from rackpower_nodes.core.health.types import HealthFrame

if TYPE_CHECKING:
    import lightgbm as lgb

__all__ = ["CAP_MIN_RATIO", "booster", "burst_band", "burst_coef", "crossfit", "hat_weights",
           "hour_sd", "nanquantile"]

#: a burst cap under this multiple of the threshold is no cap (:func:`burst_band`): a clean
#: storage node's fan and turbo spikes put its score's 99.5th percentile at 2.8-3.4x its
#: 98th in the simulator (the training day, seed 100); where noise alone moves the score,
#: the two lie close (1.1x in the unit tests' storage node without spikes)
CAP_MIN_RATIO = 1.5


def booster(x: np.ndarray, y: np.ndarray, cfg: HealthConfig) -> lgb.Booster:
    import lightgbm as lgb

    params = {"objective": "huber", "alpha": 3.0 * float(np.std(y) + 1e-6),
              "num_leaves": cfg.leaves, "min_data_in_leaf": cfg.min_leaf,
              "learning_rate": 0.06, "num_threads": 1, "verbose": -1, "deterministic": True,
              "seed": 0}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=cfg.trees)


def crossfit(x: np.ndarray, y: np.ndarray, use: np.ndarray, cfg: HealthConfig,
              interleave: bool = False) -> np.ndarray:
    """Out-of-sample predictions: each fold predicted by a model fitted on the rest. Folds
    are contiguous parts of the history (what a new day looks like: hours of the day the
    model did not see, which is what the detectors' thresholds must bear), or, with
    ``interleave``, whole hours dealt in turn (hour i to fold i mod folds: the residual's
    noise within a day, which "utilisation up" is judged against)."""
    pred = np.full(len(y), np.nan)
    idx = np.flatnonzero(use)
    if interleave:
        hour = (idx // 60) % cfg.folds
        folds = [idx[hour == f] for f in range(cfg.folds)]
    else:
        folds = np.array_split(idx, cfg.folds)
    for fold in folds:
        train = np.setdiff1d(idx, fold)
        if len(fold) == 0 or len(train) == 0:
            continue
        pred[fold] = booster(x[train], y[train], cfg).predict(x[fold], num_threads=1)
    return pred


def hour_sd(x: np.ndarray) -> float:
    """Standard deviation of hour-long means of ``x`` (NaN as 0; NaN when under 2 h)."""
    hourly = np.convolve(np.nan_to_num(x), np.ones(60) / 60, "valid")
    return float(np.std(hourly)) if len(hourly) > 60 else float("nan")


def nanquantile(x: np.ndarray, q: float) -> np.ndarray:
    """Per-column quantile of the finite values (NaN for a column with none)."""
    out = np.full(x.shape[1], np.nan)
    for j in range(x.shape[1]):
        v = x[:, j][np.isfinite(x[:, j])]
        if len(v):
            out[j] = np.quantile(v, q)
    return out


def hat_weights(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """(len(x), len(knots)): each value's weights on the increasing ``knots`` (piecewise
    linear interpolation; held at the end knots beyond them): a least-squares fit on these
    columns is a piecewise linear curve through the knots."""
    eye = np.eye(len(knots))
    return np.column_stack([np.interp(x, knots, eye[i]) for i in range(len(knots))])


def burst_coef(frames: list[HealthFrame]) -> np.ndarray:
    """(components, 2): least squares of the board's in-row standard deviation on the row's
    utilisation rise and fall (and a constant), per component; a negative slope (noise)
    and a component without utilisation give 0."""
    std = np.concatenate([f.board_std_w for f in frames]).astype(np.float64)
    steps = np.concatenate([load_steps(f.util) for f in frames])
    coef = np.zeros((std.shape[1], 2))
    for j in range(std.shape[1]):
        ok = np.isfinite(std[:, j])
        if ok.sum() < 10 or not steps[ok, j].any():
            continue
        x = np.column_stack([steps[ok, j], np.ones(int(ok.sum()))])
        coef[j] = np.maximum(np.linalg.lstsq(x, std[ok, j], rcond=None)[0][:2], 0.0)
    return coef


def burst_band(frames: list[HealthFrame], cfg: HealthConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per component, what makes a row a burst: the burst score's load terms
    (:func:`burst_coef`), its threshold (``burst_factor`` x the ``burst_quantile`` of the
    training score; inf where there is none) and its cap (the ``burst_cap_quantile``), W.

    The cap is inf (none) where it is under :data:`CAP_MIN_RATIO` x the threshold: there
    the clean rows have no tail of spikes beyond the threshold to keep out, and a cap so
    close to it would keep out a retrying drive's larger bursts instead."""
    coef = burst_coef(frames)
    score = np.concatenate([burst_score(f, coef) for f in frames])
    thr = nanquantile(score, cfg.burst_quantile)
    thr = np.where(np.isfinite(thr), thr * cfg.burst_factor, np.inf)
    cap = np.full_like(thr, np.inf)
    if cfg.burst_cap_quantile < 1:
        cap = np.nan_to_num(nanquantile(score, cfg.burst_cap_quantile), nan=np.inf)
    return coef, thr, np.where(cap >= CAP_MIN_RATIO * thr, cap, np.inf)
