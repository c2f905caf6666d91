"""`HealthModel`: what each component should draw, learned from its own fault-free history.

Per component, on minute summaries (:mod:`.minutes`):

- **expected draw**: a base curve (least squares: quadratic in the host's utilisation, or
  linear in the log of the rack's network traffic for a switch), which extrapolates beyond
  the training day's range, plus a LightGBM regression of what it leaves on the host's
  utilisation (mean and spread over the minute), disk and network rates, served request rate,
  whether a job runs, and the rack's total traffic;
- **expected utilisation** (hosts whose workload is known: a scheduler's ``job_running`` or
  a served request rate on at least half the training minutes): a LightGBM regression of
  utilisation on what the workload explains: job running, request rate and the time of day.
  A process nobody started shows as utilisation this model cannot explain. Where nothing
  speaks for the workload (the BSC traces) there is no such model: utilisation alone cannot
  say whether a process was wanted;
- **expected ripple**: a LightGBM regression of the minute's log ripple (:mod:`.minutes`) on
  the expected draw's inputs. The ripple detector reads its residual, and only in *quiet*
  minutes, whose expected band power is at most ``ripple_quiet_w2``: a GPU server's training
  jobs fill the band with hundreds to thousands of W² (checkpoints, job changes), in which a
  fan's hunting cannot be seen, while its idle minutes leave a few W²;
- **PSU efficiency** (components whose BMC reports their PSUs' input and output power,
  :mod:`.psu`): the curve of input over output against output, so that the fractional extra
  input at the same output is a figure of its own;
- **detectors** (:class:`DETECTORS`): per figure the AR(1) fit and scale of the out-of-sample
  training figures (4-fold contiguous cross-fitting: each quarter predicted by a model that
  never saw it) and the CUSUM threshold for the configured false-alarm rate (:mod:`.cusum`).

Saved as one JSON file: settings, per-component figures and the LightGBM model strings (no
pickle). Features with no value anywhere (a switch's utilisation) are NaN, which LightGBM
routes as missing.

lightgbm (with scipy beneath it, ~28 MB of a process's RSS) is imported where a booster is
fitted or first rebuilt from its model string, not with this module: the health_monitor node
imports it for :class:`HealthMonitor` and runs without a model (physical checks only) until
it has learned one, in a child process.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rackpower_nodes.core.health.config import HealthConfig
from rackpower_nodes.core.health.cusum import ar1, threshold
from rackpower_nodes.core.health.learning import booster as _booster
from rackpower_nodes.core.health.learning import burst_band as _burst_band
from rackpower_nodes.core.health.learning import crossfit as _crossfit
from rackpower_nodes.core.health.learning import hour_sd as _hour_sd
from rackpower_nodes.core.health.learning import nanquantile as _nanquantile
from rackpower_nodes.core.health.minutes import (
    Minutes, concat_minutes, job_moved, row_spacing, to_minutes)
from rackpower_nodes.core.health.psu import CURVE_LEN, fit_psu_curve, psu_figure
from rackpower_nodes.core.health.types import HealthFrame

if TYPE_CHECKING:
    import lightgbm as lgb

__all__ = ["DETECTORS", "FORMAT", "HealthModel", "HealthModelError"]

FORMAT = "rackpower-health/5"
#: (figure, sign) of each one-sided CUSUM a component may have
DETECTORS = (("power", 1.0), ("power", -1.0), ("util", 1.0), ("bursts", 1.0), ("ripple", 1.0),
             ("psu", 1.0))
_DAY_S = 86400.0
_RIPPLE_FLOOR_W2 = 0.05
#: quantile of the training minutes' ripple added to it before its log: a floor that keeps
#: near-empty minutes from dominating, low so that an idle GPU server's few W² are not
#: drowned by the hundreds its training jobs fill the band with (the median did that)
RIPPLE_REF_Q = 0.1
#: quiet minutes of training a component needs for a ripple detector
MIN_QUIET_MIN = 60
#: floor of a figure's innovation scale, in its own units (W, utilisation, bursts/min, log)
_SIGMA_FLOOR = {"power": 0.5, "util": 0.01, "bursts": 0.2, "ripple": 0.05, "psu": 0.002}


class HealthModelError(ValueError):
    """A model that cannot be fitted, loaded or applied; the message says why."""


def _power_x(mi: Minutes, j: int) -> np.ndarray:
    return np.column_stack([mi.util[:, j], mi.util_std[:, j], np.log1p(mi.disk[:, j]),
                            np.log1p(mi.net[:, j]), mi.app[:, j], mi.job[:, j],
                            np.log1p(mi.rack_net[:, j])])


def _base_x(mi: Minutes, j: int, on_util: bool, fill: np.ndarray) -> np.ndarray:
    """Design of the base curve: (1, u, u^2, request rate, job running) on utilisation, or
    (1, log traffic, 0, 0, 0) for a component without utilisation (a switch); a missing
    value takes its ``fill`` (the training median; 0 where never known)."""
    v = mi.util[:, j] if on_util else np.log1p(mi.rack_net[:, j])
    cols = [v, v * v if on_util else np.zeros_like(v), mi.app[:, j], mi.job[:, j]]
    cols = [np.where(np.isfinite(c), c, f) for c, f in zip(cols, fill)]
    return np.column_stack([np.ones(len(v))] + cols)


def _util_x(mi: Minutes, j: int) -> np.ndarray:
    phase = 2 * np.pi * (mi.t_min % _DAY_S) / _DAY_S
    return np.column_stack([mi.job[:, j], mi.app[:, j], np.sin(phase), np.cos(phase)])


@dataclass
class HealthModel:
    """A fitted health model of a rack's components (see the module docstring)."""

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    config: dict
    row_s: float
    burst_thr_w: np.ndarray
    ripple_ref_w2: np.ndarray
    power_models: list[str]
    util_models: list[str | None]
    #: per component: LightGBM model string of the expected log ripple
    ripple_models: list[str]
    #: per component: base curve on utilisation (1.0) or traffic (0.0), (components, 4) fill
    #: values of its inputs and (components, 5) coefficients
    base_on_util: np.ndarray
    base_fill: np.ndarray
    base_coef: np.ndarray
    #: (components, len(DETECTORS)) arrays: AR(1) mean, coefficient, innovation scale, h
    mu: np.ndarray
    phi: np.ndarray
    sigma: np.ndarray
    h: np.ndarray
    #: out-of-sample residual standard deviation of the expected draw, W, per component
    power_sd_w: np.ndarray
    #: (components, len(DETECTORS)) CUSUM reference values
    k: np.ndarray
    #: standard deviation of an hour's mean of the out-of-sample utilisation residual, per
    #: component (NaN: no utilisation model); what "utilisation up" is judged against
    util_hour_sd: np.ndarray
    #: the same for the ripple's standardized log power (GPUs' ripple wanders by hours)
    ripple_hour_sd: np.ndarray
    #: per component: the PSU efficiency curve (psu.CURVE_LEN: the smooth form's
    #: coefficients and scale, the outputs trained on, the correction's knots; :mod:`.psu`;
    #: NaN: no PSU readings)
    psu_coef: np.ndarray | None = None
    #: (components, 2): the board's in-row standard deviation per unit utilisation rise and
    #: fall in the row, W, taken out of the burst score (:func:`.minutes.burst_score`)
    burst_coef: np.ndarray | None = None
    #: (components,) the burst score above which a row is a spike, not a retry burst, W
    #: (inf: no cap; models saved before it had none)
    burst_cap_w: np.ndarray | None = None
    _boosters: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        m = len(self.names)
        if self.psu_coef is None:
            self.psu_coef = np.full((m, CURVE_LEN), np.nan)
        if self.burst_coef is None:
            self.burst_coef = np.zeros((m, 2))
        if self.burst_cap_w is None:
            self.burst_cap_w = np.full(m, np.inf)

    # -- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, frames: HealthFrame | list[HealthFrame],
            config: HealthConfig | None = None) -> HealthModel:
        """Learn from fault-free ``frames`` (same components, e.g. one training day).

        (Tried and rejected on tuning seeds: scaling the utilisation CUSUM's ``k`` by
        ``sqrt((1 - phi) / (1 + phi))`` to aim at shifts in marginal standard deviations --
        jobs move a host's utilisation for hours in ways one training day does not show,
        and it raised 2-3 false alarms a day on the mixed rack.)
        """
        cfg = config or HealthConfig()
        frames = [frames] if isinstance(frames, HealthFrame) else list(frames)
        if not frames:
            raise HealthModelError("fit: no frames")
        names, kinds = frames[0].names, frames[0].kinds
        for f in frames[1:]:
            if f.names != names:
                raise HealthModelError(f"fit: frame names {f.names} differ from {names}")
        row_s = row_spacing(np.concatenate([f.t_unix for f in frames]))
        coef, burst, cap = _burst_band(frames, cfg)
        mi = concat_minutes([to_minutes(f, burst, row_s, coef, burst_cap_w=cap)
                             for f in frames])
        if len(mi) < 4 * cfg.folds:
            raise HealthModelError(f"fit: {len(mi)} minutes of data, need at least "
                                   f"{4 * cfg.folds}")
        m = len(names)
        ripple_ref = _nanquantile(np.where(mi.coverage >= cfg.min_coverage, mi.ripple, np.nan),
                                  RIPPLE_REF_Q)
        ripple_ref = np.maximum(np.nan_to_num(ripple_ref, nan=1.0), _RIPPLE_FLOOR_W2)
        model = cls(names, kinds, cfg.as_dict(), row_s, burst, ripple_ref, [""] * m,
                    [None] * m, [""] * m, np.zeros(m), np.zeros((m, 4)), np.zeros((m, 5)),
                    *(np.full((m, len(DETECTORS)), np.nan) for _ in range(3)),
                    np.full((m, len(DETECTORS)), np.inf), np.full(m, np.nan),
                    np.full((m, len(DETECTORS)), np.nan), np.full(m, np.nan),
                    np.full(m, np.nan), burst_coef=coef, burst_cap_w=cap)
        for j in range(m):
            model._fit_component(j, mi, cfg)
        return model

    def _fit_component(self, j: int, mi: Minutes, cfg: HealthConfig) -> None:
        use = (mi.coverage[:, j] >= cfg.min_coverage) & np.isfinite(mi.board[:, j])
        if use.sum() < 4 * cfg.folds:
            raise HealthModelError(f"fit: {self.names[j]} has {int(use.sum())} usable "
                                   f"minutes, need at least {4 * cfg.folds}")
        u_ok = np.isfinite(mi.util[:, j]) & use
        on_util = bool(u_ok.sum() >= 0.5 * use.sum())
        self.base_on_util[j] = float(on_util)
        raw = [mi.util[:, j] if on_util else np.log1p(mi.rack_net[:, j]), None, mi.app[:, j],
               mi.job[:, j]]
        raw[1] = raw[0] ** 2 if on_util else np.zeros(len(mi))
        for i, col in enumerate(raw):
            v = col[use & np.isfinite(col)]
            self.base_fill[j, i] = float(np.median(v)) if len(v) else 0.0
        xb = _base_x(mi, j, on_util, self.base_fill[j])
        coef = np.linalg.lstsq(xb[use], mi.board[use, j], rcond=None)[0]
        self.base_coef[j] = coef
        rest = mi.board[:, j] - xb @ coef
        xp = _power_x(mi, j)
        oos_p = _crossfit(xp, rest, use, cfg)
        self.power_models[j] = _booster(xp[use], rest[use], cfg).model_to_string()
        figures = {"power": np.where(use, rest - oos_p, np.nan)}
        self.power_sd_w[j] = float(np.nanstd(figures["power"]))
        u_use = use & np.isfinite(mi.util[:, j])
        told = max(np.isfinite(mi.job[use, j]).mean(), np.isfinite(mi.app[use, j]).mean())
        if u_use.sum() >= 0.5 * use.sum() and told >= 0.5:
            xu = _util_x(mi, j)
            oos_u = _crossfit(xu, mi.util[:, j], u_use, cfg)
            self.util_models[j] = _booster(xu[u_use], mi.util[u_use, j], cfg).model_to_string()
            figures["util"] = np.where(u_use, mi.util[:, j] - oos_u, np.nan)
            inner = _crossfit(xu, mi.util[:, j], u_use, cfg, interleave=True)
            self.util_hour_sd[j] = _hour_sd(np.where(u_use, mi.util[:, j] - inner, np.nan))
        if self.kinds[j] == "storage":
            figures["bursts"] = np.where(use, mi.bursts[:, j], np.nan)
        psu = fit_psu_curve(mi.psu_ratio[:, j], mi.psu_out[:, j], use)
        if psu is not None:
            self.psu_coef[j] = psu
            figures["psu"] = np.where(use, psu_figure(mi.psu_ratio[:, j], mi.psu_out[:, j],
                                                      psu), np.nan)
        # the ripple's residual on what the workload explains (a GPU server's checkpoints
        # and job changes fill the band, its idle hours leave it near empty), judged only
        # in quiet minutes (_quiet_ripple)
        log_rip = np.log(np.maximum(mi.ripple[:, j], 0.0) + self.ripple_ref_w2[j])
        r_use = use & np.isfinite(log_rip)
        oos_r = _crossfit(xp, log_rip, r_use, cfg)
        self.ripple_models[j] = _booster(xp[r_use], log_rip[r_use], cfg).model_to_string()
        moved = job_moved(mi.job[:, j:j + 1], mi.t_min)[:, 0]
        rip = np.where(r_use, self._quiet_ripple(j, log_rip, oos_r, moved), np.nan)
        rip_sd = 1.0
        if np.isfinite(rip).sum() >= MIN_QUIET_MIN:   # else no ripple detector: never quiet
            figures["ripple"] = rip
            rip_sd = float(np.nanstd(rip))
            self.ripple_hour_sd[j] = _hour_sd((rip - np.nanmean(rip)) / max(rip_sd, 1e-9))
        active = [c for c, (fig, sign) in enumerate(DETECTORS) if fig in figures
                  and (sign > 0 or fig != "power" or cfg.alarm_on_drop)]
        arl0 = cfg.arl0_min * len(active)
        for c in active:
            fig, sign = DETECTORS[c]
            mu, phi, sigma = ar1(figures[fig], cfg.max_phi)
            sigma = max(sigma, _SIGMA_FLOOR[fig]) * cfg.scale_inflation
            x = figures[fig] - mu
            z = sign * (x[1:] - phi * x[:-1]) / sigma
            k = cfg.k_of(fig)
            if fig == "ripple" and np.isfinite(self.ripple_hour_sd[j]):
                # aim beyond the ripple's own slow wander (GPU servers' jobs move it for
                # hours): wander_sds of its hour-mean sd, as an innovation in sigma units
                k = max(k, cfg.wander_sds * self.ripple_hour_sd[j] * rip_sd * (1 - phi) / sigma)
            self.mu[j, c], self.phi[j, c], self.sigma[j, c], self.k[j, c] = mu, phi, sigma, k
            self.h[j, c] = threshold(z, arl0, k, seed=j * 10 + c, clip=cfg.z_clip)

    def _quiet_ripple(self, j: int, log_ripple: np.ndarray, expected: np.ndarray,
                      moved: np.ndarray) -> np.ndarray:
        """Component ``j``'s log ripple less its ``expected`` value, NaN in the minutes whose
        expected band power (W²) is above ``ripple_quiet_w2`` (the workload fills the band
        more than a fan's hunting could) or in which a job ``moved`` (:func:`job_moved`: a
        step of the draw, kW on a GPU server, fills the band; a training day holds too few
        such minutes for the expected ripple to learn them)."""
        quiet = np.exp(expected) - self.ripple_ref_w2[j] <= self.config["ripple_quiet_w2"]
        return np.where(quiet & ~moved, log_ripple - expected, np.nan)

    # -- applying --------------------------------------------------------------------------
    def booster(self, kind: str, j: int) -> lgb.Booster | None:
        key = (kind, j)
        if key not in self._boosters:
            text = {"power": self.power_models, "util": self.util_models,
                    "ripple": self.ripple_models}[kind][j]
            booster = None
            if text:
                import lightgbm as lgb

                booster = lgb.Booster(model_str=text)
            self._boosters[key] = booster
        return self._boosters[key]

    def expected(self, mi: Minutes) -> tuple[np.ndarray, np.ndarray]:
        """Expected board power (W) and utilisation per minute, (minutes, components)."""
        if mi.board.shape[1] != len(self.names):
            raise HealthModelError(f"{mi.board.shape[1]} components, model has "
                                   f"{len(self.names)}")
        power = np.full(mi.board.shape, np.nan)
        util = np.full(mi.board.shape, np.nan)
        if len(mi) == 0:
            return power, util
        for j in range(len(self.names)):
            xb = _base_x(mi, j, bool(self.base_on_util[j]), self.base_fill[j])
            power[:, j] = xb @ self.base_coef[j] + \
                self.booster("power", j).predict(_power_x(mi, j), num_threads=1)
            ub = self.booster("util", j)
            if ub is not None:
                util[:, j] = ub.predict(_util_x(mi, j), num_threads=1)
        return power, util

    def figures(self, mi: Minutes, min_coverage: float, dead_frac: float = 0.0,
                job_before: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Detector figures ``(minutes, components, len(DETECTORS))`` and expected power;
        ``dead_frac``: the power residual is moved towards zero by this fraction of the
        expected draw for both power detectors (a dead zone: shifts smaller than it do not
        accumulate); ``job_before``: :func:`job_moved`'s ``before`` (start, job shares)."""
        exp_p, exp_u = self.expected(mi)
        ok = mi.coverage >= min_coverage
        power = np.where(ok, mi.board - exp_p, np.nan)
        util = np.where(ok, mi.util - exp_u, np.nan)
        ripple = np.log(np.maximum(mi.ripple, 0.0) + self.ripple_ref_w2)
        moved = job_moved(mi.job, mi.t_min, job_before)
        for j in range(len(self.names)):
            rb = self.booster("ripple", j)
            ripple[:, j] = np.nan if rb is None or not len(mi) else self._quiet_ripple(
                j, ripple[:, j], rb.predict(_power_x(mi, j), num_threads=1), moved[:, j])
        ripple = np.where(ok, ripple, np.nan)
        psu = np.column_stack([psu_figure(mi.psu_ratio[:, j], mi.psu_out[:, j],
                                          self.psu_coef[j]) for j in range(len(self.names))])
        by_fig = {"power": power, "util": util, "bursts": np.where(ok, mi.bursts, np.nan),
                  "ripple": ripple, "psu": np.where(ok, psu, np.nan)}
        out = np.stack([by_fig[f] for f, _ in DETECTORS], axis=2)
        if dead_frac > 0:
            for c, (fig, sign) in enumerate(DETECTORS):
                if fig == "power":
                    out[:, :, c] -= sign * dead_frac * np.abs(exp_p)
        return out, exp_p

    def minutes(self, frame: HealthFrame, util_before: np.ndarray | None = None) -> Minutes:
        """``frame`` per minute as this model reads it (its burst threshold and load terms,
        its row spacing); ``util_before``: the utilisation of the row just before the
        frame's first, if known (:func:`.minutes.load_steps`)."""
        return to_minutes(frame, self.burst_thr_w, self.row_s, self.burst_coef, util_before,
                          self.burst_cap_w)

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file."""
        path = Path(path)
        doc = {"format": FORMAT, "names": list(self.names), "kinds": list(self.kinds),
               "config": self.config, "row_s": self.row_s,
               "burst_thr_w": _jsonable(self.burst_thr_w),
               "ripple_ref_w2": _jsonable(self.ripple_ref_w2),
               "power_models": self.power_models, "util_models": self.util_models,
               "ripple_models": self.ripple_models,
               "base_on_util": _jsonable(self.base_on_util),
               "base_fill": _jsonable(self.base_fill), "base_coef": _jsonable(self.base_coef),
               "power_sd_w": _jsonable(self.power_sd_w), "k": _jsonable(self.k),
               "util_hour_sd": _jsonable(self.util_hour_sd),
               "ripple_hour_sd": _jsonable(self.ripple_hour_sd),
               "psu_coef": _jsonable(self.psu_coef), "burst_coef": _jsonable(self.burst_coef),
               "burst_cap_w": _jsonable(self.burst_cap_w),
               **{k: _jsonable(getattr(self, k)) for k in ("mu", "phi", "sigma", "h")}}
        path.write_text(json.dumps(doc))
        return path

    @classmethod
    def load(cls, path: str | Path) -> HealthModel:
        """Read what :meth:`save` wrote."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise HealthModelError(f"{path}: cannot read a health model ({exc})") from None
        if doc.get("format") != FORMAT:
            raise HealthModelError(f"{path}: format {doc.get('format')!r}, expected {FORMAT!r}")
        arr = {k: _array(doc[k]) for k in ("burst_thr_w", "ripple_ref_w2", "power_sd_w", "mu",
                                           "phi", "sigma", "h", "base_on_util", "base_fill",
                                           "base_coef", "k", "util_hour_sd",
                                           "ripple_hour_sd", "psu_coef", "burst_coef")}
        arr["burst_cap_w"] = _array(doc.get("burst_cap_w", [None] * len(doc["names"])))
        for k in ("burst_thr_w", "h", "burst_cap_w"):     # inf was written as null
            arr[k] = np.where(np.isnan(arr[k]), np.inf, arr[k])
        return cls(tuple(doc["names"]), tuple(doc["kinds"]), dict(doc["config"]),
                   float(doc["row_s"]), arr["burst_thr_w"], arr["ripple_ref_w2"],
                   list(doc["power_models"]), list(doc["util_models"]),
                   list(doc["ripple_models"]), arr["base_on_util"], arr["base_fill"],
                   arr["base_coef"], arr["mu"], arr["phi"],
                   arr["sigma"], arr["h"], arr["power_sd_w"], arr["k"], arr["util_hour_sd"],
                   arr["ripple_hour_sd"], arr["psu_coef"].reshape(-1, CURVE_LEN),
                   arr["burst_coef"].reshape(-1, 2), arr["burst_cap_w"])


def _jsonable(a: np.ndarray) -> list:
    return [None if not math.isfinite(v) else v for v in np.asarray(a, float).ravel()] \
        if np.ndim(a) == 1 else [_jsonable(r) for r in a]


def _array(v: list) -> np.ndarray:
    return np.array(v, dtype=np.float64)   # None -> nan
