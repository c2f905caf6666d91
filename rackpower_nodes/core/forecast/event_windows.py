"""Workload-event features over many steps at once: the fast twin of ``event_features``.

:func:`~rackpower_nodes.core.workload_events.event_features` is the reference: one Python row
per step. A day of 0.1 s steps is 864 000 rows, too slow for training, yet the jobs a host
sees only change at a few instants: a job's submission, its start and its end (a recorded
:class:`~rackpower_nodes.core.workload_events.JobLog`), or a new snapshot (live). Between two
such instants the job set is fixed and every feature is a closed form of the step time ``t``
(a clipped ``(t - start) / scale`` or ``(end - t) / scale``), so this module computes the rows
piecewise, with numpy inside each piece, and gets the reference's values bit for bit
(``test/core/test_event_features.py`` checks it).

Where the events come from (:func:`event_rows`), in this order:

1. a :class:`JobLog` (``ComponentSeries.events``, what a scheduler recorded): the snapshot at
   each step is ``log.events_at(t)``;
2. else a :class:`~rackpower_nodes.core.schedule.WorkloadSchedule` that names the host: its
   runs as a job log (``WorkloadSchedule.job_log``: known in advance, started and ended on
   time);
3. else the "no job" row :data:`NO_JOB_ROW` (nothing running, nothing coming).

Live (:func:`snapshot_rows`), a step at ``t`` reads the newest snapshot stamped at or before
``t``; one older than ``stale_s`` counts as unknown, the "no job" row.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import (
    EVENT_FEATURES,
    EVENT_SCALE_S,
    JobEvent,
    JobLog,
    WorkloadEvents,
)

__all__ = ["NO_JOB_ROW", "event_rows", "job_rows", "log_rows", "snapshot_rows"]

NO_JOB_ROW = (0.0, 1.0, 1.0, 1.0, 0.0, 0.0)     # no job running, none coming


def _empty(n: int) -> np.ndarray:
    out = np.empty((n, len(EVENT_FEATURES)))
    out[:] = NO_JOB_ROW
    return out


def _ascending(times) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    if len(times) > 1 and not (np.diff(times) >= 0).all():
        raise ValueError("event features: step times must be ascending")
    return times


def job_rows(jobs: Sequence[JobEvent], times) -> np.ndarray:
    """(n, 6) rows of one host's fixed job set at ascending ``times`` (Unix s), equal to the
    reference's row for each time. A running job counts from its start on."""
    times = _ascending(times)
    out = _empty(len(times))
    starts = sorted({j.start_unix for j in jobs if j.state == "running"})
    cuts = np.searchsorted(times, starts, side="left")          # first step with t >= start
    for a, b in itertools.pairwise([0, *cuts.tolist(), len(times)]):
        if a < b:
            _fill(jobs, times[a:b], out[a:b])
    return out


def _fill(jobs: Sequence[JobEvent], t: np.ndarray, out: np.ndarray) -> None:
    """The rows of ``t``, a run of steps over which the running set does not change."""
    t_first = float(t[0])
    running = [j for j in jobs if j.state == "running" and j.start_unix <= t_first]
    ids = {id(j) for j in running}      # equal jobs share their state: identity will do
    pending = [j for j in jobs if id(j) not in ids and math.isfinite(j.start_unix)]
    out[:, 0] = min(sum(j.expected_util for j in running), 1.0)
    if running:
        newest = max(running, key=lambda j: j.start_unix)
        age = np.minimum((t - newest.start_unix) / EVENT_SCALE_S, 1.0)
        out[:, 1] = np.maximum(age, 0.0)
        end = min(j.end_unix for j in running)
        out[:, 2] = np.minimum(np.maximum(end - t, 0.0) / EVENT_SCALE_S, 1.0)
    if pending:
        nxt = min(pending, key=lambda j: (j.start_unix, -j.expected_util))
        wait = np.maximum(nxt.start_unix - t, 0.0)
        near = wait <= EVENT_SCALE_S
        out[:, 3] = np.minimum(wait / EVENT_SCALE_S, 1.0)
        out[:, 4] = np.where(near, nxt.expected_util, 0.0)
        out[:, 5] = near & nxt.power_class.startswith("gpu")


def log_rows(log: JobLog, host: str, times) -> np.ndarray:
    """(n, 6) features of ``host`` at ascending ``times``, equal to
    ``event_features(log.events_at, host, times)``: piecewise between the instants where one
    of the host's jobs is submitted, starts or ends."""
    times = _ascending(times)
    if not len(times):
        return _empty(0)
    lo, hi = float(times[0]), float(times[-1])
    records = [r for r in log.records if host in r.hosts and r.submit_unix <= hi
               and not (math.isfinite(r.end_unix) and r.end_unix <= lo)]
    out = _empty(len(times))
    if not records:
        return out
    instants = sorted({x for r in records for x in (r.submit_unix, r.start_unix, r.end_unix)
                       if math.isfinite(x)})
    cuts = np.searchsorted(times, instants, side="left")
    submit = np.array([r.submit_unix for r in records])
    end = np.array([r.end_unix for r in records])
    for a, b in itertools.pairwise(sorted({0, *cuts.tolist(), len(times)})):
        if a < b:
            t_first = float(times[a])
            seen = np.flatnonzero((submit <= t_first) & ~(end <= t_first))  # visible ones
            jobs = [e for e in (records[i].at(t_first) for i in seen) if e is not None]
            if jobs:
                out[a:b] = job_rows(jobs, times[a:b])
    return out


def snapshot_rows(snapshots: Sequence[WorkloadEvents], host: str, times,
                  stale_s: float) -> np.ndarray:
    """(n, 6) features of ``host`` at ascending ``times`` from live snapshots (sorted by
    stamp): each step reads the newest snapshot stamped at or before it, the "no job" row when
    there is none or it is more than ``stale_s`` s old. Equal to ``event_features`` with that
    ``snapshot_at``."""
    times = _ascending(times)
    out = _empty(len(times))
    if not snapshots or not len(times):
        return out
    stamps = np.array([s.stamp_unix for s in snapshots])
    idx = np.searchsorted(stamps, times, side="right") - 1
    known = idx >= 0
    known[known] = times[known] - stamps[idx[known]] <= stale_s
    key = np.where(known, idx, -1)
    cuts = np.flatnonzero(np.diff(key)) + 1
    for a, b in itertools.pairwise([0, *cuts.tolist(), len(times)]):
        if key[a] >= 0:
            jobs = snapshots[key[a]].for_host(host)
            if jobs:
                out[a:b] = job_rows(jobs, times[a:b])
    return out


def event_rows(host: str, times, events: JobLog | None = None,
               schedule: WorkloadSchedule | None = None) -> np.ndarray:
    """(n, 6) float64 event features of ``host`` at ascending step ``times`` (Unix s) from a
    recorded job log, else the schedule, else the "no job" row (the module docstring)."""
    times = _ascending(times)
    if events is not None:
        return log_rows(events, host, times)
    if schedule is not None and host in schedule.hosts and len(times):
        # runs starting more than EVENT_SCALE_S after the last step read as "none coming"
        log = schedule.job_log(float(times[0]), float(times[-1]) + EVENT_SCALE_S + 1.0)
        return log_rows(log, host, times)
    return _empty(len(times))
