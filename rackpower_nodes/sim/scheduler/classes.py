"""Job classes of the simulator's batch scheduler, read from a sim config's ``scheduler:`` key.

A class is a stream of jobs of one kind: Poisson arrivals at ``rate_per_h`` (scaled by the
office-hours shape when ``diurnal``), each job asking for ``n_hosts`` whole hosts of its
``hosts`` pool for an *expected* duration (log-normal around ``duration_s``, the user's
estimate the scheduler sees) and running for an *actual* duration (the estimate times a
log-normal factor, capped at ``time_limit_factor`` times it: the scheduler never sees it).
A started job first spends ``startup_s`` (data loading, container start: CPU busy at
``startup_util``, GPUs near idle) before its main power arrives. Times in s, sizes 0..1.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rackpower_nodes.sim.rack_model import SimConfigError, cfg_float, cfg_map, cfg_numbers

__all__ = ["JOB_KINDS", "InferenceSpec", "JobClass", "SchedulerConfig", "TrainingSpec",
           "parse_scheduler"]

JOB_KINDS = ("cpu", "gpu-train", "gpu-infer", "io")


def _range(raw: Mapping, name: str, key: str, default: Sequence[float], low: float,
           high: float, unit: str) -> tuple[float, float]:
    lo, hi = cfg_numbers(list(raw.get(name, list(default))), f"{key}.{name}", low, high, unit, 2)
    if hi < lo:
        raise SimConfigError(f"{key}.{name}: [{lo}, {hi}], expected [min, max] with min <= max")
    return lo, hi


@dataclass(frozen=True)
class TrainingSpec:
    """Synchronous data-parallel training: each iteration computes for ``compute_frac`` of its
    period (drawn per job from ``iter_s``, s) then communicates; every ``checkpoint_every_s``
    all hosts write a checkpoint for a duration drawn per job from ``checkpoint_s``."""

    iter_s: tuple[float, float] = (0.8, 2.0)
    compute_frac: float = 0.7
    checkpoint_every_s: float = 600.0
    checkpoint_s: tuple[float, float] = (20.0, 40.0)

    @classmethod
    def from_config(cls, raw, key: str) -> TrainingSpec:
        raw, d = cfg_map(raw or {}, key), cls()
        return cls(_range(raw, "iter_s", key, d.iter_s, 0.05, 60.0, "s"),
                   cfg_float(raw, "compute_frac", key, d.compute_frac, 0.05, 0.95),
                   cfg_float(raw, "checkpoint_every_s", key, d.checkpoint_every_s, 10.0, 1e5,
                             "s"),
                   _range(raw, "checkpoint_s", key, d.checkpoint_s, 1.0, 3600.0, "s"))


@dataclass(frozen=True)
class InferenceSpec:
    """A request-driven service: ``peak_rps`` requests/s at the busiest hour (diurnal office
    shape, never below ``night_frac`` of it), surges arriving at ``surge_rate_per_h`` that
    multiply the rate by a factor from ``surge_gain`` for a time from ``surge_s``; the GPUs
    serve the rate after a queue delay ``delay_s`` plus a lag ``tau_s`` (s); a host saturates
    at ``capacity_rps``; each request carries ``bytes_per_request`` of network input."""

    peak_rps: float = 300.0
    night_frac: float = 0.25
    capacity_rps: float = 600.0
    surge_rate_per_h: float = 4.0
    surge_gain: tuple[float, float] = (1.4, 2.2)
    surge_s: tuple[float, float] = (60.0, 300.0)
    delay_s: float = 1.0
    tau_s: float = 1.0
    bytes_per_request: float = 200e3

    @classmethod
    def from_config(cls, raw, key: str) -> InferenceSpec:
        raw, d = cfg_map(raw or {}, key), cls()
        return cls(cfg_float(raw, "peak_rps", key, d.peak_rps, 0.0, 1e7, "req/s"),
                   cfg_float(raw, "night_frac", key, d.night_frac, 0.0, 1.0),
                   cfg_float(raw, "capacity_rps", key, d.capacity_rps, 1e-3, 1e7, "req/s"),
                   cfg_float(raw, "surge_rate_per_h", key, d.surge_rate_per_h, 0.0, 3600.0),
                   _range(raw, "surge_gain", key, d.surge_gain, 1.0, 20.0, ""),
                   _range(raw, "surge_s", key, d.surge_s, 1.0, 86400.0, "s"),
                   cfg_float(raw, "delay_s", key, d.delay_s, 0.0, 30.0, "s"),
                   cfg_float(raw, "tau_s", key, d.tau_s, 0.0, 60.0, "s"),
                   cfg_float(raw, "bytes_per_request", key, d.bytes_per_request, 0.0, 1e9, "B"))


@dataclass(frozen=True)
class JobClass:
    """One stream of jobs (see the module docstring); ``kind`` is a JobEvent power class."""

    name: str
    kind: str
    hosts: tuple[str, ...]
    n_hosts: int
    rate_per_h: float
    diurnal: bool
    duration_s: float
    duration_sigma: float
    actual_sigma: float
    time_limit_factor: float
    util: float
    startup_s: tuple[float, float]
    startup_util: float
    at_start: int
    training: TrainingSpec | None = None
    inference: InferenceSpec | None = None

    @classmethod
    def from_config(cls, name: str, raw, key: str, hosts: Sequence[str]) -> JobClass:
        raw = cfg_map(raw, key)
        kind = raw.get("kind")
        if kind not in JOB_KINDS:
            raise SimConfigError(f"{key}.kind: {kind!r}, expected one of {JOB_KINDS}")
        pool = raw.get("hosts")
        if not isinstance(pool, list) or not pool or len(set(pool)) != len(pool):
            raise SimConfigError(f"{key}.hosts: {pool!r}, expected a list of distinct hosts")
        unknown = sorted(set(pool) - set(hosts))
        if unknown:
            raise SimConfigError(f"{key}.hosts: {unknown} are not server or storage components "
                                 f"(known: {sorted(hosts)})")
        n_hosts = int(cfg_float(raw, "n_hosts", key, 1, 1, len(pool)))
        return cls(name, kind, tuple(pool), n_hosts,
                   cfg_float(raw, "rate_per_h", key, 0.0, 0.0, 3600.0, "jobs/h"),
                   bool(raw.get("diurnal", False)),
                   cfg_float(raw, "duration_s", key, None, 1.0, 1e7, "s"),
                   cfg_float(raw, "duration_sigma", key, 0.5, 0.0, 3.0),
                   cfg_float(raw, "actual_sigma", key, 0.3, 0.0, 3.0),
                   cfg_float(raw, "time_limit_factor", key, 2.0, 1.0, 100.0),
                   cfg_float(raw, "util", key, 0.9, 0.0, 1.0),
                   _range(raw, "startup_s", key, (20.0, 60.0), 0.0, 3600.0, "s"),
                   cfg_float(raw, "startup_util", key, 0.4, 0.0, 1.0),
                   int(cfg_float(raw, "at_start", key, 0, 0, 1000)),
                   TrainingSpec.from_config(raw.get("training"), f"{key}.training")
                   if kind == "gpu-train" else None,
                   InferenceSpec.from_config(raw.get("inference"), f"{key}.inference")
                   if kind == "gpu-infer" else None)


@dataclass(frozen=True)
class SchedulerConfig:
    """The ``scheduler:`` section: job classes and ``dispatch_delay_s`` (s), the time from
    submission to the first scheduling pass that may start a job (scheduler cycle, prolog)."""

    classes: tuple[JobClass, ...]
    dispatch_delay_s: float = 30.0
    hosts: tuple[str, ...] = field(default=())

    @property
    def scheduled_hosts(self) -> frozenset[str]:
        return frozenset(h for c in self.classes for h in c.hosts)


def parse_scheduler(raw, hosts: Sequence[str]) -> SchedulerConfig | None:
    """The checked ``scheduler:`` section, or None when the config has none."""
    if raw is None:
        return None
    raw = cfg_map(raw, "scheduler")
    classes = cfg_map(raw.get("classes"), "scheduler.classes")
    if not classes:
        raise SimConfigError("scheduler.classes: empty, expected at least one job class")
    parsed = tuple(JobClass.from_config(n, v, f"scheduler.classes.{n}", hosts)
                   for n, v in classes.items())
    return SchedulerConfig(parsed, cfg_float(raw, "dispatch_delay_s", "scheduler", 30.0, 0.0,
                                             3600.0, "s"), tuple(hosts))
