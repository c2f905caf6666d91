"""The simulator's batch scheduler: jobs arrive, queue, start when their hosts are free.

Event-driven in continuous time (s after the run's start) and advanced block by block
(:meth:`BatchScheduler.advance_to`), so the jobs do not depend on how time is cut. Each class
draws its arrivals and its jobs' sizes from its own generator. Scheduling is FIFO with
backfill: the first waiting job that does not fit reserves the hosts it waits for, and a later
job may start before it only on hosts outside that job's pool or if its expected end falls
before the reservation (EASY backfill). Hosts are whole: one job per host at a time.

When a job is submitted the scheduler announces its **expected start**, computed only from what
it knows then: running jobs end at their start plus their *expected* duration, and the queue
ahead starts in order on the earliest hosts. The random actual durations are never read there.
:meth:`BatchScheduler.job_log` writes the history as a
:class:`~rackpower_nodes.core.workload_events.JobLog`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rackpower_nodes.core.workload_events import JobLog, JobRecord
from rackpower_nodes.sim.scheduler.classes import JobClass, SchedulerConfig
from rackpower_nodes.sim.workload import WorkloadProfile

__all__ = ["BatchScheduler", "Job"]

_SHAPE = WorkloadProfile()


@dataclass
class Job:
    """One job: times in s after the run's start (NaN: not yet); ``params`` per-job draws
    (``iter_s``, ``checkpoint_s``, ``phase_s`` for training)."""

    job_id: str
    cls: JobClass
    submit_s: float
    eligible_s: float
    expected_dur_s: float
    actual_dur_s: float
    startup_s: float
    expected_start_s: float = math.nan
    start_s: float = math.nan
    end_s: float = math.nan
    hosts: tuple[str, ...] = ()
    planned_hosts: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    @property
    def main_start_s(self) -> float:
        """When the main phase (and its power) begins: the start plus the startup phase."""
        return self.start_s + self.startup_s


class BatchScheduler:
    """Jobs of ``cfg.classes`` on ``cfg.hosts``; ``seq`` seeds one generator per class."""

    def __init__(self, cfg: SchedulerConfig, seq: np.random.SeedSequence, start_unix: float,
                 tz_offset_s: float = 0.0):
        self.cfg, self.start_unix, self._tz = cfg, float(start_unix), float(tz_offset_s)
        self._order = {h: i for i, h in enumerate(cfg.hosts)}
        self._rngs = [np.random.default_rng(s) for s in seq.spawn(len(cfg.classes))]
        self._counts = [0] * len(cfg.classes)
        self.now_s = 0.0
        self.jobs: list[Job] = []
        self.queue: list[Job] = []
        self.running: list[Job] = []
        self.by_host: dict[str, list[Job]] = {h: [] for h in cfg.hosts}
        self._busy: dict[str, Job] = {}
        self._next_arrival = [self._draw_arrival(k, 0.0) for k in range(len(cfg.classes))]
        for k, c in enumerate(cfg.classes):
            for _ in range(c.at_start):
                self._submit(k, 0.0)
        self._dispatch(0.0)

    # -- arrivals -------------------------------------------------------------------------
    def _draw_arrival(self, k: int, after_s: float) -> float:
        """Next arrival of class k after ``after_s`` (thinning for the diurnal rate)."""
        c, rng, t = self.cfg.classes[k], self._rngs[k], after_s
        if c.rate_per_h <= 0.0:
            return math.inf
        while True:
            t += float(rng.exponential(3600.0 / c.rate_per_h))
            if not c.diurnal:
                return t
            shape = float(_SHAPE.shape(np.array([self.start_unix + t]), self._tz, 0.0)[0])
            if float(rng.random()) < 0.25 + 0.75 * shape:
                return t

    def _submit(self, k: int, t: float) -> None:
        c, rng = self.cfg.classes[k], self._rngs[k]
        self._counts[k] += 1
        expected = c.duration_s * math.exp(c.duration_sigma * float(rng.standard_normal()))
        actual = min(expected * math.exp(c.actual_sigma * float(rng.standard_normal())),
                     expected * c.time_limit_factor)
        startup = float(rng.uniform(*c.startup_s))
        params = {}
        if c.training is not None:
            params = {"iter_s": float(rng.uniform(*c.training.iter_s)),
                      "checkpoint_s": float(rng.uniform(*c.training.checkpoint_s)),
                      "phase_s": float(rng.uniform(0.0, c.training.checkpoint_every_s))}
        job = Job(f"{c.name}-{self._counts[k]}", c, t, t + self.cfg.dispatch_delay_s, expected,
                  max(actual, startup + 1.0), startup, params=params)
        job.expected_start_s, job.planned_hosts = self._expected_start(job, t)
        self.jobs.append(job)
        self.queue.append(job)

    # -- what the scheduler knows ---------------------------------------------------------
    def _expected_end(self, job: Job, now: float) -> float:
        return max(now, job.start_s + job.expected_dur_s)

    def _expected_start(self, job: Job, now: float) -> tuple[float, tuple[str, ...]]:
        """Start and hosts announced for ``job`` at ``now``: the queue ahead placed in order
        on the hosts that free first, running jobs ending at their expected end (never the
        actual)."""
        avail = {h: now for h in self.cfg.hosts}
        for r in self.running:
            for h in r.hosts:
                avail[h] = self._expected_end(r, now)
        for q in [*self.queue, job]:
            chosen = sorted(q.cls.hosts, key=lambda h: (avail[h], self._order[h]))
            chosen = chosen[:q.cls.n_hosts]
            start = max([q.eligible_s, *(avail[h] for h in chosen)])
            for h in chosen:
                avail[h] = start + q.expected_dur_s
        return start, tuple(sorted(chosen, key=self._order.get))

    def _shadow(self, job: Job, now: float) -> float:
        """When ``job``'s hosts are expected free (running jobs' expected ends)."""
        avail = sorted(self._expected_end(self._busy[h], now) if h in self._busy else now
                       for h in job.cls.hosts)
        return avail[job.cls.n_hosts - 1]

    # -- the event loop -------------------------------------------------------------------
    def advance_to(self, t_s: float) -> None:
        """Process every arrival, start and end before ``t_s`` (s)."""
        while True:
            ends = [j.end_s for j in self.running]
            waits = [j.eligible_s for j in self.queue if j.eligible_s > self.now_s]
            nxt = min([*self._next_arrival, *ends, *waits, math.inf])
            if nxt >= t_s:
                break
            self.now_s = nxt
            for j in [j for j in self.running if j.end_s <= nxt]:
                self.running.remove(j)
                for h in j.hosts:
                    del self._busy[h]
            for k, t in enumerate(self._next_arrival):
                if t <= nxt:
                    self._submit(k, t)
                    self._next_arrival[k] = self._draw_arrival(k, t)
            self._dispatch(nxt)
        self.now_s = max(self.now_s, t_s)

    def _dispatch(self, now: float) -> None:
        blocked: list[tuple[frozenset[str], float]] = []
        for job in list(self.queue):
            if job.eligible_s > now:
                continue
            free = [h for h in job.cls.hosts if h not in self._busy]
            pool = frozenset(job.cls.hosts)
            fits = len(free) >= job.cls.n_hosts
            allowed = all(not (pool & p) or now + job.expected_dur_s <= shadow
                          for p, shadow in blocked)
            if fits and allowed:
                # the announced hosts first, so the plan a pending job showed mostly holds
                ranked = sorted(free, key=lambda h: (h not in job.planned_hosts, self._order[h]))
                self._start(job, ranked[:job.cls.n_hosts], now)
            elif not fits:
                blocked.append((pool, self._shadow(job, now)))

    def _start(self, job: Job, hosts: list[str], now: float) -> None:
        job.start_s, job.end_s, job.hosts = now, now + job.actual_dur_s, tuple(hosts)
        self.queue.remove(job)
        self.running.append(job)
        for h in hosts:
            self._busy[h] = job
            self.by_host[h].append(job)

    # -- output ---------------------------------------------------------------------------
    def jobs_on(self, host: str, t0_s: float, t1_s: float) -> list[Job]:
        """Jobs that ran on ``host`` during ``[t0_s, t1_s)`` (advance past t1_s first)."""
        return [j for j in self.by_host.get(host, ())
                if j.start_s < t1_s and not j.end_s <= t0_s]

    def job_log(self, until_s: float) -> JobLog:
        """The history recorded up to ``until_s`` (s): jobs submitted by then; a start or end
        after it is NaN (not yet known). Times in Unix s. A started job's hosts are those it
        ran on; a job still pending shows the hosts announced with its expected start."""
        t0 = self.start_unix
        out = []
        for j in self.jobs:
            if j.submit_s >= until_s:
                continue
            start = j.start_s if j.start_s < until_s else math.nan
            end = j.end_s if j.end_s < until_s else math.nan
            hosts = j.hosts if math.isfinite(start) else j.planned_hosts
            out.append(JobRecord(j.job_id, j.cls.name, hosts,
                                 t0 + j.submit_s, t0 + j.expected_start_s, t0 + start,
                                 t0 + end, j.expected_dur_s, j.cls.util, j.cls.kind))
        return JobLog(out)
