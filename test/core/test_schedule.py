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
