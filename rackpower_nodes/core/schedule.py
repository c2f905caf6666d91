"""Workload schedule: named batch jobs on named hosts, recurring daily or every N seconds.

Pure module (no ROS). The rack simulator uses it to raise host utilisation during job windows;
the host-telemetry node uses it to publish minutes-to-next-job and the job's expected size; as a
workload-events source it gives the snapshot a scheduler would publish (:meth:`events_at`) and
the job history of a window (:meth:`job_log`), both known in advance. All read the ``schedule``
section of ``config/rack_sim.yaml``::

    schedule:
      tz_offset_h: 0            # local time = UTC + offset (h); daily jobs use local time
      jobs:
        - name: etl-nightly
          hosts: [srv07, srv08]
          expected_util: 0.85   # host CPU utilisation while the job runs, 0..1
          duration_s: 5400
          daily: {at: "01:00", weekdays: [mon, tue, wed, thu, fri]}   # weekdays optional
        - name: index-rebuild
          hosts: [srv05]
          expected_util: 0.7
          duration_s: 600
          every: {period_s: 14400, phase_s: 1800}   # starts at Unix time phase + k * period

Every time is Unix seconds (UTC). A ``daily`` job starts at ``at`` local time on the listed
weekdays (weekday of the local start date, default all seven). An ``every`` job starts at
``phase_s + k * period_s`` for every integer k, counted from the Unix epoch. Occurrences of one
job may overlap when ``duration_s`` exceeds the spacing of its starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rackpower_nodes.core.workload_events import JobEvent, JobLog, JobRecord, WorkloadEvents

__all__ = ["WEEKDAYS", "Job", "Occurrence", "Recurrence", "ScheduleError", "WorkloadSchedule"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_S = 86400
_EPOCH_WEEKDAY = 3          # 1970-01-01 was a Thursday (mon = 0)


class ScheduleError(ValueError):
    """Invalid schedule configuration; the message names the key, the value and the rule."""


@dataclass(frozen=True)
class Recurrence:
    """When a job starts: ``kind`` "daily" (``at_s`` after local midnight on ``weekdays``,
    0 = Monday) or "every" (``phase_s + k * period_s``, s since the Unix epoch)."""

    kind: str
    at_s: float = 0.0
    weekdays: frozenset[int] = frozenset(range(7))
    period_s: float = DAY_S
    phase_s: float = 0.0

    def starts(self, t0: float, t1: float, tz_offset_s: float) -> list[float]:
        """Start times (Unix s) in ``[t0, t1)``, ascending."""
        if t1 <= t0:
            return []
        if self.kind == "every":
            k0 = math.ceil((t0 - self.phase_s) / self.period_s)
            k1 = math.ceil((t1 - self.phase_s) / self.period_s)
            return [self.phase_s + k * self.period_s for k in range(k0, k1)]
        first_day = math.floor((t0 + tz_offset_s - self.at_s) / DAY_S)
        last_day = math.floor((t1 + tz_offset_s - self.at_s) / DAY_S)
        out = []
        for day in range(first_day, last_day + 1):
            start = day * DAY_S + self.at_s - tz_offset_s
            if t0 <= start < t1 and (day + _EPOCH_WEEKDAY) % 7 in self.weekdays:
                out.append(float(start))
        return out

    def next_start(self, t: float, tz_offset_s: float) -> float:
        """The first start at or after ``t`` (Unix s)."""
        if self.kind == "every":
            return self.phase_s + math.ceil((t - self.phase_s) / self.period_s) * self.period_s
        found = self.starts(t, t + 8 * DAY_S, tz_offset_s)
        return found[0]


@dataclass(frozen=True)
class Job:
    """A batch job: while it runs each of ``hosts`` is at least ``expected_util`` busy (0..1)."""

    name: str
    hosts: tuple[str, ...]
    expected_util: float
    duration_s: float
    recurrence: Recurrence


@dataclass(frozen=True)
class Occurrence:
    """One run of ``job`` from ``start`` to ``end`` (Unix s)."""

    job: Job
    start: float
    end: float


class WorkloadSchedule:
    """The jobs of one rack, with the UTC offset (s) that daily start times refer to."""

    def __init__(self, jobs: Iterable[Job] = (), tz_offset_s: float = 0.0):
        self.jobs = tuple(jobs)
        self.tz_offset_s = float(tz_offset_s)
        names = [job.name for job in self.jobs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ScheduleError(f"schedule.jobs: duplicate job names {duplicates}")

    @classmethod
    def from_config(cls, mapping: Mapping | None) -> WorkloadSchedule:
        """Parse the ``schedule`` section, or a whole config mapping that contains one.

        ``tz_offset_h`` is read from the section, else from the top level, else 0. A
        ``schedule`` that is a plain list is taken as the list of jobs.
        """
        mapping = mapping or {}
        if not isinstance(mapping, Mapping):
            raise ScheduleError(f"schedule: {mapping!r} is not a mapping")
        section = (mapping["schedule"] or {}) if "schedule" in mapping else mapping
        if isinstance(section, list):               # `schedule:` given as the job list
            section = {"jobs": section}
        if not isinstance(section, Mapping):
            raise ScheduleError(f"schedule: {section!r} is not a mapping")
        tz_h = section.get("tz_offset_h", mapping.get("tz_offset_h", 0.0))
        tz_h = _number(tz_h, "schedule.tz_offset_h", -14.0, 14.0)
        raw_jobs = section.get("jobs") or []
        if not isinstance(raw_jobs, list):
            raise ScheduleError(f"schedule.jobs: {raw_jobs!r} is not a list")
        jobs = [_parse_job(raw, f"schedule.jobs[{i}]") for i, raw in enumerate(raw_jobs)]
        return cls(jobs, tz_h * 3600.0)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> WorkloadSchedule:
        """Parse the ``schedule`` section of a YAML file (e.g. ``config/rack_sim.yaml``)."""
        import yaml

        with open(path) as fh:
            try:
                data = yaml.safe_load(fh)
            except yaml.YAMLError as exc:
                raise ScheduleError(f"schedule file {path}: not valid YAML ({exc})") from exc
        return cls.from_config(data)

    @property
    def hosts(self) -> frozenset[str]:
        """Every host named by some job."""
        return frozenset(h for job in self.jobs for h in job.hosts)

    def jobs_for(self, host: str) -> tuple[Job, ...]:
        """The jobs that run on ``host``, in configuration order."""
        return tuple(job for job in self.jobs if host in job.hosts)

    def occurrences(self, host: str, t0: float, t1: float) -> list[Occurrence]:
        """Runs on ``host`` that overlap ``[t0, t1)`` (Unix s), sorted by start time."""
        out = []
        for job in self.jobs_for(host):
            for start in job.recurrence.starts(t0 - job.duration_s, t1, self.tz_offset_s):
                end = start + job.duration_s
                if end > t0:
                    out.append(Occurrence(job, start, end))
        out.sort(key=lambda occ: occ.start)
        return out

    def all_occurrences(self, t0: float, t1: float) -> list[Occurrence]:
        """Runs of every job (each on all its hosts) that overlap ``[t0, t1)`` (Unix s), sorted
        by start time, then configuration order."""
        out = []
        for job in self.jobs:
            for start in job.recurrence.starts(t0 - job.duration_s, t1, self.tz_offset_s):
                if start + job.duration_s > t0:
                    out.append(Occurrence(job, start, start + job.duration_s))
        out.sort(key=lambda occ: occ.start)
        return out

    def job_log(self, t0_unix: float, t1_unix: float) -> JobLog:
        """Every run whose window touches ``[t0_unix, t1_unix)`` as a :class:`JobLog`.

        A static schedule is known in advance, so each run is visible from ``t0_unix``
        (``submit_unix``), announced at its real start, and ends at start + duration; job ids
        are ``<name>@<start Unix s>``; power class unknown (``""``).
        """
        return JobLog(JobRecord(_occurrence_id(occ), occ.job.name, occ.job.hosts,
                                float(t0_unix), occ.start, occ.start, occ.end,
                                occ.job.duration_s, occ.job.expected_util, "")
                      for occ in self.all_occurrences(t0_unix, t1_unix))

    def events_at(self, t_unix: float, lookahead_s: float = 3600.0) -> WorkloadEvents:
        """The snapshot at ``t_unix``: runs in progress (``"running"``, start <= t < end) and
        runs starting within ``lookahead_s`` (``"pending"``, t < start < t + lookahead), source
        ``"schedule"``; job ids as in :meth:`job_log`."""
        if not (math.isfinite(lookahead_s) and lookahead_s >= 0):
            raise ScheduleError(f"events_at: lookahead_s={lookahead_s!r}, expected >= 0 s")
        jobs = [JobEvent(_occurrence_id(occ), occ.job.name, occ.job.hosts,
                         "running" if occ.start <= t_unix else "pending", occ.start,
                         occ.job.duration_s, occ.job.expected_util, "")
                for occ in self.all_occurrences(t_unix, max(t_unix + lookahead_s,
                                                            math.nextafter(t_unix, math.inf)))]
        return WorkloadEvents(float(t_unix), tuple(jobs), "schedule")

    def jobs_active(self, host: str, t_unix: float) -> list[Job]:
        """Jobs running on ``host`` at ``t_unix`` (start <= t < start + duration)."""
        active = self.occurrences(host, t_unix, t_unix + 1e-6)
        seen: list[Job] = []
        for occ in active:
            if occ.start <= t_unix and occ.job not in seen:
                seen.append(occ.job)
        return seen

    def next_job(self, host: str, t_unix: float) -> tuple[float, Job] | None:
        """``(seconds until it starts, job)`` for the next start at or after ``t_unix`` on
        ``host``; ties go to the job configured first. None when no job runs on ``host``."""
        best: tuple[float, Job] | None = None
        for job in self.jobs_for(host):
            wait = job.recurrence.next_start(t_unix, self.tz_offset_s) - t_unix
            if best is None or wait < best[0]:
                best = (wait, job)
        return best


def _occurrence_id(occ: Occurrence) -> str:
    start = int(occ.start) if float(occ.start).is_integer() else occ.start
    return f"{occ.job.name}@{start}"


def _number(value, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScheduleError(f"{key}: {value!r} is not a finite number")
    if not low <= value <= high:
        raise ScheduleError(f"{key}: {value!r} outside [{low}, {high}]")
    return float(value)


def _parse_job(raw, key: str) -> Job:
    if not isinstance(raw, Mapping):
        raise ScheduleError(f"{key}: {raw!r} is not a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"{key}.name: {name!r} is not a non-empty string")
    hosts = raw.get("hosts")
    if (not isinstance(hosts, list) or not hosts
            or not all(isinstance(h, str) and h for h in hosts)):
        raise ScheduleError(f"{key}.hosts: {hosts!r} is not a non-empty list of host names")
    util = _number(raw.get("expected_util"), f"{key}.expected_util", 0.0, 1.0)
    duration = _number(raw.get("duration_s"), f"{key}.duration_s", 1e-3, 7 * DAY_S)
    kinds = [k for k in ("daily", "every") if k in raw]
    if len(kinds) != 1:
        raise ScheduleError(f"{key}: has {kinds or 'neither'}, expected exactly one of "
                            "'daily' or 'every'")
    recurrence = (_parse_daily(raw["daily"], f"{key}.daily") if kinds[0] == "daily"
                  else _parse_every(raw["every"], f"{key}.every"))
    return Job(name, tuple(hosts), util, duration, recurrence)


def _parse_daily(raw, key: str) -> Recurrence:
    if not isinstance(raw, Mapping):
        raise ScheduleError(f"{key}: {raw!r} is not a mapping with 'at' (HH:MM)")
    at = raw.get("at")
    parts = at.split(":") if isinstance(at, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ScheduleError(f"{key}.at: {at!r} is not a time 'HH:MM'")
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59:
        raise ScheduleError(f"{key}.at: {at!r} is not a time between 00:00 and 23:59")
    days = raw.get("weekdays", list(WEEKDAYS))
    if (not isinstance(days, list) or not days
            or not all(isinstance(d, str) and d.lower() in WEEKDAYS for d in days)):
        raise ScheduleError(f"{key}.weekdays: {days!r} is not a non-empty list of {WEEKDAYS}")
    weekdays = frozenset(WEEKDAYS.index(d.lower()) for d in days)
    return Recurrence("daily", at_s=hour * 3600.0 + minute * 60.0, weekdays=weekdays)


def _parse_every(raw, key: str) -> Recurrence:
    if not isinstance(raw, Mapping):
        raise ScheduleError(f"{key}: {raw!r} is not a mapping with 'period_s'")
    period = _number(raw.get("period_s"), f"{key}.period_s", 1.0, 366.0 * DAY_S)
    phase = _number(raw.get("phase_s", 0.0), f"{key}.phase_s", 0.0, period)
    return Recurrence("every", period_s=period, phase_s=phase)
