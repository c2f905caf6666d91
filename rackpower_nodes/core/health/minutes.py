"""Per-second :class:`HealthFrame` rows summarised per whole minute: `Minutes`, `to_minutes`.

Rows may be 1 s or 2 s apart (the BSC traces are 2 s) or have gaps: a minute is the Unix
minute ``floor(t / 60)``, its figures are the means of the rows inside it, and ``coverage`` says
what share of the minute's expected rows were there. Besides the means, each minute carries

- ``bursts``: how many of its rows had a *burst score* above a per-component threshold (a
  short pulse inside the row: a disk retrying, a fan catching). The score
  (:func:`burst_score`) is the board's standard deviation within the row less what the
  host's utilisation explains: a load that rose or fell during the row moves the draw
  inside it too (a CPU's turbo overshoot, its power's lag), which is workload, not a fault;
- ``ripple``: the power of the board's per-row mean in the 15-60 s period band (FFT bins 1-4 of
  the minute), W², after removing the minute's mean, its linear trend and the part explained by
  the host's utilisation and its served request rate (a fan bearing's periodic ripple shows
  here, load changes do not: an inference server's draw follows its request rate second by
  second, which is workload, not a fan);
- ``psu_ratio``, ``psu_out``: the PSUs' own input over output power (their meters' sums over
  the minute's rows where both read above ``PSU_MIN_W``: 1 / efficiency) and their mean
  output, W; NaN where the minute has no such reading.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.health.types import HealthFrame

__all__ = ["MINUTE_S", "PSU_MIN_W", "Minutes", "burst_score", "concat_minutes", "job_moved",
           "load_steps", "row_spacing", "to_minutes"]

MINUTE_S = 60.0
#: PSU readings below this (W) say nothing about efficiency (an outlet out, a PSU idle)
PSU_MIN_W = 5.0
#: FFT bins of a minute kept as the ripple band: periods 60, 30, 20 and 15 s
_RIPPLE_BINS = slice(1, 5)


@dataclass
class Minutes:
    """Minute summaries of a frame: ``t_min`` (k,) minute starts (Unix s); every other array
    is (k, components) float64, NaN where the minute had no usable row."""

    t_min: np.ndarray
    coverage: np.ndarray
    board: np.ndarray
    ref: np.ndarray
    util: np.ndarray
    util_std: np.ndarray
    disk: np.ndarray
    net: np.ndarray
    app: np.ndarray
    job: np.ndarray
    rack_net: np.ndarray
    bursts: np.ndarray
    ripple: np.ndarray
    psu_ratio: np.ndarray
    psu_out: np.ndarray

    def __len__(self) -> int:
        return len(self.t_min)


def concat_minutes(parts: list[Minutes]) -> Minutes:
    """The minutes of ``parts`` one after the other."""
    return Minutes(**{k: np.concatenate([getattr(p, k) for p in parts])
                      for k in Minutes.__dataclass_fields__})


def row_spacing(t_unix: np.ndarray, default: float = 1.0) -> float:
    """The rows' usual spacing, s (the median gap, rounded to whole seconds, at least 1)."""
    if len(t_unix) < 2:
        return default
    return float(max(1.0, np.round(np.median(np.diff(t_unix)))))


def _means(x: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group nan-mean and count of finite values (groups start at ``starts``)."""
    ok = np.isfinite(x)
    sums = np.add.reduceat(np.where(ok, x, 0.0), starts, axis=0)
    counts = np.add.reduceat(ok.astype(np.float64), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), counts


def load_steps(util: np.ndarray, util_before: np.ndarray | None = None) -> np.ndarray:
    """(rows, components, 2): each row's utilisation rise and fall from the row before (0
    where either is unknown; the first row's from ``util_before``, the row before it, if
    given)."""
    u = np.asarray(util, dtype=np.float64)
    prev = np.full((1, u.shape[1]), np.nan) if util_before is None else \
        np.asarray(util_before, dtype=np.float64).reshape(1, -1)
    du = np.nan_to_num(np.diff(u, axis=0, prepend=prev), nan=0.0)
    return np.stack([np.maximum(du, 0.0), np.maximum(-du, 0.0)], axis=2)


def burst_score(frame: HealthFrame, burst_coef: np.ndarray | None = None,
                util_before: np.ndarray | None = None) -> np.ndarray:
    """(rows, components): the board's standard deviation within each row (W) less
    ``burst_coef`` (components, 2: W per unit utilisation rise and fall, None: 0) times the
    row's :func:`load_steps`. NaN where the row has no standard deviation."""
    std = np.asarray(frame.board_std_w, dtype=np.float64)
    if burst_coef is None:
        return std
    steps = load_steps(frame.util, util_before)
    return std - np.einsum("rcs,cs->rc", steps, np.asarray(burst_coef, dtype=np.float64))


def job_moved(job: np.ndarray, t_min: np.ndarray,
              before: tuple[float, np.ndarray] | None = None) -> np.ndarray:
    """(minutes, components) bool: a job started or ended in the minute or in the one before
    (its share of rows with a job strictly between 0 and 1, or a change from the minute
    before). The minute after counts too: a GPU server's boards and fans take tens of seconds
    to settle after a job's end. ``before``: the start (s) and job shares of the last minute
    known before ``t_min[0]``, if any; a minute's predecessor counts only when it is the
    minute just before (after a gap nothing is known of it)."""
    job = np.asarray(job, dtype=np.float64)
    if not len(job):
        return np.zeros(job.shape, dtype=bool)
    t_min = np.asarray(t_min, dtype=np.float64)
    t0, first = (np.nan, np.full(job.shape[1], np.nan)) if before is None else before
    prev = np.concatenate([np.asarray(first, dtype=np.float64).reshape(1, -1), job[:-1]])
    prev[t_min - np.r_[t0, t_min[:-1]] != MINUTE_S] = np.nan
    with np.errstate(invalid="ignore"):
        partial = (job > 0) & (job < 1)
        return partial | ((prev > 0) & (prev < 1)) | (np.isfinite(prev) & np.isfinite(job)
                                                       & (prev != job))


def to_minutes(frame: HealthFrame, burst_thr_w: np.ndarray | None = None,
               row_s: float | None = None, burst_coef: np.ndarray | None = None,
               util_before: np.ndarray | None = None,
               burst_cap_w: np.ndarray | None = None) -> Minutes:
    """Summarise ``frame`` per minute; ``burst_thr_w`` (components,) the burst threshold on
    :func:`burst_score` with ``burst_coef`` and ``util_before``, W (None: ``bursts`` all
    NaN), a row counting only while its score is at most ``burst_cap_w`` (components,;
    None: no cap); ``row_s`` the row spacing (None: from the rows)."""
    t = frame.t_unix
    m = len(frame.names)
    if len(t) == 0:
        empty = np.empty((0, m))
        return Minutes(np.empty(0), *([empty] * 14))
    row_s = row_spacing(t) if row_s is None else row_s
    minute = np.floor(t / MINUTE_S)
    starts = np.flatnonzero(np.r_[True, np.diff(minute) > 0])
    t_min = minute[starts] * MINUTE_S
    f64 = {f: np.asarray(getattr(frame, f), dtype=np.float64) for f in
           ("board_mean_w", "ref_w", "util", "disk_bps", "net_bps",
            "app_rate", "job_running", "psu_in_w", "psu_out_w")}
    board, n_board = _means(f64["board_mean_w"], starts)
    coverage = np.minimum(n_board / (MINUTE_S / row_s), 1.0)
    util, _ = _means(f64["util"], starts)
    util_sq, _ = _means(f64["util"] ** 2, starts)
    util_std = np.sqrt(np.maximum(util_sq - util ** 2, 0.0))
    net, _ = _means(f64["net_bps"], starts)
    rack_row = np.nansum(f64["net_bps"], axis=1, keepdims=True)
    rack_net = np.broadcast_to(_means(rack_row, starts)[0], board.shape).copy()
    if burst_thr_w is None:
        bursts = np.full(board.shape, np.nan)
    else:
        score = burst_score(frame, burst_coef, util_before)
        cap = np.inf if burst_cap_w is None else np.asarray(burst_cap_w)[None, :]
        with np.errstate(invalid="ignore"):
            hit = (score > np.asarray(burst_thr_w)[None, :]) & (score <= cap)
        bursts = np.add.reduceat(hit.astype(np.float64), starts, axis=0)
        bursts = np.where(n_board > 0, bursts * (MINUTE_S / row_s) / np.maximum(n_board, 1),
                          np.nan)
    ripple = _ripple(t, minute, starts, f64["board_mean_w"], (f64["util"], f64["app_rate"]),
                     row_s)
    with np.errstate(invalid="ignore"):
        both = (f64["psu_in_w"] > PSU_MIN_W) & (f64["psu_out_w"] > PSU_MIN_W)
    p_in, n_psu = _means(np.where(both, f64["psu_in_w"], np.nan), starts)
    p_out, _ = _means(np.where(both, f64["psu_out_w"], np.nan), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(n_psu > 0, p_in / p_out, np.nan)
    return Minutes(t_min, coverage, board, _means(f64["ref_w"], starts)[0], util, util_std,
                   _means(f64["disk_bps"], starts)[0], net, _means(f64["app_rate"], starts)[0],
                   _means(f64["job_running"], starts)[0], rack_net, bursts, ripple, ratio,
                   p_out)


def _ripple(t: np.ndarray, minute: np.ndarray, starts: np.ndarray, board: np.ndarray,
            loads: tuple[np.ndarray, ...], row_s: float) -> np.ndarray:
    """Band power (W²) of each minute's detrended per-row board means, less what the
    ``loads`` (utilisation, request rate: (rows, m) each, NaN where unknown) explain."""
    k, m = len(starts), board.shape[1]
    slots = max(8, round(MINUTE_S / row_s))
    group = np.cumsum(np.r_[False, np.diff(minute) > 0])
    slot = np.clip(((t - minute * MINUTE_S) / row_s).astype(np.int64), 0, slots - 1)
    x = np.arange(slots, dtype=np.float64) - (slots - 1) / 2.0
    x = (x / np.sqrt((x ** 2).sum()))[None, :, None]

    def detrend(v: np.ndarray) -> np.ndarray:
        v = v - v.mean(axis=1, keepdims=True)
        return v - x * (v * x).sum(axis=1, keepdims=True)

    def per_slot(v: np.ndarray) -> np.ndarray:
        out = np.full((k, slots, m), np.nan)
        out[group, slot] = v
        return out

    y = per_slot(board)
    present = np.isfinite(y)
    n = present.sum(axis=1)
    y = detrend(np.nan_to_num(np.where(present, y, _nanmean1(y)[:, None, :])))
    for load in loads:                  # each in turn (a greedy fit, not a joint one)
        u = per_slot(load)
        u = detrend(np.nan_to_num(np.where(np.isfinite(u), u, _nanmean1(u)[:, None, :])))
        uu = (u * u).sum(axis=1, keepdims=True)
        beta = np.where(uu > 1e-9, (y * u).sum(axis=1, keepdims=True) / np.maximum(uu, 1e-12),
                        0.0)
        y = y - beta * u
    spec = np.abs(np.fft.rfft(y, axis=1)[:, _RIPPLE_BINS, :]) ** 2
    power = 2.0 * spec.sum(axis=1) / slots ** 2
    return np.where(n >= slots // 2, power, np.nan)


def _nanmean1(v: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of the finite values (0 where none), without warnings."""
    ok = np.isfinite(v)
    return np.where(ok, v, 0.0).sum(axis=1) / np.maximum(ok.sum(axis=1), 1)
