"""Sequential change detection: one-sided CUSUMs on prewhitened, standardized minute figures.

A detector watches one minute figure ``x`` of one component (the power residual, the
utilisation residual, the burst count, the ripple's log power). In control, ``x`` has mean
``mu`` and is autocorrelated; an AR(1) fit ``x_t - mu = phi (x_{t-1} - mu) + e_t`` on the
training data turns it into nearly independent innovations ``z_t = e_t / sigma``, and the
CUSUM ``S_t = max(0, S_{t-1} + sign * z_t - k)`` alarms when ``S_t >= h``. (A sustained shift
``d`` of ``x`` shows in ``z`` as ``d (1 - phi) / sigma`` per minute, which is what the
statistic accumulates.)

The threshold ``h`` is set from a stated in-control average run length ``arl0`` (minutes):

- Siegmund's approximation for Gaussian innovations,
  ``ARL0(h) = (exp(2 k b) - 2 k b - 1) / (2 k^2)`` with ``b = h + 1.166``, solved for ``h``;
- and, since real innovations have heavier tails, a bootstrap on the training innovations
  themselves: many CUSUM paths of ``n`` minutes resampled from them, ``h`` the quantile of the
  paths' maxima that ``n / arl0`` of the paths exceed.

The larger of the two is used (:func:`threshold`). Both are computed on training data only.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["CusumBank", "ar1", "bootstrap_threshold", "siegmund_arl0", "siegmund_threshold",
           "threshold"]


def siegmund_arl0(h: float, k: float) -> float:
    """In-control ARL (steps) of a one-sided CUSUM on N(0, 1) steps, reference ``k > 0``."""
    b = h + 1.166
    return (math.exp(2 * k * b) - 2 * k * b - 1) / (2 * k * k)


def siegmund_threshold(arl0: float, k: float) -> float:
    """The ``h`` whose Siegmund ARL0 is ``arl0`` steps (bisection)."""
    lo, hi = 0.0, 1.0
    while siegmund_arl0(hi, k) < arl0:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if siegmund_arl0(mid, k) < arl0 else (lo, mid)
    return hi


def bootstrap_threshold(z: np.ndarray, arl0: float, k: float, seed: int = 0,
                        paths: int = 2000, steps: int = 2000, clip: float = np.inf) -> float:
    """``h`` from CUSUM paths resampled from innovations ``z`` (finite, standardized):
    the ``1 - steps / arl0`` quantile of the paths' maxima over ``steps`` minutes."""
    z = np.asarray(z, dtype=np.float64)
    z = np.clip(z[np.isfinite(z)], -clip, clip)
    if len(z) < 30:
        return 0.0
    rng = np.random.default_rng(seed)
    s = np.zeros(paths)
    peak = np.zeros(paths)
    for _ in range(steps):
        s = np.maximum(0.0, s + z[rng.integers(0, len(z), paths)] - k)
        np.maximum(peak, s, out=peak)
    p = min(0.5, steps / arl0)
    return float(np.quantile(peak, 1.0 - p))


def threshold(z: np.ndarray, arl0: float, k: float, seed: int = 0,
              clip: float = np.inf) -> float:
    """The larger of the Siegmund and the bootstrap threshold for ARL0 ``arl0`` steps
    (innovations clipped to ``+-clip``)."""
    return max(siegmund_threshold(arl0, k), bootstrap_threshold(z, arl0, k, seed,
                                                                 clip=clip))


def ar1(x: np.ndarray, max_phi: float) -> tuple[float, float, float]:
    """``(mu, phi, sigma)`` of an AR(1) fit to the finite values of ``x`` (gaps break pairs);
    ``phi`` clipped to ``[0, max_phi]``; ``sigma`` the innovations' standard deviation."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.sum() < 10:
        return 0.0, 0.0, 1.0
    mu = float(np.mean(x[ok]))
    d = x - mu
    pair = ok[1:] & ok[:-1]
    den = float(np.sum(d[:-1][pair] ** 2))
    phi = float(np.sum(d[1:][pair] * d[:-1][pair]) / den) if den > 0 else 0.0
    phi = min(max(phi, 0.0), max_phi)
    e = d[1:][pair] - phi * d[:-1][pair]
    sigma = float(np.std(e)) if len(e) > 2 else float(np.std(d[ok]))
    return mu, phi, max(sigma, 1e-9)


class CusumBank:
    """Streaming one-sided CUSUMs, one per column (a component's detector and side).

    Column ``c`` prewhitens with ``mu[c]``, ``phi[c]``, ``sigma[c]``, adds
    ``sign[c] * z - k[c]`` and alarms at ``h[c]`` (``z`` clipped to ``+-clip``); the
    statistic is capped at ``cap * h`` so that it comes back down within hours once the
    evidence is gone. A NaN figure leaves the column unchanged and breaks
    the AR(1) pair. ``start`` holds each column's change-point estimate: the time its statistic
    last left zero (NaN while zero).
    """

    def __init__(self, mu, phi, sigma, sign, h, k, cap: float, clip: float = np.inf):
        self.mu, self.phi, self.sigma, self.sign, self.h, self.k = (
            np.asarray(v, dtype=np.float64) for v in (mu, phi, sigma, sign, h, k))
        self.cap, self.clip = float(cap), float(clip)
        n = len(self.mu)
        self.s = np.zeros(n)
        self.prev = np.full(n, np.nan)
        self.start = np.full(n, np.nan)

    def step(self, t: float, x: np.ndarray) -> np.ndarray:
        """Add one minute's figures ``x`` (columns) at minute start ``t``; scores ``S / h``."""
        d = np.asarray(x, dtype=np.float64) - self.mu
        ok = np.isfinite(d)
        e = np.where(np.isfinite(self.prev), d - self.phi * np.nan_to_num(self.prev), d)
        z = np.clip(self.sign * e / self.sigma, -self.clip, self.clip)
        new = np.minimum(np.maximum(0.0, self.s + z - self.k), self.cap * self.h)
        new = np.where(ok, new, self.s)
        left_zero = (self.s <= 0) & (new > 0)
        self.start = np.where(new <= 0, np.nan, np.where(left_zero, t, self.start))
        self.s = new
        self.prev = np.where(ok, d, np.nan)
        return self.s / self.h

    def state(self) -> dict[str, list[float]]:
        return {"s": self.s.tolist(), "prev": self.prev.tolist(), "start": self.start.tolist()}
