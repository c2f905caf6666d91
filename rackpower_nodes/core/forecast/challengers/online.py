"""Online selection and bias correction of the served forecaster, from matured errors only.

Each candidate forecaster (a *member*) is served in two *variants*: as it is (``raw``) and
with its recent bias subtracted (``+bias``); variant ``v`` is member ``v // 2``, corrected when
``v % 2``. Every forecast issued for a key (a component) records every member's p50 and the
bias each would subtract; once the step a forecast targets has been measured (``mature``) its
errors count, never before:

- :class:`KeyState` (per key): the recent signed errors of each raw member per horizon step,
  whose windowed median, shrunk toward 0 while few are known, is the bias to subtract;
- :class:`ClassState` (per component class): the recent absolute errors of every variant per
  horizon step, pooled over the class's keys; the variant in service per step changes only
  when another one's mean error is lower by the hysteresis margin, over enough errors.

All values are in the members' unit (normalised power, a fraction of ``max_w``). Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.forecast.base import check_params

__all__ = ["ClassState", "KeyState", "ServedParams", "variant_names"]


@dataclass
class ServedParams:
    """Online selection and bias correction (fixed a priori, never tuned on evaluation data).

    ``window``: matured errors per class and horizon step the selection averages (the newest);
    ``min_errors``: a variant is compared only once it has this many in the window;
    ``margin``: a challenger replaces the variant in service only when its mean absolute error
    is below ``(1 - margin)`` times the incumbent's (hysteresis: near-equal errors never make
    it flap); ``bias_window``: signed errors per key and step whose median is the bias;
    ``bias_prior``: the median is shrunk by ``n / (n + bias_prior)`` with ``n`` errors known;
    ``correct_bias``: offer the ``+bias`` variants at all.
    """

    window: int = 120
    min_errors: int = 30
    margin: float = 0.03
    bias_window: int = 60
    bias_prior: float = 3.0
    correct_bias: bool = True

    def __post_init__(self) -> None:
        check_params(self, {"window": (1, 1 << 20), "min_errors": (1, 1 << 20),
                            "margin": (0.0, 0.9), "bias_window": (1, 1 << 20),
                            "bias_prior": (0.0, 1e9)})
        if self.min_errors > self.window:
            raise ValueError(f"ServedParams.min_errors = {self.min_errors} exceeds window = "
                             f"{self.window}: no variant could ever be compared")


def variant_names(members: list[str]) -> list[str]:
    """Names of the variants of ``members``, in variant order: ``m`` and ``m+bias``."""
    return [f"{m}{suffix}" for m in members for suffix in ("", "+bias")]


class KeyState:
    """One key's issued forecasts awaiting their targets and its members' recent biases.

    Args:
        klass: the key's component class; members, horizon: sizes C and H.
    """

    def __init__(self, klass: str, members: int, horizon: int, params: ServedParams) -> None:
        self.klass = klass
        self._h = horizon
        self._records: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # origin step -> (C, H)
        self._signed = np.full((params.bias_window, members, horizon), np.nan)
        self._pos = 0
        self._prior = params.bias_prior
        self.last_step: int | None = None
        self.bias = np.zeros((members, horizon))          # (C, H) to subtract from each p50

    def record(self, step: int, p50: np.ndarray) -> None:
        """Keep the members' p50 (C, H) issued from ``step`` (the newest measured step) and
        the biases in force when they were issued."""
        self._records[step] = (np.asarray(p50, np.float64).copy(), self.bias.copy())

    def mature(self, step: int, value: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The measured ``value`` of ``step``: errors (forecast - actual) of every forecast
        that targeted it, raw and corrected, each (C, H) with NaN where none did; None when
        ``step`` is not newer than the last one seen (a repeat is counted once)."""
        if self.last_step is not None and step <= self.last_step:
            return None
        self.last_step = step
        for origin in [o for o in self._records if o < step - self._h]:
            del self._records[origin]
        raw = np.full(self.bias.shape, np.nan)
        corrected = np.full(self.bias.shape, np.nan)
        for h in range(1, self._h + 1):
            rec = self._records.get(step - h)
            if rec is not None:
                raw[:, h - 1] = rec[0][:, h - 1] - value
                corrected[:, h - 1] = raw[:, h - 1] - rec[1][:, h - 1]
        if np.isnan(raw).all():
            return raw, corrected
        self._signed[self._pos] = raw
        self._pos = (self._pos + 1) % len(self._signed)
        self._update_bias()
        return raw, corrected

    def _update_bias(self) -> None:
        known = np.isfinite(self._signed)
        n = known.sum(axis=0)
        filled = np.where(known, self._signed, np.inf)      # NaN-free: sort puts inf last
        srt = np.sort(filled, axis=0)
        lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
        hi = np.take_along_axis(srt, n[None] // 2, axis=0)[0]
        median = np.where(n > 0, 0.5 * (lo + hi), 0.0)           # inf only where n == 0
        self.bias = median * n / (n + self._prior) if self._prior else median


class ClassState:
    """The variant in service per horizon step of one component class.

    Args:
        start: (H,) variant index per step to serve before any error has matured.
        variants: V, the number of variants; allowed: (V,) bool, the variants that may serve.
    """

    def __init__(self, start: np.ndarray, variants: int, params: ServedParams,
                 allowed: np.ndarray) -> None:
        self.served = np.asarray(start, np.int64).copy()
        self._abs = np.full((params.window, variants, len(self.served)), np.nan)
        self._pos = 0
        self._p = params
        self._allowed = np.asarray(allowed, bool)
        self.switches = 0

    def add(self, abs_err: np.ndarray) -> None:
        """One key's matured absolute errors (V, H), NaN where none; then reselect."""
        if np.isnan(abs_err).all():
            return
        self._abs[self._pos] = abs_err
        self._pos = (self._pos + 1) % len(self._abs)
        self._reselect()

    def scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(V, H) mean absolute error over the window (NaN with none) and (V, H) counts."""
        known = np.isfinite(self._abs)
        n = known.sum(axis=0)
        total = np.where(known, self._abs, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, total / np.maximum(n, 1), np.nan), n

    def _reselect(self) -> None:
        mean, n = self.scores()
        ok = (n >= self._p.min_errors) & self._allowed[:, None]
        if not ok.any():
            return
        cand = np.where(ok, mean, np.inf)
        best = np.argmin(cand, axis=0)                                     # (H,)
        cols = np.arange(len(self.served))
        inc = cand[self.served, cols]
        better = cand[best, cols] < inc * (1.0 - self._p.margin)
        move = ok[best, cols] & (better | ~np.isfinite(inc)) & (best != self.served)
        self.switches += int(move.sum())
        self.served = np.where(move, best, self.served)
