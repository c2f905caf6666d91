"""The simulator's batch scheduler: hosts free before a start, expected starts from what is
known, the recorded JobLog, and the run's events carried into the series."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sim.rack_model import SimConfigError
from rackpower_nodes.sim.rack_sim import SimData, generate
from rackpower_nodes.sim.scheduler import BatchScheduler, parse_scheduler

HOSTS = ["h1", "h2", "h3", "h4"]


def _sched(actual_sigma: float = 0.3, rate: float = 12.0, seed: int = 3) -> BatchScheduler:
    raw = {"dispatch_delay_s": 20, "classes": {
        "big": {"kind": "cpu", "hosts": HOSTS, "n_hosts": 3, "rate_per_h": rate / 3,
                "duration_s": 900, "actual_sigma": actual_sigma, "at_start": 1},
        "small": {"kind": "cpu", "hosts": HOSTS, "n_hosts": 1, "rate_per_h": rate,
                  "duration_s": 600, "actual_sigma": actual_sigma}}}
    return BatchScheduler(parse_scheduler(raw, HOSTS), np.random.SeedSequence(seed), 0.0)


def test_jobs_start_only_on_free_hosts_after_the_dispatch_delay():
    sched = _sched()
    sched.advance_to(6 * 3600.0)
    started = [j for j in sched.jobs if math.isfinite(j.start_s)]
    assert len(started) > 40
    for job in started:
        assert job.start_s >= job.submit_s + 20.0 - 1e-9
        assert len(job.hosts) == job.cls.n_hosts
    for host in HOSTS:
        jobs = sorted(sched.by_host[host], key=lambda j: j.start_s)
        for before, after in zip(jobs, jobs[1:], strict=False):
            assert after.start_s >= before.end_s - 1e-9, (host, before.job_id, after.job_id)
    waited = [j for j in started if j.start_s > j.submit_s + 60.0]
    assert waited, "some jobs must queue behind busy hosts (pending visibly ahead)"


def test_expected_start_ignores_actual_durations():
    """Changing the running jobs' actual ends (unknown to the scheduler) changes nothing."""
    sched = _sched()
    sched.advance_to(2 * 3600.0)
    assert sched.running
    other = copy.deepcopy(sched)
    for job in other.running:
        job.end_s = job.actual_dur_s = job.end_s + 5000.0
    probe = copy.deepcopy(sched.jobs[-1])
    now = sched.now_s
    assert sched._expected_start(probe, now) == other._expected_start(probe, now)


def test_exact_durations_make_expected_starts_come_true():
    sched = _sched(actual_sigma=0.0)
    sched.advance_to(4 * 3600.0)
    started = [j for j in sched.jobs if math.isfinite(j.start_s)]
    assert len(started) > 20
    # the announcement ignores backfill: a job may start earlier than announced, never later
    assert all(j.start_s <= j.expected_start_s + 1e-6 for j in started)
    exact = [j for j in started if abs(j.start_s - j.expected_start_s) < 1e-6]
    assert len(exact) >= len(started) // 3
    assert any(j.start_s > j.eligible_s + 60.0 for j in exact)


def test_job_log_shows_pending_jobs_before_their_start():
    sched = _sched()
    sched.advance_to(3 * 3600.0)
    log = sched.job_log(3 * 3600.0)
    waited = next(r for r in log.records
                  if math.isfinite(r.start_unix) and r.start_unix - r.submit_unix > 60.0)
    snap = log.events_at(waited.start_unix - 30.0)
    seen = [j for j in snap.jobs if j.job_id == waited.job_id]
    assert seen and seen[0].state == "pending"
    assert seen[0].start_unix == waited.expected_start_unix
    assert log.events_at(waited.start_unix + 1.0).for_host(waited.hosts[0])


def test_bad_class_names_its_key():
    with pytest.raises(SimConfigError, match=r"scheduler.classes.x.hosts: \['nope'\]"):
        parse_scheduler({"classes": {"x": {"kind": "cpu", "hosts": ["nope"],
                                           "duration_s": 60}}}, HOSTS)
    with pytest.raises(SimConfigError, match="scheduler.classes.x.kind"):
        parse_scheduler({"classes": {"x": {"kind": "gpu", "hosts": HOSTS,
                                           "duration_s": 60}}}, HOSTS)


def test_ai_run_carries_its_job_log_through_files_and_series(tmp_path):
    data = generate(600 / 3600, seed=2, preset="ai")
    assert data.events is not None and len(data.events) >= 2
    loaded = SimData.load(data.save(tmp_path))
    for a, b in zip(loaded.events.records, data.events.records, strict=True):
        assert (a.job_id, a.hosts, a.submit_unix) == (b.job_id, b.hosts, b.submit_unix)
        assert a.end_unix == b.end_unix or (math.isnan(a.end_unix) and math.isnan(b.end_unix))
    assert "app_requests_per_s" in loaded.telemetry
    series = from_sim(loaded, step_s=0.1)
    assert all(s.events is not None and len(s.events) == len(data.events) for s in series)
