"""Workload-event features: the piecewise fast path equals the per-step reference, in training
windows (job log, schedule) and live (snapshots, staleness), and an old model fails to load."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.series import SMALL, T0, component_series

from rackpower_nodes.core.forecast.event_windows import (
    NO_JOB_ROW,
    event_rows,
    job_rows,
    log_rows,
    snapshot_rows,
)
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows, feature_names
from rackpower_nodes.core.forecast.online import OnlineWindows
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import (
    EVENT_FEATURES,
    JobEvent,
    JobLog,
    JobRecord,
    WorkloadEvents,
    event_features,
)

NAN = float("nan")


def random_log(seed: int, span_s: float, hosts=("a", "b"), jobs: int = 40) -> JobLog:
    """Jobs on random hosts: submitted, announced (sometimes with no expected start, sometimes
    late or early), started or never, ended or still running; some share start instants."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(jobs):
        submit = T0 + float(np.round(rng.uniform(-30, span_s), 1))
        expected = submit + float(rng.choice([5.0, 20.0, 59.9, 60.0, 90.0, 400.0]))
        start = expected + float(rng.choice([0.0, 0.0, 3.3, -2.0]))
        duration = float(rng.choice([2.0, 30.0, 61.0, 300.0]))
        end = start + duration + float(rng.choice([0.0, 5.0, -1.0]))
        if k % 7 == 3:
            start, end = NAN, NAN                              # still pending
        elif k % 11 == 5:
            end = NAN                                          # still running
        if k % 9 == 4:
            expected = NAN                                     # no announced start
        if k % 13 == 6:
            submit, start, expected = T0 + 10.0, T0 + 12.0, T0 + 12.0  # same instants
        where = tuple(h for h in hosts if rng.random() < 0.6) or hosts[:1]
        records.append(JobRecord(f"j{k}", f"job{k}", where, submit, expected, start, end,
                                 duration, float(rng.choice([0.2, 0.5, 0.9, 1.0])),
                                 str(rng.choice(["", "cpu", "gpu-train", "gpu-infer"]))))
    return JobLog(records)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("host", ["a", "b", "c"])
def test_log_rows_equal_the_reference(seed, host):
    log = random_log(seed, 600.0)
    times = T0 - 40.0 + np.arange(7000) * 0.1
    fast = log_rows(log, host, times)
    ref = event_features(log.events_at, host, times)
    np.testing.assert_array_equal(fast, ref)
    if host != "c":
        assert (fast[:, 0] > 0).any() and (fast[:, 3] < 1).any() and (fast[:, 5] > 0).any()


def test_job_rows_count_a_running_job_only_from_its_start():
    jobs = [JobEvent("r", "r", ("a",), "running", T0 + 1.0, 10.0, 0.6, "gpu-train"),
            JobEvent("p", "p", ("a",), "pending", T0 + 5.0, 10.0, 0.4, "cpu")]
    times = T0 + np.arange(100) * 0.1
    np.testing.assert_array_equal(job_rows(jobs, times),
                                  event_features(lambda t: WorkloadEvents(t, jobs), "a", times))


def test_snapshot_rows_read_the_newest_snapshot_and_go_stale():
    log = random_log(4, 120.0, hosts=("a",), jobs=15)
    snaps = [log.events_at(T0 + s) for s in (0.0, 7.5, 20.0, 21.0, 90.0)]
    times = T0 - 5.0 + np.arange(1400) * 0.1

    def snapshot_at(t):
        known = [s for s in snaps if s.stamp_unix <= t]
        return known[-1] if known and t - known[-1].stamp_unix <= 30.0 else None

    rows = snapshot_rows(snaps, "a", times, stale_s=30.0)
    np.testing.assert_array_equal(rows, event_features(snapshot_at, "a", times))
    stale = (times > T0 + 51.0) & (times < T0 + 90.0)
    np.testing.assert_array_equal(rows[stale], np.tile(NO_JOB_ROW, (stale.sum(), 1)))
    np.testing.assert_array_equal(rows[times < T0], np.tile(NO_JOB_ROW, ((times < T0).sum(), 1)))


def test_schedule_rows_announce_a_run_and_follow_it():
    schedule = WorkloadSchedule.from_config({"schedule": {"jobs": [
        {"name": "idx", "hosts": ["srv01"], "expected_util": 0.7, "duration_s": 30.0,
         "every": {"period_s": 3600, "phase_s": 120.0}}]}})
    hour = 1709510400.0                                   # on the hour
    times = hour + np.arange(2000) * 0.1
    rows = event_rows("srv01", times, schedule=schedule)
    np.testing.assert_array_equal(rows, event_features(schedule.events_at, "srv01", times))
    col = {n: i for i, n in enumerate(EVENT_FEATURES)}
    t = times - hour
    np.testing.assert_allclose(rows[:, col["ev_next_in"]],
                               np.where(t < 120, np.minimum((120 - t) / 60, 1), 1), atol=1e-9)
    running = (t >= 120) & (t < 150)
    np.testing.assert_array_equal(rows[:, col["ev_run_util"]], np.where(running, 0.7, 0.0))
    np.testing.assert_array_equal(rows[:, col["ev_next_util"]],
                                  np.where((t >= 60) & (t < 120), 0.7, 0.0))
    assert (event_rows("srv02", times, schedule=schedule) == NO_JOB_ROW).all()
    assert (event_rows("srv01", times) == NO_JOB_ROW).all()


def test_windows_carry_the_event_features_of_the_series_log():
    log = random_log(5, 20.0, hosts=("srv01",), jobs=8)
    series = component_series(np.full(300, 90.0))
    series.events = log
    ws = build_windows([series], SMALL)
    cols = [ws.feature_names.index(n) for n in EVENT_FEATURES]
    times = series.t_unix
    ref = event_features(log.events_at, "srv01", times).astype(np.float32)
    ends = np.round((ws.t_unix - T0) / 0.1).astype(int)
    for w, end in zip(ws.x, ends, strict=True):
        np.testing.assert_array_equal(w[:, cols], ref[end - SMALL.history_steps + 1:end + 1])
    assert ws.feature_names == feature_names(SMALL)
    assert "job_next_in_h" not in ws.feature_names


def test_online_windows_from_snapshots_match_training_from_the_log():
    log = random_log(6, 30.0, hosts=("srv01",), jobs=10)
    spec = WindowSpec(0.1, 10, 5, (3,))
    power = 60.0 + 40.0 * np.sin(np.arange(600) / 30.0)
    series = component_series(power)
    series.events = log
    ws = build_windows([series], spec)
    online = OnlineWindows(spec, ["srv01"], [50.0], [200.0], stale_s=0.5)
    checked = 0
    for k in range(600):
        t = float(series.t_unix[k])
        online.push_workload_events(log.events_at(t))     # a snapshot at every step start
        online.push_power(t + 0.05, "srv01", power[k])
        x, _, ready, _ = online.window(t + 0.1)
        if ready[0] and k >= 1:
            row = np.flatnonzero(np.abs(ws.t_unix - (t - 0.1)) < 1e-3)
            if len(row):
                np.testing.assert_allclose(x[0], ws.x[row[0]], atol=1e-6, err_msg=f"step {k}")
                checked += 1
    assert checked > 500


def test_online_snapshots_go_stale_and_replace_the_schedule():
    schedule = WorkloadSchedule.from_config({"schedule": {"jobs": [
        {"name": "idx", "hosts": ["a"], "expected_util": 0.7, "duration_s": 300.0,
         "every": {"period_s": 3600, "phase_s": 0.0}}]}})
    hour = 1709510400.0
    spec = WindowSpec(0.1, 5, 5, (2,))
    online = OnlineWindows(spec, ["a"], [10.0], [100.0], schedule, events_stale_s=2.55)
    col = feature_names(spec).index("ev_run_util")
    for k in range(20):
        online.push_power(hour + 10.0 + k * 0.1, "a", 50.0)
    assert online.window(hour + 12.0)[0][0, -1, col] == pytest.approx(0.7)   # the schedule
    snap = WorkloadEvents(hour + 11.0, (JobEvent("j", "j", ("a",), "running", hour, 600.0, 0.3),))
    online.push_workload_events(snap)
    for k in range(20, 40):
        online.push_power(hour + 10.0 + k * 0.1, "a", 50.0)
    x = online.window(hour + 14.0)[0][0]              # steps 13.4 .. 13.8 s
    np.testing.assert_allclose(x[:, col], [0.3, 0.3, 0.0, 0.0, 0.0])  # snapshot > 2.55 s old
    with pytest.raises(ValueError, match="WorkloadEvents"):
        online.push_workload_events({"stamp_unix": hour})
