"""`HealthConfig`: the health model's settings (learned detectors, alarms, state keeping).

Built with :meth:`HealthConfig.from_mapping` from a plain mapping (a YAML section, node
parameters): an unknown key or a value of the wrong kind raises :class:`HealthConfigError`
naming the key. The physical checks' own settings nest under ``checks``
(:class:`~rackpower_nodes.core.health.checks_config.ChecksConfig`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from rackpower_nodes.core.health.checks_config import ChecksConfig

__all__ = ["HealthConfig", "HealthConfigError"]


class HealthConfigError(ValueError):
    """A bad health setting; the message names the key, the value and what was expected."""


@dataclass(frozen=True)
class HealthConfig:
    """Settings of :class:`~rackpower_nodes.core.health.monitor.HealthMonitor` and of
    :meth:`~rackpower_nodes.core.health.baseline.HealthModel.fit`.

    False alarms: each learned detector of a component is a two-sided (power) or one-sided
    (utilisation, bursts, ripple) CUSUM on AR(1)-prewhitened, standardized minute figures; its
    threshold is set so that its in-control average run length is ``arl0_weeks`` weeks
    (Siegmund's approximation), divided among the component's detectors, so one component
    raises a false alarm about once per ``arl0_weeks`` weeks and a rack of 16 about once per
    ``arl0_weeks / 16`` weeks.
    """

    #: in-control average run length per component, weeks (16 components: 1 per rack-week)
    arl0_weeks: float = 16.0
    #: CUSUM reference value k in standardized units (detects shifts of about 2k)
    cusum_k: float = 0.5
    #: the burst-count detector's k (retries add a fraction of a burst per minute at first):
    #: a drive retrying 0.75 times a minute adds ~0.6 burst seconds a minute to a storage
    #: node's ~1.2, about 0.3 of the count's standardized scale (~1.9 burst seconds), and k
    #: is half of that. At 0.25 such a drive gained ~0.05 a minute against h ~22: 80 % of
    #: steps of 0.75/min were found within 4 h, 97 % at 0.15 (tuning seeds 140201-140205)
    bursts_k: float = 0.15
    #: the PSU-efficiency detector's k: its minute noise is ~0.6 % of extra input and the
    #: efficiency wanders by a few tenths of a % with temperature over hours, so it aims at
    #: losses of ~2 % (2k standard deviations), the smallest a PSU reports as failing
    psu_k: float = 1.0
    #: the ripple detector's k is at least this many standard deviations of a healthy hour's
    #: mean ripple (as the innovation a held shift of that size makes): a component whose
    #: quiet minutes' ripple wanders by hours then needs a shift beyond its wander.
    #: Components whose ripple is near white (hour sd ~0.13) keep ``cusum_k``
    wander_sds: float = 3.0
    #: the ripple detector reads only minutes whose expected ripple band power is at most this,
    #: W²: a fan hunting by 10 W adds ~50 W² (the simulator's worn fans, 5-25 W with a ripple
    #: of 30-60 % of it, hunt by 1.5-15 W), so where the workload fills the band more (a GPU
    #: server under a training job: hundreds to thousands of W²) a fan cannot be seen.
    #: 1-2U servers, switches and storage expect a few W² (99 % of their minutes under
    #: ~23 W² on the simulated racks); a GPU server is read while idle or lightly loaded
    ripple_quiet_w2: float = 50.0
    #: the prewhitened utilisation CUSUM runs besides ``util_level``. Off: on the tuning
    #: seeds' fault-free weeks (6000-6006) it raised every false alarm of the ai rack's CPU
    #: hosts (3 in a week: their utilisation held ~0.1 above what one training day taught
    #: for an hour or more), and on the fault days (3000-3009) the level CUSUM alone found
    #: every runaway it found, hours later at most (runaways never trip their host)
    prewhitened_util: bool = False
    #: the ``util_level`` CUSUM (utilisation residual, not prewhitened): reference value,
    #: utilisation (at least twice the sd of a healthy hour's mean), and threshold,
    #: utilisation x minutes (+0.2 beyond the reference for ~2 h). Tuning seeds 6000-6006:
    #: the largest value over a fault-free week of any host was 14.7; runaways of +0.24 to
    #: +0.46 reached 25 in 1.3-3.5 h (one where a job already kept the host busy: 7.9 h)
    util_level_k: float = 0.1
    util_level_h: float = 25.0
    #: ... down to this reference where the workload explains the host's utilisation (the
    #: out-of-sample residual's sd under ``util_level_k``: ``monitor.util_level_k``). Tuning
    #: weeks 35000-35006 and 6000-6006: such hosts' level CUSUM at k = 0.05 reached at most
    #: 7.0 (ai cpu03), most under 2.5
    util_level_k_min: float = 0.05
    #: standardized innovations are clipped to +-z_clip (one wild minute adds at most
    #: z_clip - k to a CUSUM)
    z_clip: float = 4.0
    #: a drop of the board's power below the expected draw raises an alarm (no component
    #: fault draws less; without a reference meter it is a sensor offset or an unknown job)
    alarm_on_drop: bool = False
    #: the power detectors ignore this fraction of the expected draw (a dead zone, applied
    #: while monitoring only: the thresholds stay those of the training residuals)
    dead_zone_frac: float = 0.01
    #: extra factor on the scale of the residuals (held-out days are not the training day)
    scale_inflation: float = 1.5
    #: the AR(1) coefficient used for prewhitening is clipped to this
    max_phi: float = 0.9
    #: training-data share held out per cross-fitting fold (4 folds at 0.25)
    folds: int = 4
    #: LightGBM boosting rounds and leaves of the expected-draw and expected-util models
    trees: int = 120
    leaves: int = 8
    min_leaf: int = 30
    #: a row is a burst when its burst score (in-row standard deviation less what the load's
    #: steps explain, :func:`.minutes.burst_score`) exceeds ``burst_factor`` x the
    #: training's ``burst_quantile`` of that score
    burst_quantile: float = 0.98
    burst_factor: float = 1.0
    #: ... and stays at or below the training's ``burst_cap_quantile`` of it (1: no cap;
    #: :func:`.learning.burst_band` drops a cap too close to the threshold). A retry of
    #: 3-9 W lifts its second's deviation by at most half its height; the top ~0.5 % of a
    #: clean storage node's seconds are its fan and turbo spikes (~10 W and more), which
    #: carry no retry and add noise to the count (tuning seeds 200-202: the count's signal
    #: to noise per retry 1.2-1.3x the uncapped count's; steps of 0.6 retries/min found
    #: within 4 h 90 % against 53 %, seeds 140201-140205)
    burst_cap_quantile: float = 0.995
    #: a minute needs this share of its rows to be used (else it is skipped)
    min_coverage: float = 0.5
    #: score at which a component is put on watch (fault at 1.0)
    watch_score: float = 0.5
    #: a fault is cleared only after the score stayed below ``watch_score`` this long, s
    clear_after_s: float = 3600.0
    #: a learned alarm becomes a fault only once its change point is this many minutes old,
    #: so that its cause is named from minutes after the change (0: at once); until then the
    #: component is on watch
    name_after_min: int = 20
    #: the CUSUM statistic is capped at this multiple of its threshold (so it can recover)
    cusum_cap: float = 1.5
    #: minutes of learned figures kept per component for naming a cause
    history_min: int = 1440
    checks: ChecksConfig = field(default_factory=ChecksConfig)

    def __post_init__(self) -> None:
        for name in ("alarm_on_drop", "prewhitened_util"):
            if not isinstance(getattr(self, name), bool):
                raise HealthConfigError(f"{name}: {getattr(self, name)!r}, expected a bool")
        positive = ("z_clip", "arl0_weeks", "cusum_k", "bursts_k", "psu_k", "util_level_k",
                    "util_level_k_min", "wander_sds", "ripple_quiet_w2", "util_level_h",
                    "scale_inflation", "burst_factor", "clear_after_s", "watch_score")
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise HealthConfigError(f"{name}: {v!r}, expected a finite number > 0")
        if not 0 <= self.dead_zone_frac < 0.5:
            raise HealthConfigError(f"dead_zone_frac: {self.dead_zone_frac!r}, expected "
                                    f"[0, 0.5)")
        if not 0 <= self.max_phi < 1:
            raise HealthConfigError(f"max_phi: {self.max_phi!r}, expected 0 <= max_phi < 1")
        if not 0.5 <= self.burst_quantile < 1:
            raise HealthConfigError(f"burst_quantile: {self.burst_quantile!r}, expected "
                                    f"[0.5, 1)")
        if not self.burst_quantile < self.burst_cap_quantile <= 1:
            raise HealthConfigError(f"burst_cap_quantile: {self.burst_cap_quantile!r}, "
                                    f"expected (burst_quantile, 1]")
        if not 0 < self.min_coverage <= 1:
            raise HealthConfigError(f"min_coverage: {self.min_coverage!r}, expected (0, 1]")
        if not self.watch_score < 1:
            raise HealthConfigError(f"watch_score: {self.watch_score!r}, expected < 1")
        if not self.cusum_cap >= 1:
            raise HealthConfigError(f"cusum_cap: {self.cusum_cap!r}, expected >= 1")
        if isinstance(self.name_after_min, bool) or not isinstance(self.name_after_min, int) \
                or self.name_after_min < 0:
            raise HealthConfigError(f"name_after_min: {self.name_after_min!r}, expected an "
                                    f"integer >= 0")
        for name in ("folds", "trees", "leaves", "min_leaf", "history_min"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                raise HealthConfigError(f"{name}: {v!r}, expected an integer >= 2")

    def k_of(self, figure: str) -> float:
        """The CUSUM reference value of a detector on ``figure``."""
        return {"bursts": self.bursts_k, "psu": self.psu_k}.get(figure, self.cusum_k)

    @property
    def arl0_min(self) -> float:
        """In-control average run length per component, minutes."""
        return self.arl0_weeks * 7 * 1440

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> HealthConfig:
        """Settings from a mapping; missing keys keep their defaults."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise HealthConfigError(f"health config: {type(raw).__name__}, expected a mapping")
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                raise HealthConfigError(f"unknown health config key {key!r} "
                                        f"(known: {sorted(known)})")
            if key == "checks":
                kwargs[key] = value if isinstance(value, ChecksConfig) else \
                    ChecksConfig.from_mapping(value)
                continue
            default = known[key].default
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise HealthConfigError(f"{key}: {value!r}, expected true or false")
                kwargs[key] = value
                continue
            kwargs[key] = _typed(key, value, type(default))
        return replace(cls(), **kwargs)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (``checks`` left out: it has its own config)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "checks"}


def _typed(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise HealthConfigError(f"{key}: {value!r}, expected a {kind.__name__}")
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise HealthConfigError(f"{key}: {value!r}, expected an integer")
        return value
    if not isinstance(value, int | float):
        raise HealthConfigError(f"{key}: {value!r}, expected a number")
    return float(value)
