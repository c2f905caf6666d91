"""`HealthMonitor`: the streaming health verdict of every component of a rack.

Fed :class:`HealthFrame` rows in time order, any number per call, it runs

- the **physical checks** always (:class:`~.checks.PhysicalChecks`: stuck channel, outlet
  dropouts, board vs an independent meter -> ``sensor_offset`` / ``sensor_gain``), and
- the **learned detectors** when a :class:`~.baseline.HealthModel` is given: per complete
  minute, the residuals against the expected draw and utilisation, the burst count and the
  ripple band go through prewhitened CUSUMs (:mod:`.cusum`), and the utilisation residual
  itself through a CUSUM on its level (``util_level``: a process nobody started keeps the
  host busy for hours, a shift that prewhitening with the residual's strong autocorrelation
  would hide after its first minute); the cause of an alarm is named from the evidence since
  its change point (:mod:`.signatures`); a learned alarm becomes a fault only once its
  change point is ``name_after_min`` minutes old (on watch until then), so that its cause is
  named from minutes after the change, not diluted by those before it.

Per component the stronger of the two decides, except that a sensor finding (``sensor_*``)
at watch level or above always wins: the board's reading is wrong, so the residual alarms on
it are explained by it. States: ``ok`` below ``watch_score``, ``watch`` up to 1, ``fault``
from 1. A fault is held (with the cause it was raised with, unless a sensor finding comes to
explain it) until the score stayed below ``watch_score`` for ``clear_after_s``: no flapping.
States are judged once per :meth:`HealthMonitor.update` call (the CUSUMs advance per minute
inside it), so feed it at most a few minutes at a time for timely verdicts.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.core.health.baseline import DETECTORS, HealthModel, HealthModelError
from rackpower_nodes.core.health.checks import PhysicalChecks
from rackpower_nodes.core.health.config import HealthConfig
from rackpower_nodes.core.health.cusum import CusumBank
from rackpower_nodes.core.health.minutes import MINUTE_S
from rackpower_nodes.core.health.signatures import Evidence, name_cause
from rackpower_nodes.core.health.types import (
    SENSOR_FAULTS, FlaggedInterval, HealthFrame, HealthFrameError, HealthVerdict)

__all__ = ["DETECTOR_NAMES", "HealthConfig", "HealthModel", "HealthMonitor"]

#: names of :data:`~.baseline.DETECTORS` in the verdicts' evidence
DETECTOR_NAMES = ("power_up", "power_down", "util", "bursts", "ripple", "psu", "util_level")
_P_RES, _P_EXP, _U_RES, _RIPPLE, _R_RES, _PSU = range(6)     # history figures


def util_level_k(model: HealthModel, cfg: HealthConfig) -> np.ndarray:
    """Per component, the ``util_level`` CUSUM's reference (utilisation):
    ``max(util_level_k_min, 2 x util_hour_sd, min(util_level_k, sd))``, ``sd`` the marginal
    standard deviation of the out-of-sample utilisation residual the model learned
    (contiguous cross-fitting: hours of the day its model never saw, what a new day looks
    like; AR(1) innovation scale over sqrt(1 - phi^2), without the scale inflation).

    A host whose workload leaves its utilisation unexplained by ~0.1 for hours (a general
    server running jobs; sd 0.1-0.16 on the simulated racks) keeps ``util_level_k``: its
    residual's hour means reach 0.15-0.23 on fault-free weeks. A host whose utilisation the
    workload explains (GPU servers, storage, the ai rack's CPU hosts: sd 0.01-0.05, hour
    means within 0.15) gets down to ``util_level_k_min``, so a runaway of the smallest
    size drawn, +0.1, gains at least 0.05 a minute there and is found within ~9 h instead
    of never (at k = 0.1 it gained nothing)."""
    infl = float(model.config.get("scale_inflation", cfg.scale_inflation))
    phi = np.clip(np.nan_to_num(model.phi[:, 2]), 0.0, 0.99)
    sd = np.nan_to_num(model.sigma[:, 2] / infl / np.sqrt(1.0 - phi ** 2), nan=np.inf)
    return np.maximum.reduce([np.full(len(sd), cfg.util_level_k_min),
                              2.0 * np.nan_to_num(model.util_hour_sd),
                              np.minimum(cfg.util_level_k, sd)])


class HealthMonitor:
    """Health verdicts of components ``names`` (kinds ``kinds``) from :class:`HealthFrame`
    rows; ``model`` None runs the physical checks only."""

    def __init__(self, names: Sequence[str], kinds: Sequence[str], model: HealthModel | None,
                 config: HealthConfig | None = None):
        self.names, self.kinds = tuple(names), tuple(kinds)
        self.config = cfg = config or HealthConfig()
        m = len(self.names)
        if len(self.kinds) != m:
            raise ValueError(f"kinds: {len(self.kinds)} entries for {m} names")
        if model is not None and model.names != self.names:
            raise HealthModelError(f"model: learned for {list(model.names)}, monitoring "
                                   f"{list(self.names)}")
        self.model = model
        self.checks = PhysicalChecks(self.names, self.kinds, cfg.checks)
        self._pending: HealthFrame | None = None
        #: the last judged row's time and utilisation: the row before the next chunk's first
        self._row_last: tuple[float, np.ndarray] | None = None
        #: the last judged minute's start and job share (minutes.job_moved)
        self._min_last: tuple[float, np.ndarray] | None = None
        self._t_last = -math.inf
        if model is not None:
            self._active = np.isfinite(model.h) & np.isfinite(model.sigma)
            # the prewhitened utilisation CUSUM only where configured (the level CUSUM
            # below reads the utilisation residual either way)
            self._util_on = self._active[:, 2].copy()
            self._active[:, 2] &= cfg.prewhitened_util
            sign = np.array([s for _, s in DETECTORS])
            self._bank = CusumBank(np.nan_to_num(model.mu).ravel(),
                                   np.nan_to_num(model.phi).ravel(),
                                   np.nan_to_num(model.sigma, nan=1.0).ravel(),
                                   np.tile(sign, m), np.where(self._active, model.h,
                                                              np.inf).ravel(),
                                   np.nan_to_num(model.k, nan=1.0).ravel(), cfg.cusum_cap,
                                   cfg.z_clip)
            sd = model.sigma[:, 4] / np.sqrt(1 - np.nan_to_num(model.phi[:, 4]) ** 2)
            self._ripple_sd = np.nan_to_num(sd, nan=1.0)
            self._level = self._level_bank(model, cfg)
        self._scores = np.zeros((m, len(DETECTORS) + 1))
        self._hist_t = np.full(cfg.history_min, np.nan)
        self._hist = np.full((cfg.history_min, m, 6), np.nan)
        self._n_hist = 0
        self._state = ["ok"] * m
        self._cause = [""] * m
        self._since = np.full(m, np.nan)
        self._last_bad = np.full(m, np.nan)
        self._closed: list[FlaggedInterval] = []

    @staticmethod
    def _level_bank(model: HealthModel, cfg: HealthConfig) -> CusumBank:
        """The ``util_level`` CUSUMs: on the minute's utilisation residual itself (no
        prewhitening), threshold ``util_level_h``, only for hosts with a utilisation model;
        reference :func:`util_level_k`."""
        m = len(model.names)
        on = np.array([u is not None for u in model.util_models]) & np.isfinite(
            model.util_hour_sd)
        k = util_level_k(model, cfg)
        return CusumBank(np.zeros(m), np.zeros(m), np.ones(m), np.ones(m),
                         np.where(on, cfg.util_level_h, np.inf), k, cfg.cusum_cap, 1.0)

    @property
    def learned(self) -> bool:
        """The learned detectors run (a model was given)."""
        return self.model is not None

    # -- feeding ---------------------------------------------------------------------------
    def update(self, frame: HealthFrame) -> list[HealthVerdict]:
        """Feed the next rows; one verdict per component, in names order."""
        if frame.names != self.names:
            raise HealthFrameError(f"names: frame has {list(frame.names)}, the monitor "
                                   f"{list(self.names)}")
        if len(frame) and frame.t_unix[0] <= self._t_last:
            raise HealthFrameError(f"t_unix: {frame.t_unix[0]} not after the last row fed "
                                   f"({self._t_last})")
        findings = self.checks.update(frame)
        if len(frame):
            self._t_last = float(frame.t_unix[-1])
            if self.model is not None:
                self._learn_rows(frame)
        now = self._t_last + (self.model.row_s if self.model is not None else 1.0)
        return [self._judge(j, findings[j], now) for j in range(len(self.names))]

    def _learn_rows(self, frame: HealthFrame) -> None:
        rows = frame if self._pending is None else HealthFrame.concat([self._pending, frame])
        t = rows.t_unix
        last_min = math.floor(t[-1] / MINUTE_S)
        done = t[-1] + self.model.row_s >= (last_min + 1) * MINUTE_S - 1e-6
        cut = len(t) if done else int(np.searchsorted(t, last_min * MINUTE_S))
        self._pending = rows.rows(cut, len(t)) if cut < len(t) else None
        if cut == 0:
            return
        done_rows = rows.rows(0, cut)
        before = None
        if self._row_last is not None and t[0] - self._row_last[0] <= 1.5 * self.model.row_s:
            before = self._row_last[1]
        mi = self.model.minutes(done_rows, before)
        self._row_last = (float(t[cut - 1]), np.asarray(done_rows.util[-1], dtype=np.float64))
        x, expected = self.model.figures(mi, self.config.min_coverage,
                                         self.config.dead_zone_frac, self._min_last)
        if len(mi):
            self._min_last = (float(mi.t_min[-1]), mi.job[-1].copy())
        u_res = np.where(self._util_on[None], x[:, :, 2], np.nan)
        x = np.where(self._active[None], x, np.nan)
        m = len(self.names)
        for i in range(len(mi)):
            self._scores = np.column_stack([
                self._bank.step(mi.t_min[i], x[i].ravel()).reshape(m, -1),
                self._level.step(mi.t_min[i], u_res[i])])
            slot = self._n_hist % len(self._hist_t)
            self._hist_t[slot] = mi.t_min[i]
            ripple_z = (x[i, :, 4] - self.model.mu[:, 4]) / self._ripple_sd
            res = np.where(mi.coverage[i] >= self.config.min_coverage,
                           mi.board[i] - expected[i], np.nan)
            self._hist[slot] = np.stack([res, expected[i], u_res[i], ripple_z,
                                         mi.ref[i] - expected[i], x[i, :, 5]], axis=1)
            self._n_hist += 1

    # -- judging ---------------------------------------------------------------------------
    def _learned(self, j: int, window_min: int = 10) -> tuple[float, str, float, dict]:
        """Score, cause, change point and evidence of component ``j``'s learned detectors."""
        s = np.where(np.isfinite(self._scores[j]), self._scores[j], 0.0)
        c = int(np.argmax(s))
        score = float(s[c])
        if score < self.config.watch_score:
            return score, "", math.nan, {}
        starts = np.column_stack([self._bank.start.reshape(len(self.names), -1),
                                  self._level.start])
        since = float(starts[j, c])
        n = min(self._n_hist, len(self._hist_t))
        order = (np.arange(self._n_hist - n, self._n_hist)) % len(self._hist_t)
        t, h = self._hist_t[order], self._hist[order, j]
        start = min(since if math.isfinite(since) else t[-1], t[max(0, len(t) - window_min)])
        w = h[t >= start]
        ev = Evidence(self.kinds[j], w[:, _P_RES], w[:, _P_EXP], w[:, _U_RES], w[:, _RIPPLE],
                      {DETECTOR_NAMES[i]: float(s[i]) for i in range(len(s))
                       if i >= len(DETECTORS) or self._active[j, i]}, w[:, _R_RES],
                      float(self.model.util_hour_sd[j]), float(self.model.ripple_hour_sd[j]),
                      w[:, _PSU])
        cause, evidence = name_cause(ev)
        return score, cause, since, evidence

    def _judge(self, j: int, finding, now: float) -> HealthVerdict:
        cfg = self.config
        score, cause, since, evidence = 0.0, "", math.nan, {}
        if self.model is not None:
            score, cause, since, evidence = self._learned(j)
        checked = finding is not None and (finding.score >= score or (
            finding.cause in SENSOR_FAULTS and finding.score >= cfg.watch_score))
        if checked:
            score, cause, since = float(finding.score), finding.cause, float(finding.since_unix)
            evidence = dict(finding.evidence)
        name = self.names[j]
        if (score >= 1.0 and self._state[j] != "fault" and not checked
                and now - since < cfg.name_after_min * MINUTE_S):
            # a learned alarm this young would be named from minutes before its change
            # point (the cause's window is at least 10 minutes): on watch until it is not
            self._state[j] = "watch"
            return HealthVerdict(name, "watch", score, cause, since, evidence)
        if score >= 1.0:
            if self._state[j] != "fault":
                self._state[j], self._cause[j] = "fault", cause
                self._since[j] = since if math.isfinite(since) else now
            elif cause in SENSOR_FAULTS and self._cause[j] not in SENSOR_FAULTS:
                self._cause[j] = cause            # a sensor finding explains the alarm
            self._last_bad[j] = now
        elif self._state[j] == "fault":
            if score >= cfg.watch_score:
                self._last_bad[j] = now
            elif now - self._last_bad[j] >= cfg.clear_after_s:
                self._closed.append(FlaggedInterval(name, float(self._since[j]),
                                                    float(max(self._last_bad[j],
                                                              self._since[j])),
                                                    self._cause[j]))
                self._state[j] = "ok"
        if self._state[j] == "fault":
            return HealthVerdict(name, "fault", score, self._cause[j], float(self._since[j]),
                                 evidence)
        if score >= cfg.watch_score and cause:
            self._state[j] = "watch"
            return HealthVerdict(name, "watch", score, cause, since, evidence)
        self._state[j] = "ok"
        return HealthVerdict(name, "ok", score)

    def flagged(self) -> list[FlaggedInterval]:
        """Fault intervals so far, in the order they were opened (end inf: still faulty)."""
        open_ = [FlaggedInterval(n, float(self._since[j]), math.inf, self._cause[j])
                 for j, n in enumerate(self.names) if self._state[j] == "fault"]
        return sorted(self._closed + open_, key=lambda f: (f.start_unix, f.component))
