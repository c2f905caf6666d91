"""Workload events: what the scheduler says will run where, and the features a forecast reads.

Pure module (no ROS, no numpy import at module level beyond what the features need). A batch
scheduler (Slurm, the simulator's own, the static schedule of ``config``) knows a job's hosts,
its expected start and duration and how big it is before its power arrives: a pending job is
visible minutes ahead, and a started job spends its first tens of seconds loading before the
power rises. This module holds that knowledge in one shape for every source:

- :class:`JobEvent`: one job as seen at one instant: ``state`` ``"pending"`` (``start_unix``
  is the scheduler's *expected* start, NaN when it gives none) or ``"running"`` (``start_unix``
  is the actual start); ``duration_s`` the expected duration (time limit or the scheduler's
  estimate, s); ``expected_util`` the size on each of its hosts (0..1 of a host); and
  ``power_class`` (``cpu``, ``gpu-train``, ``gpu-infer``, ``io``, or ``""`` unknown).
- :class:`WorkloadEvents`: a snapshot, ``stamp_unix`` (when it was taken) and its jobs; what a
  ``WorkloadEvents`` message carries and what the live predictor holds.
- :class:`JobRecord` and :class:`JobLog`: a recorded history (training data): for each job when
  it became visible, the expected start the scheduler announced, and what really happened.
  :meth:`JobLog.events_at` gives the snapshot a live source would have published at ``t``,
  never anything learnt later.

:func:`event_features` turns snapshots into per-step features for one host (names in
:data:`EVENT_FEATURES`, all 0..1): the expected utilisation of the running jobs, how long the
newest of them has run and how long until it is expected to end (both over
:data:`EVENT_SCALE_S`), and the time to the next expected start on the host with that job's size
and whether it is a GPU job.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "EVENT_FEATURES", "EVENT_SCALE_S", "POWER_CLASSES", "STATES", "JobEvent", "JobLog",
    "JobRecord", "WorkloadEvents", "WorkloadEventsError", "event_features",
]

STATES = ("pending", "running")
POWER_CLASSES = ("", "cpu", "gpu-train", "gpu-infer", "io")
EVENT_SCALE_S = 60.0
EVENT_FEATURES = ("ev_run_util", "ev_run_age", "ev_run_left", "ev_next_in", "ev_next_util",
                  "ev_next_gpu")


class WorkloadEventsError(ValueError):
    """An invalid job or snapshot; the message names the job, the field and the value."""


def _check(cond: bool, job_id: str, what: str) -> None:
    if not cond:
        raise WorkloadEventsError(f"job {job_id!r}: {what}")


@dataclass(frozen=True)
class JobEvent:
    """One job at one instant (times in Unix s, durations in s, size 0..1 per host)."""

    job_id: str
    name: str
    hosts: tuple[str, ...]
    state: str
    start_unix: float
    duration_s: float
    expected_util: float
    power_class: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", tuple(self.hosts))
        _check(bool(self.job_id), self.job_id, "empty job_id")
        _check(self.state in STATES, self.job_id, f"state={self.state!r}, expected one of "
               f"{', '.join(STATES)}")
        _check(all(isinstance(h, str) and h for h in self.hosts), self.job_id,
               f"hosts={self.hosts!r}, expected non-empty host names")
        _check(self.state == "pending" or math.isfinite(self.start_unix), self.job_id,
               f"start_unix={self.start_unix!r}: a running job needs its start")
        _check(math.isfinite(self.duration_s) and self.duration_s >= 0, self.job_id,
               f"duration_s={self.duration_s!r}, expected >= 0 s")
        _check(0.0 <= self.expected_util <= 1.0, self.job_id,
               f"expected_util={self.expected_util!r}, expected 0..1")
        _check(self.power_class in POWER_CLASSES, self.job_id,
               f"power_class={self.power_class!r}, expected one of {POWER_CLASSES}")

    @property
    def end_unix(self) -> float:
        """Expected end (Unix s): start + expected duration; NaN when the start is unknown."""
        return self.start_unix + self.duration_s


@dataclass(frozen=True)
class WorkloadEvents:
    """The jobs a scheduler reported at ``stamp_unix`` (Unix s)."""

    stamp_unix: float
    jobs: tuple[JobEvent, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "jobs", tuple(self.jobs))
        if not math.isfinite(self.stamp_unix):
            raise WorkloadEventsError(f"WorkloadEvents stamp_unix={self.stamp_unix!r}, "
                                      "expected a finite Unix time")

    def for_host(self, host: str) -> tuple[JobEvent, ...]:
        return tuple(j for j in self.jobs if host in j.hosts)


@dataclass(frozen=True)
class JobRecord:
    """One job's recorded history: visible from ``submit_unix``; ``expected_start_unix`` the
    start the scheduler announced while it was pending (NaN: none); ``start_unix`` and
    ``end_unix`` what happened (NaN: not yet / never)."""

    job_id: str
    name: str
    hosts: tuple[str, ...]
    submit_unix: float
    expected_start_unix: float
    start_unix: float
    end_unix: float
    duration_s: float
    expected_util: float
    power_class: str = ""

    def at(self, t: float) -> JobEvent | None:
        """The job as a live source saw it at ``t``, or None (not yet visible, or ended)."""
        if t < self.submit_unix or (math.isfinite(self.end_unix) and t >= self.end_unix):
            return None
        running = math.isfinite(self.start_unix) and t >= self.start_unix
        start = self.start_unix if running else self.expected_start_unix
        return JobEvent(self.job_id, self.name, self.hosts, "running" if running else "pending",
                        start, self.duration_s, self.expected_util, self.power_class)


class JobLog:
    """A recorded job history; :meth:`events_at` replays what was known at each instant."""

    def __init__(self, records: Iterable[JobRecord] = ()):
        self.records = tuple(sorted(records, key=lambda r: (r.submit_unix, r.job_id)))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def hosts(self) -> frozenset[str]:
        return frozenset(h for r in self.records for h in r.hosts)

    def events_at(self, t: float) -> WorkloadEvents:
        jobs = [e for e in (r.at(t) for r in self.records) if e is not None]
        return WorkloadEvents(t, tuple(jobs), "log")

    def for_host(self, host: str) -> JobLog:
        return JobLog(r for r in self.records if host in r.hosts)

    def to_rows(self) -> list[dict]:
        """Plain dicts (JSON-safe but for NaN), one per record, for saving with a run."""
        return [dict(vars(r), hosts=list(r.hosts)) for r in self.records]

    @classmethod
    def from_rows(cls, rows: Sequence[dict]) -> JobLog:
        return cls(JobRecord(**dict(r, hosts=tuple(r["hosts"]))) for r in rows)


def _host_row(jobs: Sequence[JobEvent], t: float) -> list[float]:
    running = [j for j in jobs if j.state == "running" and j.start_unix <= t]
    pending = [j for j in jobs if j not in running and math.isfinite(j.start_unix)]
    util = min(sum(j.expected_util for j in running), 1.0)
    if running:
        newest = max(running, key=lambda j: j.start_unix)
        age = min((t - newest.start_unix) / EVENT_SCALE_S, 1.0)
        left = min(max(min(j.end_unix for j in running) - t, 0.0) / EVENT_SCALE_S, 1.0)
    else:
        age, left = 1.0, 1.0
    if pending:
        nxt = min(pending, key=lambda j: (j.start_unix, -j.expected_util))
        wait = max(nxt.start_unix - t, 0.0)
        near = wait <= EVENT_SCALE_S
        row_next = [min(wait / EVENT_SCALE_S, 1.0), nxt.expected_util if near else 0.0,
                    float(near and nxt.power_class.startswith("gpu"))]
    else:
        row_next = [1.0, 0.0, 0.0]
    return [util, max(age, 0.0), left] + row_next


def event_features(snapshot_at: Callable[[float], WorkloadEvents | None], host: str,
                   times: np.ndarray) -> np.ndarray:
    """(n, len(EVENT_FEATURES)) float64 features of ``host`` at each of ``times`` (Unix s).

    ``snapshot_at(t)`` gives the newest snapshot known at ``t`` (e.g. :meth:`JobLog.events_at`,
    or the live predictor's latest message), None when nothing is known: then the row says
    "no job running, none coming" (utilisation 0, ages and waits at their cap).
    """
    times = np.asarray(times, dtype=np.float64)
    out = np.empty((len(times), len(EVENT_FEATURES)))
    for i, t in enumerate(times):
        snap = snapshot_at(float(t))
        out[i] = _host_row(snap.for_host(host) if snap is not None else (), float(t))
    return out
