"""Online selection and bias correction of the served forecaster, from matured errors only.

Each candidate forecaster (a *member*) is served in two *variants*: as it is (``raw``) and
with its recent bias subtracted (``+bias``); variant ``v`` is member ``v // 2``, corrected when
``v % 2``. Every forecast issued for a key (a component) records every member's p50, the bias
each would subtract and what the selection chose; once the step a forecast targets has been
measured (``mature``) its errors count, never before:

- :class:`KeyState` (per key): the recent signed errors of each raw member per horizon step,
  whose windowed median, shrunk toward 0 while few are known, is the bias to subtract; and the
  key's recent measured values, which give the *context* of a forecast (:func:`contexts`);
- :class:`ClassState` (per component class): per context, the recent absolute errors of every
  variant per horizon step, pooled over the class's keys; the variant chosen per context and
  step changes only when another one's mean error is lower by the hysteresis margin, over
  enough errors. A guard keeps, per context, slowly forgotten sums of every variant's
  absolute errors (and of the squares of its paired differences from persistence's) and
  serves persistence until the chosen variant's sum is below persistence's by the margin,
  by ``guard_z`` standard errors of that difference at least (a choice never inherits the
  record of another, and a lucky first few errors are not evidence). Differences of one
  class at nearby steps are not independent (a forecast h steps ahead shares h - 1 targets
  with the next; the keys of one class move together), so the standard error is the larger
  of the plain one and a Newey-West (Bartlett) long-run one over the class's per-step sums
  of the differences, as in the Diebold-Mariano test.

Contexts: a smoother lags a level shift that persistence follows at once, while in calm
stretches it wins; so a forecast whose newest value departs from the recent level by more
than ``jump_z`` times the median step change is scored apart ("moving", 1) from the others
("calm", 0). All values are in the members' unit (normalised power). Pure numpy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.forecast.base import check_params

__all__ = ["CONTEXTS", "ClassState", "KeyState", "ServedParams", "contexts", "guard_lags",
           "variant_names"]

CONTEXTS = ("calm", "moving")
_LEVEL_ALPHA = 0.3          # weight of the newest value in the recent level (EWMA)
_SCALE_FLOOR = 0.01        # normalised power (1 % of max_w): the least step change scale


@dataclass
class ServedParams:
    """Online selection and bias correction (fixed a priori, never tuned on evaluation data).

    ``window``: matured errors per class, context and horizon step the selection averages;
    ``min_errors``: a variant is compared only once it has this many in the window;
    ``margin``: a challenger replaces the chosen variant only when its mean absolute error is
    below ``(1 - margin)`` times the incumbent's (hysteresis: near-equal errors never make it
    flap); ``bias_window``: signed errors per key and step whose median is the bias;
    ``bias_prior``: the median is shrunk by ``n / (n + bias_prior)`` with ``n`` errors known;
    ``correct_bias``: offer the ``+bias`` variants at all; ``jump_z``: the context threshold
    (:func:`contexts`); ``guard_memory``: errors after which the guard's sums have forgotten
    a share 1/e (``0``: no guard); ``guard_z``: how many standard errors of the paired
    difference the guard's lead must reach (a one-sided test; the spread is the uncentred,
    so conservative, root sum of squared differences; ``0``: the lead alone);
    ``guard_lags``: the lags of the long-run spread (``None``: the larger of H - 1 and
    Newey-West's rule of thumb ``floor(4 (guard_memory / 100) ** (2 / 9))``; ``0``: the
    per-step sums' own squares only);
    ``loss_bound``: apply the loss bound (module docstring);
    ``risk``: the share of persistence's error sum the served forecaster may lose beyond
    what it has saved (the bound is ``1 + risk`` times persistence's error; without it
    nothing but persistence could ever be served, having saved nothing yet;
    ``rackpower-train --select-risk`` chooses it on the training data, :mod:`.risk`).
    """

    window: int = 120
    min_errors: int = 30
    margin: float = 0.03
    bias_window: int = 60
    bias_prior: float = 3.0
    correct_bias: bool = True
    jump_z: float = 3.0
    guard_memory: float = 2000.0
    guard_z: float = 2.0
    guard_lags: int | None = None
    loss_bound: bool = True
    risk: float = 0.01

    def __post_init__(self) -> None:
        check_params(self, {"window": (1, 1 << 20), "min_errors": (1, 1 << 20),
                            "margin": (0.0, 0.9), "bias_window": (1, 1 << 20),
                            "bias_prior": (0.0, 1e9), "jump_z": (0.0, 1e9),
                            "guard_memory": (0.0, 1e12), "guard_z": (0.0, 1e3),
                            "risk": (0.0, 1e6)})
        lags = self.guard_lags
        if lags is not None and (not isinstance(lags, int) or isinstance(lags, bool)
                                 or not 0 <= lags <= 1000):
            raise ValueError(f"ServedParams.guard_lags = {self.guard_lags!r}, expected None "
                             "or a value in [0, 1000]")
        if self.min_errors > self.window:
            raise ValueError(f"ServedParams.min_errors = {self.min_errors} exceeds window = "
                             f"{self.window}: no variant could ever be compared")


def guard_lags(params: ServedParams, horizon: int) -> int:
    """Lags of the guard's long-run spread for ``horizon`` steps (``ServedParams``)."""
    if params.guard_lags is not None:
        return int(params.guard_lags)
    rule = int(np.floor(4.0 * (params.guard_memory / 100.0) ** (2.0 / 9.0)))
    return max(horizon - 1, rule)


def variant_names(members: list[str]) -> list[str]:
    """Names of the variants of ``members``, in variant order: ``m`` and ``m+bias``."""
    return [f"{m}{suffix}" for m in members for suffix in ("", "+bias")]


def contexts(values: np.ndarray, jump_z: float) -> np.ndarray:
    """(n,) context (0 calm, 1 moving) of forecasts from ``values`` (n, k), each row a key's
    latest measured values (normalised power), oldest first: moving when the newest departs
    from the EWMA (0.3) of the ones before by more than ``jump_z`` times the median absolute
    step change of the row (at least 1 % of max_w: a smoother's lag after a level shift
    lasts as long as the departure exceeds that)."""
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape[1] < 3:
        return np.zeros(len(v), np.int64)
    before = v[:, :-1]
    w = _LEVEL_ALPHA * (1.0 - _LEVEL_ALPHA) ** np.arange(before.shape[1] - 1, -1, -1.0)
    w[0] = (1.0 - _LEVEL_ALPHA) ** (before.shape[1] - 1)
    scale = np.maximum(np.median(np.abs(np.diff(v, axis=1)), axis=1), _SCALE_FLOOR)
    return (np.abs(v[:, -1] - before @ w) > jump_z * scale).astype(np.int64)


class KeyState:
    """One key's issued forecasts awaiting their targets, its members' recent biases and its
    latest ``history`` measured values (contiguous steps only).

    The forecasts issued from the last ``H + 1`` steps are kept in arrays indexed by their
    origin step modulo ``H + 1`` (what a forecast issued from step ``o`` needs lasts until
    step ``o + H`` is measured), so maturing one step is a few array operations."""

    _NONE = np.iinfo(np.int64).min                       # an empty slot's origin

    def __init__(self, klass: str, members: int, horizon: int, history: int,
                 params: ServedParams) -> None:
        self.klass = klass
        self._h = horizon
        slots = horizon + 1
        self._origin = np.full(slots, self._NONE, np.int64)     # origin step per slot
        self._p50 = np.zeros((slots, members, horizon))           # the members' p50
        self._biases = np.zeros((slots, members, horizon))        # the biases in force
        self._context = np.zeros(slots, np.int64)
        self._served = np.zeros((slots, horizon))                 # the served p50
        self._held = np.zeros((slots, horizon))                   # the stake still held
        self._signed = np.full((params.bias_window, members, horizon), np.nan)
        self._pos = 0
        self._prior = params.bias_prior
        self.values: deque[float] = deque(maxlen=max(history, 3))
        self.last_step: int | None = None
        self.bias = np.zeros((members, horizon))          # (C, H) to subtract from each p50

    def record(self, step: int, p50: np.ndarray, context: int, served: np.ndarray,
               held: np.ndarray) -> np.ndarray:
        """Keep the members' p50 (C, H) issued from ``step`` (the newest measured step), the
        biases in force, the forecast's context, the served p50 (H,) and the stake (H,) it
        holds under the loss bound. Returns the stake of a forecast it replaces (issued from
        the same step before, or from H + 1 steps before when ``step`` itself was never
        measured: never matured either way, to be released), zeros if none."""
        slot = step % len(self._origin)
        old = self._held[slot].copy() if self._origin[slot] != self._NONE else np.zeros(self._h)
        self._origin[slot] = step
        self._p50[slot], self._biases[slot] = p50, self.bias
        self._context[slot], self._served[slot], self._held[slot] = context, served, held
        return old

    def mature(self, step: int, value: float) -> tuple | None:
        """The measured ``value`` of ``step``. Returns None when ``step`` is not newer than
        the last one seen (a repeat counts once), else ``(raw, corrected, context, served,
        held, dropped)``: errors (forecast - actual) of the forecasts that targeted it, (C, H)
        each with NaN where none did, and their (H,) contexts (-1: none); the served p50's
        error (H,), NaN where none; the stake (H,) those forecasts held, and the stake (H,)
        of forecasts whose targets were skipped (a gap) and never will mature."""
        if self.last_step is not None and step <= self.last_step:
            return None
        if self.last_step is not None and step != self.last_step + 1:
            self.values.clear()                          # a gap: the level starts anew
        self.last_step = step
        self.values.append(value)
        used = self._origin != self._NONE
        gone = np.flatnonzero(used & (self._origin < step - self._h))
        gone = gone[np.argsort(self._origin[gone])]       # oldest first, as they were issued
        dropped = self._held[gone].sum(axis=0)           # targets skipped: stakes back
        self._origin[gone] = self._NONE
        raw = np.full(self.bias.shape, np.nan)
        corrected = np.full(self.bias.shape, np.nan)
        context = np.full(self._h, -1, np.int64)
        served, held = np.full(self._h, np.nan), np.zeros(self._h)
        origins = step - np.arange(1, self._h + 1)        # forecasts issued h steps ago
        slots = origins % len(self._origin)
        found = self._origin[slots] == origins
        if found.any():
            col, at = np.flatnonzero(found), slots[found]
            raw[:, col] = (self._p50[at, :, col] - value).T
            corrected[:, col] = raw[:, col] - self._biases[at, :, col].T
            context[col] = self._context[at]
            served[col] = self._served[at, col] - value
            held[col] = self._held[at, col]
            self._held[at, col] = 0.0                    # settled: nothing held any more
        if not np.isnan(raw).all():
            self._signed[self._pos] = raw
            self._pos = (self._pos + 1) % len(self._signed)
            self._update_bias()
        return raw, corrected, context, served, held, dropped

    def pending(self) -> np.ndarray:
        """(H,) stake still held by this key's unmatured forecasts."""
        used = np.flatnonzero(self._origin != self._NONE)
        return self._held[used[np.argsort(self._origin[used])]].sum(axis=0)

    def _update_bias(self) -> None:
        known = np.isfinite(self._signed)
        if known.all():                  # the usual case: the two middle values, unsorted
            count = len(self._signed)
            n = np.full(self.bias.shape, count)
            mid = np.partition(self._signed, [(count - 1) // 2, count // 2], axis=0)
            median = 0.5 * (mid[(count - 1) // 2] + mid[count // 2])
        else:
            n = known.sum(axis=0)
            srt = np.sort(np.where(known, self._signed, np.inf), axis=0)  # inf sorts last
            lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[None], axis=0)[0]
            hi = np.take_along_axis(srt, n[None] // 2, axis=0)[0]
            median = np.where(n > 0, 0.5 * (lo + hi), 0.0)       # inf only where n == 0
        self.bias = median * n / (n + self._prior) if self._prior else median


class ClassState:
    """The variant served per context and horizon step of one component class.

    Args:
        start: (contexts, H) variant index to choose before any error has matured.
        variants: V, the number of variants; allowed: (V,) bool, the variants that may serve.
    """

    def __init__(self, start: np.ndarray, variants: int, params: ServedParams,
                 allowed: np.ndarray) -> None:
        self.chosen = np.asarray(start, np.int64).reshape(len(CONTEXTS), -1).copy()
        h = self.chosen.shape[1]
        self._abs = np.full((len(CONTEXTS), params.window, variants, h), np.nan)
        self._pos = np.zeros(len(CONTEXTS), np.int64)
        self._p = params
        self._allowed = np.asarray(allowed, bool)
        self.guard = np.zeros((len(CONTEXTS), variants, h))    # forgotten sums of |error|
        self.guard_sq = np.zeros_like(self.guard)   # ... of (|persistence err| - |error|)^2
        self.guard_lr = np.zeros_like(self.guard)   # ... long-run: of the per-step sums
        self._step_d = np.zeros_like(self.guard)    # this step's sums of the differences
        self._step_n = np.zeros(self.guard.shape[::2])          # (contexts, H) adds in it
        lags = guard_lags(params, h)
        self._lagged: deque[np.ndarray] = deque(maxlen=lags)   # newest first
        self._weights = 1.0 - np.arange(1, lags + 1) / (lags + 1.0)     # Bartlett
        self._closed: int | None = None     # the step whose sums were folded in last
        self._undo: tuple | None = None     # guard_lr before that, its sums and adds
        self.switches = 0
        self.saved = np.zeros(h)        # loss bound: sum of |persistence err| - |served err|
        self.persistence = np.zeros(h)  # sum of |persistence err| over the same forecasts
        self.held = np.zeros(h)         # stake of the forecasts not matured yet
        self.bounded = np.zeros(h, np.int64)   # forecasts mixed with persistence's so far
        self.matured = np.zeros(h, np.int64)   # served forecasts settled so far

    def available(self) -> np.ndarray:
        """(H,) how far (normalised) the next forecast may depart from persistence's."""
        if not self._p.loss_bound:
            return np.full(len(self.saved), np.inf)
        return np.maximum(self.saved + self._p.risk * self.persistence - self.held, 0.0)

    def limit(self, persistence: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        """(H, Q) quantiles to serve instead of ``chosen`` (H, Q) under the loss bound:
        ``chosen`` where its p50 departs from ``persistence``'s (H, Q) by no more than
        :meth:`available`, else the mix of the two whose p50 departs by exactly that;
        persistence's where ``chosen`` is not finite (a member that failed), bound or not."""
        broken = ~np.isfinite(chosen).all(axis=1)
        chosen = np.where(broken[:, None], persistence, chosen)
        dev = np.abs(chosen[:, 0] - persistence[:, 0])
        room = self.available()
        w = np.where(dev > room, room / np.where(dev > 0, dev, 1.0), 1.0)
        self.bounded += w < 1.0
        return persistence + w[:, None] * (chosen - persistence)

    def hold(self, stake: np.ndarray) -> None:
        """Reserve (H,) ``stake``: the served p50's departure from persistence's (counted
        with the bound off too; only :meth:`available` ignores it then)."""
        self.held += stake

    def settle(self, persistence_err: np.ndarray, served_err: np.ndarray,
               held: np.ndarray, dropped: np.ndarray) -> None:
        """Matured signed errors (H,) of persistence's and the served p50 (NaN where none
        matured), the stake they held, and stake freed by forecasts that never will."""
        ok = np.isfinite(persistence_err) & np.isfinite(served_err)
        p_abs = np.where(ok, np.abs(persistence_err), 0.0)
        self.saved += np.where(ok, p_abs - np.abs(np.where(ok, served_err, 0.0)), 0.0)
        self.persistence += p_abs
        self.matured += ok
        self.release(held + dropped)

    def release(self, stake: np.ndarray) -> None:
        """Free (H,) ``stake`` of forecasts that matured or never will."""
        self.held = np.maximum(self.held - stake, 0.0)

    def served(self, context: int) -> np.ndarray:
        """(H,) variant served now in ``context``: the chosen one where the guard has found
        the choices' errors below ``(1 - margin)`` times persistence's by at least
        ``guard_z`` standard errors (:meth:`evidence` > 0), raw persistence (0) elsewhere,
        so also before any error has matured."""
        chosen = self.chosen[context]
        if not self._p.guard_memory:
            return chosen.copy()
        return np.where(self.evidence(context) > 0.0, chosen, 0)

    def evidence(self, context: int) -> np.ndarray:
        """(H,) the chosen variants' guard lead over persistence in ``context`` (forgotten
        error sums: ``(1 - margin)`` x persistence's minus the variant's), less ``guard_z``
        times its spread; the guard serves the choice only where this is above 0."""
        chosen = self.chosen[context]
        cols = np.arange(len(chosen))
        sums = self.guard[context]
        lead = (1.0 - self._p.margin) * sums[0] - sums[chosen, cols]
        var = np.maximum(self.guard_sq[context], self.guard_lr[context])[chosen, cols]
        return lead - self._p.guard_z * np.sqrt(var)

    def add(self, abs_err: np.ndarray, context: np.ndarray) -> None:
        """One key's matured absolute errors (V, H) per variant and their (H,) contexts (-1
        where none matured); then reselect."""
        keep = np.exp(-1.0 / self._p.guard_memory) if self._p.guard_memory else 0.0
        for c in range(len(CONTEXTS)):
            if (context == c).any():
                row = np.where(context == c, abs_err, np.nan)
                ok = np.isfinite(row)
                self.guard[c] = np.where(ok, self.guard[c] * keep + np.nan_to_num(row),
                                         self.guard[c])
                diff = np.nan_to_num(row[0][None] - row)                   # (V, H)
                self.guard_sq[c] = np.where(ok, self.guard_sq[c] * keep + diff ** 2,
                                            self.guard_sq[c])
                self._step_d[c] += np.where(ok, diff, 0.0)
                self._step_n[c] += ok.any(axis=0)
                self._abs[c, self._pos[c]] = row
                self._pos[c] = (self._pos[c] + 1) % self._abs.shape[1]
                self._reselect(c)

    def close_step(self, step: int) -> None:
        """End of measured ``step`` (after every key's :meth:`add`): its per-context sums of
        the paired differences enter the guard's long-run spread, ``D_t^2 + 2 sum_k w_k D_t
        D_{t-k}`` over the last ``guard_lags`` steps (Bartlett weights ``w_k = 1 - k / (L +
        1)``), forgotten per error like the guard's sums. Lag ``k`` is ``k`` steps of time:
        a step with no matured error (a gap) is a sum of 0, so differences on the two sides
        of a gap longer than the lags are never paired. Errors of the step folded in last
        (a second call for it) or of an older one are folded in with that step's sums, as
        if they had come with them."""
        if not self._step_n.any():
            return
        keep = np.exp(-1.0 / self._p.guard_memory) if self._p.guard_memory else 0.0
        d, n = self._step_d, self._step_n
        if self._closed is not None and step <= self._closed:
            before, d_last, n_last = self._undo
            self.guard_lr, d, n = before, d + d_last, n + n_last
            if self._lagged.maxlen:
                self._lagged.popleft()
        else:
            if self._closed is not None:
                for _ in range(min(step - self._closed - 1, self._lagged.maxlen or 0)):
                    self._lagged.appendleft(np.zeros_like(d))
            self._closed = step
        self._undo = (self.guard_lr, d, n)       # d, n are never changed in place after
        cross = sum((w * d * old for w, old in zip(self._weights, self._lagged)),
                    np.zeros_like(d))
        fade = (keep ** n)[:, None, :]
        self.guard_lr = self.guard_lr * fade + d ** 2 + 2.0 * cross
        self._lagged.appendleft(d.copy())          # kept only while lags > 0 (maxlen)
        self._step_d = np.zeros_like(d)
        self._step_n = np.zeros_like(self._step_n)

    def scores(self, context: int) -> tuple[np.ndarray, np.ndarray]:
        """(V, H) mean absolute error over the window (NaN with none) and (V, H) counts."""
        window = self._abs[context]
        known = np.isfinite(window)
        n = known.sum(axis=0)
        total = np.where(known, window, 0.0).sum(axis=0)
        return np.where(n > 0, total / np.maximum(n, 1), np.nan), n

    def _reselect(self, context: int) -> None:
        mean, n = self.scores(context)
        ok = (n >= self._p.min_errors) & self._allowed[:, None]
        if not ok.any():
            return
        cand = np.where(ok, mean, np.inf)
        best = np.argmin(cand, axis=0)                                     # (H,)
        cols = np.arange(cand.shape[1])
        now = self.chosen[context]
        inc = cand[now, cols]
        better = cand[best, cols] < inc * (1.0 - self._p.margin)
        move = ok[best, cols] & (better | ~np.isfinite(inc)) & (best != now)
        self.switches += int(move.sum())
        self.chosen[context] = np.where(move, best, now)
