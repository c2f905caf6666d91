"""Workload schedule: parsing, active jobs, next job, errors."""
from __future__ import annotations

import datetime as dt

import pytest
import yaml
from helpers import REPO

from rackpower_nodes.core.schedule import ScheduleError, WorkloadSchedule

MONDAY = dt.datetime(2024, 3, 4, tzinfo=dt.UTC).timestamp()     # 2024-03-04 00:00 UTC
HOUR = 3600.0


def _schedule(tz_offset_h: float = 0.0) -> WorkloadSchedule:
    return WorkloadSchedule.from_config({"schedule": {"tz_offset_h": tz_offset_h, "jobs": [
        {"name": "etl", "hosts": ["a", "b"], "expected_util": 0.8, "duration_s": 5400,
         "daily": {"at": "01:00", "weekdays": ["mon", "tue", "wed", "thu", "fri"]}},
        {"name": "backup", "hosts": ["b"], "expected_util": 0.6, "duration_s": 7200,
         "daily": {"at": "23:00"}},
        {"name": "index", "hosts": ["c"], "expected_util": 0.5, "duration_s": 600,
         "every": {"period_s": 14400, "phase_s": 1800}},
    ]}})


def test_daily_job_active_only_in_its_window():
    s = _schedule()
    assert [j.name for j in s.jobs_active("a", MONDAY + 1.5 * HOUR)] == ["etl"]
    assert s.jobs_active("a", MONDAY + 0.99 * HOUR) == []
    assert s.jobs_active("a", MONDAY + 2.5 * HOUR) == []       # ends at 02:30, exclusive
    assert s.jobs_active("x", MONDAY + 1.5 * HOUR) == []


def test_weekdays_are_respected():
    s = _schedule()
    saturday = MONDAY + 5 * 24 * HOUR
    assert s.jobs_active("a", saturday + 1.5 * HOUR) == []
    assert [j.name for j in s.jobs_active("a", saturday + 2 * 24 * HOUR + 1.5 * HOUR)] == ["etl"]


def test_job_running_past_midnight_is_active_next_day():
    s = _schedule()
    names = {j.name for j in s.jobs_active("b", MONDAY + 24 * HOUR + 0.5 * HOUR)}
    assert names == {"backup"}


def test_tz_offset_shifts_daily_jobs():
    s = _schedule(tz_offset_h=2.0)           # 01:00 local = 23:00 UTC the day before
    assert [j.name for j in s.jobs_active("a", MONDAY + 23.5 * HOUR)] == ["etl"]
    assert s.jobs_active("a", MONDAY + 1.5 * HOUR) == []


def test_every_job_uses_period_and_phase():
    s = _schedule()
    starts = [o.start - MONDAY for o in s.occurrences("c", MONDAY, MONDAY + 24 * HOUR)]
    assert starts == [1800.0 + k * 14400.0 for k in range(6)]
    assert s.jobs_active("c", MONDAY + 1800.0 + 599.0)[0].name == "index"
    assert s.jobs_active("c", MONDAY + 1800.0 + 600.0) == []


def test_next_job_gives_wait_and_job():
    s = _schedule()
    wait, job = s.next_job("a", MONDAY)
    assert (wait, job.name, job.expected_util, job.duration_s) == (HOUR, "etl", 0.8, 5400.0)
    friday_after = MONDAY + 4 * 24 * HOUR + 3 * HOUR     # next etl is Monday 01:00
    wait, job = s.next_job("a", friday_after)
    assert wait == pytest.approx(3 * 24 * HOUR - 2 * HOUR)
    wait, job = s.next_job("b", MONDAY + 2 * HOUR)       # backup at 23:00 comes before etl
    assert (wait, job.name) == (21 * HOUR, "backup")
    assert s.next_job("c", MONDAY + 1800.0)[0] == 0.0
    assert s.next_job("nobody", MONDAY) is None


def test_repository_config_parses():
    raw = yaml.safe_load((REPO / "config" / "rack_sim.yaml").read_text())
    s = WorkloadSchedule.from_config(raw)
    assert len(s.jobs) >= 3
    assert all(0.0 <= j.expected_util <= 1.0 for j in s.jobs)
    assert WorkloadSchedule.from_config(raw["schedule"]).jobs == s.jobs
    assert WorkloadSchedule.from_config(None).jobs == ()


def test_from_file_and_list_form(tmp_path):
    s = WorkloadSchedule.from_file(REPO / "config" / "rack_sim.yaml")
    assert "etl-nightly" in [j.name for j in s.jobs]
    path = tmp_path / "jobs.yaml"
    path.write_text("tz_offset_h: 1\nschedule:\n  - {name: j, hosts: [h], expected_util: 0.5,"
                    " duration_s: 60, daily: {at: '01:00'}}\n")
    listed = WorkloadSchedule.from_file(path)
    assert listed.tz_offset_s == 3600.0 and listed.jobs[0].hosts == ("h",)
    assert listed.next_job("h", MONDAY)[0] == 0.0          # 01:00 at UTC+1 is 00:00 UTC


@pytest.mark.parametrize("job, key", [
    ({"hosts": ["a"], "expected_util": 0.5, "duration_s": 60, "daily": {"at": "01:00"}},
     "schedule.jobs[0].name"),
    ({"name": "j", "hosts": [], "expected_util": 0.5, "duration_s": 60,
      "daily": {"at": "01:00"}}, "schedule.jobs[0].hosts"),
    ({"name": "j", "hosts": ["a"], "expected_util": 1.5, "duration_s": 60,
      "daily": {"at": "01:00"}}, "schedule.jobs[0].expected_util"),
    ({"name": "j", "hosts": ["a"], "expected_util": 0.5, "duration_s": -1,
      "daily": {"at": "01:00"}}, "schedule.jobs[0].duration_s"),
    ({"name": "j", "hosts": ["a"], "expected_util": 0.5, "duration_s": 60,
      "daily": {"at": "25:00"}}, "schedule.jobs[0].daily.at"),
    ({"name": "j", "hosts": ["a"], "expected_util": 0.5, "duration_s": 60,
      "daily": {"at": "01:00", "weekdays": ["funday"]}}, "schedule.jobs[0].daily.weekdays"),
    ({"name": "j", "hosts": ["a"], "expected_util": 0.5, "duration_s": 60,
      "daily": {"at": "01:00"}, "every": {"period_s": 60}}, "schedule.jobs[0]"),
    ({"name": "j", "hosts": ["a"], "expected_util": 0.5, "duration_s": 60,
      "every": {"period_s": 0}}, "schedule.jobs[0].every.period_s"),
])
def test_malformed_job_names_the_key(job, key):
    with pytest.raises(ScheduleError) as err:
        WorkloadSchedule.from_config({"schedule": {"jobs": [job]}})
    assert str(err.value).startswith(key + ":"), err.value


def test_duplicate_job_names_rejected():
    job = {"name": "j", "hosts": ["a"], "expected_util": 0.5, "duration_s": 60,
           "every": {"period_s": 600}}
    with pytest.raises(ScheduleError, match="duplicate"):
        WorkloadSchedule.from_config({"jobs": [job, job]})


# --- the schedule as a workload-events source -----------------------------------------------

def test_job_log_holds_every_run_touching_the_window_known_from_its_start():
    s = _schedule()
    t0, t1 = MONDAY + 0.5 * HOUR, MONDAY + 2 * HOUR     # Sunday's backup (23:00-01:00) overlaps
    log = s.job_log(t0, t1)
    by_name = {r.name: r for r in log.records}
    assert sorted(by_name) == ["backup", "etl", "index"]
    etl = by_name["etl"]
    assert (etl.job_id, etl.hosts) == (f"etl@{int(MONDAY + HOUR)}", ("a", "b"))
    assert (etl.submit_unix, etl.expected_start_unix, etl.start_unix, etl.end_unix) == (
        t0, MONDAY + HOUR, MONDAY + HOUR, MONDAY + HOUR + 5400.0)
    assert (etl.duration_s, etl.expected_util, etl.power_class) == (5400.0, 0.8, "")
    backup = by_name["backup"]
    assert (backup.start_unix, backup.end_unix) == (MONDAY - HOUR, MONDAY + HOUR)
    assert by_name["index"].start_unix == MONDAY + 1800.0
    # replayed: before etl starts it is pending with its start; during it, running
    assert log.events_at(t0).for_host("a")[0].state == "pending"
    assert log.events_at(t0).for_host("a")[0].start_unix == MONDAY + HOUR
    assert log.events_at(MONDAY + 1.5 * HOUR).for_host("a")[0].state == "running"
    assert log.events_at(MONDAY + 3 * HOUR).for_host("a") == ()


def test_job_log_leaves_out_runs_outside_the_window():
    s = _schedule()
    log = s.job_log(MONDAY + 3 * HOUR, MONDAY + 4.5 * HOUR)   # 03:00-04:30: nothing runs
    assert [r.name for r in log.records] == []
    assert [r.name for r in s.job_log(MONDAY + 3 * HOUR, MONDAY + 4.6 * HOUR).records] == [
        "index"]                                            # index at 04:30 is inside


@pytest.mark.parametrize(("t_h", "lookahead_s", "expected"), [
    (0.4, 3600.0, [("backup", "running", -1.0), ("etl", "pending", 1.0),
                   ("index", "pending", 0.5)]),
    (0.4, 300.0, [("backup", "running", -1.0)]),           # index is 360 s away, etl 2160 s
    (1.0, 0.0, [("etl", "running", 1.0)]),                  # starts at t: running, not pending
    (2.6, 3600.0, []),                                      # etl ended at 02:30
])
def test_events_at_gives_running_runs_and_those_starting_within_the_lookahead(
        t_h, lookahead_s, expected):
    s = _schedule()
    t = MONDAY + t_h * HOUR
    snap = s.events_at(t, lookahead_s)
    assert (snap.stamp_unix, snap.source) == (t, "schedule")
    got = sorted((j.name, j.state, (j.start_unix - MONDAY) / HOUR) for j in snap.jobs)
    assert got == expected


def test_events_at_gives_hosts_size_and_duration_and_agrees_with_job_log():
    s = _schedule()
    t = MONDAY + 0.9 * HOUR
    snap = s.events_at(t, lookahead_s=600.0)
    etl = next(j for j in snap.jobs if j.name == "etl")
    assert (etl.hosts, etl.expected_util, etl.duration_s, etl.end_unix) == (
        ("a", "b"), 0.8, 5400.0, MONDAY + HOUR + 5400.0)
    assert [j.job_id for j in snap.for_host("b")] == [
        j.job_id for j in s.job_log(t, t + 600.0).events_at(t).for_host("b")]


def test_events_at_rejects_a_negative_lookahead():
    with pytest.raises(ScheduleError, match="lookahead_s=-1"):
        _schedule().events_at(MONDAY, -1.0)
