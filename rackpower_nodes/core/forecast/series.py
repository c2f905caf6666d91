"""The one format every training-data source produces: :class:`ComponentSeries`.

A source (the rosbag2 and CSV readers in ``rackpower_nodes.sources``, the simulator's
adapter in ``rackpower_nodes.sim.dataset``) turns its input into a list of
:class:`ComponentSeries`; the forecasting core (``features``, the forecasters) reads nothing
else. This module is numpy only, with the helpers every source shares.

One series is one component (a channel id such as ``srv01``; BSC: ``<server>/<workload>``)
over one contiguous segment of the global grid:

- ``t0_unix`` (Unix s) start of step 0, on the grid; ``step_s`` (s) the step width. Step
  ``k`` of the grid covers ``[k * step_s, (k + 1) * step_s)`` in Unix seconds
  (:func:`step_index`), so training data and the live predictor put a sample in the same step.
- ``power_w`` (n,) float32: the **mean** power (W) of each step's samples; always finite.
- ``telemetry`` (n, 6) float32: :data:`TELEMETRY` (``cpu_util`` and ``mem_used_fraction``
  0..1, then network and disk rates in bytes/s); **NaN means unknown** (no host telemetry,
  a switch, a stale host, a column a file lacks).
- ``censored`` (n,) bool or None: steps where the component was held at the allocation in
  force (pinned, throttled): their power is a lower bound of the demand, not the demand, so
  no window learns it as a target (:func:`~.features.build_windows`). None: none known.
- ``idle_w``/``max_w`` (W): the component's spec, from config or :func:`estimate_spec`;
  ``schedule``: the known :class:`~rackpower_nodes.core.schedule.WorkloadSchedule` or None;
  ``source``: where it came from (for messages); ``events``: the scheduler's recorded
  :class:`~rackpower_nodes.core.workload_events.JobLog` (pending and running jobs as known at
  each instant) or None.

A run of samples is cut into segments (:func:`split_on_gaps`) wherever consecutive samples
are more than ``max_gap_steps`` steps apart or go back in time (a source may cut more, e.g.
bags where the sensor board lost frames); steps between two close samples that got no sample
hold the previous step's mean. Nothing is ever interpolated across a gap.

Host telemetry is held from its message stamps (:func:`hold_telemetry`): a step sees the
newest message stamped in it or before it, NaN once that is older than 5 s. File layouts and
the readers: ``docs/forecast-data.md``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation.policy import PINNED_FRAC
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import JobLog

__all__ = [
    "GRID_EPS", "TELEMETRY", "TELEMETRY_MAX_AGE_S", "ComponentSeries", "DatasetError",
    "estimate_spec", "hold_indexed", "hold_telemetry", "pinned", "split_on_gaps", "step_index",
    "step_times", "telemetry_index",
]

TELEMETRY = ("cpu_util", "mem_used_fraction", "net_rx_Bps", "net_tx_Bps", "disk_read_Bps",
             "disk_write_Bps")
GRID_EPS = 1e-4                 # steps: a sample this close below a step boundary counts as after
TELEMETRY_MAX_AGE_S = 5.0


class DatasetError(ValueError):
    """Unusable input data or arguments; the message names the file, field and value."""


def step_index(t_unix, step_s: float) -> np.ndarray:
    """Global step index (int64) of each time ``t_unix`` (Unix s) on the ``step_s`` grid."""
    return np.floor(np.asarray(t_unix, dtype=np.float64) / step_s + GRID_EPS).astype(np.int64)


def step_times(first_step: int, n: int, step_s: float) -> np.ndarray:
    """Start times (Unix s) of ``n`` steps from global step ``first_step``."""
    return (int(first_step) + np.arange(n, dtype=np.int64)) * float(step_s)


@dataclass
class ComponentSeries:
    """One component, one contiguous segment on the global grid.

    ``power_w`` (n,) float32: mean power (W) per step, step ``j`` starting at
    ``t0_unix + j * step_s`` (Unix s; ``t0_unix`` lies on the grid). ``telemetry`` (n, 6)
    float32: :data:`TELEMETRY` (fraction, fraction, then bytes/s), NaN where unknown.
    ``idle_w``/``max_w``: the component's spec (W), from config or :func:`estimate_spec`.
    """

    component: str
    t0_unix: float
    step_s: float
    power_w: np.ndarray
    telemetry: np.ndarray
    idle_w: float
    max_w: float
    schedule: WorkloadSchedule | None = None
    source: str = ""
    censored: np.ndarray | None = None
    events: JobLog | None = None

    def __post_init__(self) -> None:
        where = f"series {self.component!r} ({self.source or 'no source'})"
        if not self.step_s > 0:
            raise DatasetError(f"{where}: step_s={self.step_s!r}, expected > 0 s")
        self.power_w = np.asarray(self.power_w, dtype=np.float32).reshape(-1)
        n = len(self.power_w)
        self.telemetry = np.asarray(self.telemetry, dtype=np.float32)
        if self.telemetry.shape != (n, len(TELEMETRY)):
            raise DatasetError(f"{where}: telemetry shape {self.telemetry.shape}, expected "
                               f"({n}, {len(TELEMETRY)})")
        if self.censored is not None:
            self.censored = np.asarray(self.censored, dtype=bool).reshape(-1)
            if len(self.censored) != n:
                raise DatasetError(f"{where}: censored has {len(self.censored)} steps, "
                                   f"expected {n}")
        if not np.isfinite(self.power_w).all():
            raise DatasetError(f"{where}: power_w has non-finite values")
        if not (math.isfinite(self.max_w) and self.max_w > 0 and 0 <= self.idle_w <= self.max_w):
            raise DatasetError(f"{where}: idle_w={self.idle_w!r}, max_w={self.max_w!r}, expected "
                               "0 <= idle_w <= max_w, max_w > 0 (W)")
        k = self.t0_unix / self.step_s
        if abs(k - round(k)) > 1e-3:
            raise DatasetError(f"{where}: t0_unix={self.t0_unix!r} is not on the "
                               f"{self.step_s} s grid")

    def __len__(self) -> int:
        return len(self.power_w)

    @property
    def first_step(self) -> int:
        """Global step index of step 0."""
        return round(self.t0_unix / self.step_s)

    @property
    def t_unix(self) -> np.ndarray:
        """(n,) start time of each step (Unix s)."""
        return step_times(self.first_step, len(self), self.step_s)


def split_on_gaps(t_unix, *arrays, step_s: float, max_gap_steps: float = 1.5) -> list[tuple]:
    """Cut samples into runs and resample each onto the grid by step means.

    A run ends where the next sample is more than ``max_gap_steps * step_s`` s later or not
    later at all (a back-jump). ``arrays`` are (n,) or (n, k) per sample; their means ignore
    NaN (NaN where a step has only NaN). Returns one tuple per run:
    ``(t0_unix, mean_1, mean_2, ...)`` with float64 (steps,) or (steps, k) arrays.
    """
    t = np.asarray(t_unix, dtype=np.float64).reshape(-1)
    if not step_s > 0:
        raise DatasetError(f"step_s={step_s!r}, expected > 0 s")
    arrays = [np.asarray(a) for a in arrays]
    bad = [a.shape for a in arrays if len(a) != len(t)]
    if bad:
        raise DatasetError(f"arrays of shapes {bad} do not match {len(t)} times")
    if not len(t):
        return []
    dt = np.diff(t)
    cuts = np.flatnonzero((dt > max_gap_steps * step_s) | ~(dt > 0)) + 1
    bounds = np.concatenate([[0], cuts, [len(t)]])
    bins = step_index(t, step_s)
    return [_resample(bins[a:b], [x[a:b] for x in arrays], step_s)
            for a, b in itertools.pairwise(bounds)]


def _resample(bins: np.ndarray, arrays: list[np.ndarray], step_s: float) -> tuple:
    rel = bins - bins[0]
    n = int(rel[-1]) + 1
    has = np.bincount(rel, minlength=n) > 0
    held = np.maximum.accumulate(np.where(has, np.arange(n), 0))   # empty step -> previous
    return (float(bins[0] * float(step_s)), *(_step_mean(rel, x, n)[held] for x in arrays))


def _step_mean(rel: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    flat = x.reshape(len(x), -1).astype(np.float64)
    out = np.empty((n, flat.shape[1]))
    for c in range(flat.shape[1]):
        ok = np.isfinite(flat[:, c])
        sums = np.bincount(rel, weights=np.where(ok, flat[:, c], 0.0), minlength=n)
        count = np.bincount(rel, weights=ok, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, c] = np.where(count > 0, sums / count, np.nan)
    return out.reshape((n,) + x.shape[1:])


def hold_telemetry(steps: np.ndarray, msg_t_unix, msg_values, step_s: float,
                   max_age_s: float = TELEMETRY_MAX_AGE_S) -> np.ndarray:
    """(n, 6) float32 telemetry for global ``steps``: the newest message stamped in the step
    or before it (zero-order hold), NaN when none or when it is more than ``max_age_s`` s
    (whole steps) older than the step."""
    if not len(steps):
        return np.full((0, len(TELEMETRY)), np.nan, dtype=np.float32)
    return hold_indexed(steps, *telemetry_index(msg_t_unix, msg_values, step_s), step_s,
                        max_age_s)


def telemetry_index(msg_t_unix, msg_values, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Messages (stamps in Unix s, values (m, 6)) in the order :func:`hold_telemetry` reads
    them: ``bins`` (m,) int64 global step of each, by stamp (arrival order among equal
    ones), and their ``values`` (m, 6) float32."""
    t = np.asarray(msg_t_unix, dtype=np.float64).reshape(-1)
    if not len(t):
        return np.zeros(0, np.int64), np.zeros((0, len(TELEMETRY)), np.float32)
    order = np.argsort(t, kind="stable")
    bins = step_index(t[order], step_s)
    values = np.asarray(msg_values, dtype=np.float32).reshape(len(t), -1)[order]
    return bins, values


def hold_indexed(steps: np.ndarray, bins: np.ndarray, values: np.ndarray, step_s: float,
                 max_age_s: float = TELEMETRY_MAX_AGE_S) -> np.ndarray:
    """:func:`hold_telemetry` of messages already put in order by :func:`telemetry_index`."""
    out = np.full((len(steps), len(TELEMETRY)), np.nan, dtype=np.float32)
    if not len(bins) or not len(steps):
        return out
    i = np.searchsorted(bins, steps, side="right") - 1
    max_age = math.floor(max_age_s / step_s + GRID_EPS)
    ok = (i >= 0) & (steps - bins[np.maximum(i, 0)] <= max_age)
    out[ok] = values[i[ok]]
    return out


def pinned(power_w, in_force_w) -> np.ndarray:
    """Samples held at the allocation in force (within 1 - PINNED_FRAC of it, either side):
    throttled, so their power is a lower bound of the demand. NaN allocation: not known."""
    power = np.asarray(power_w, dtype=np.float64)
    ref = np.asarray(in_force_w, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.abs(power - ref) <= (1.0 - PINNED_FRAC) * ref


def estimate_spec(power_w: np.ndarray) -> tuple[float, float]:
    """(idle_w, max_w) estimated from observed power (W): its 2nd and 99.9th percentiles."""
    p = np.asarray(power_w, dtype=np.float64)
    p = p[np.isfinite(p)]
    if not len(p):
        raise DatasetError("no finite power values to estimate idle_w/max_w from")
    idle, top = np.percentile(p, [2.0, 99.9])
    return float(max(idle, 0.0)), float(max(top, idle, 1e-3))

