"""The recorder, on its default topics, records `host_telemetry`'s `workload_events`, and the
bag reads back as the schedule's job history (sources/bags.job_log_from_bag)."""
from __future__ import annotations

import math
import subprocess
import time

import pytest
import yaml
from helpers.recorder import bags_in, start_recorder

from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros
NS = "/rack_wr"
DAY = 86400


def _telemetry(ros_env, tmp_path, schedule) -> subprocess.Popen:
    params = {"local_host": {"enabled": True}, "schedule": {"file": str(schedule)},
              "workload": {"rate_hz": 2.0}}
    path = tmp_path / "telemetry.yaml"
    path.write_text(yaml.safe_dump({"/**/host_telemetry": {"ros__parameters": params}}))
    return subprocess.Popen([str(executable("host_telemetry")), "--ros-args", "-r",
                             f"__ns:={NS}", "--params-file", str(path)], env=ros_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_written(count: int, timeout_s: float) -> bool:
    """Until the recorder's /diagnostics say it wrote `count` workload_events messages."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    key, written = f"messages {NS}/workload_events", [0]

    def on_diag(msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NS}/recorder"):
                written[0] = max([written[0]] + [int(kv.value) for kv in status.values
                                                 if kv.key == key])

    with rclpy.init():
        node = rclpy.create_node("workload_record_watch")
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
        end = time.monotonic() + timeout_s
        while written[0] < count and time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
    return written[0] >= count


def test_recorded_workload_events_read_back_as_the_job_history(ros_env, tmp_path):
    from rackpower_nodes.sources.bags import job_log_from_bag

    start = math.ceil(time.time() + 400)
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(yaml.safe_dump({"schedule": {"jobs": [
        {"name": "train", "hosts": ["gpu01", "gpu02"], "expected_util": 0.9,
         "duration_s": 1800, "every": {"period_s": DAY, "phase_s": start % DAY}}]}}))
    folder, log = tmp_path / "bags", tmp_path / "recorder.log"
    recorder = start_recorder(ros_env, NS, folder, log)
    telemetry = _telemetry(ros_env, tmp_path, schedule)
    try:
        assert _wait_written(3, 90), log.read_text(errors="replace")
    finally:
        stop_process(telemetry)
        stop_process(recorder)
    assert recorder.returncode == 0, log.read_text(errors="replace")
    (bag,) = bags_in(folder)
    history = job_log_from_bag(bag, namespace=NS)
    assert len(history) == 1
    (job,) = history.records
    assert (job.name, job.hosts, job.expected_start_unix, job.duration_s) == (
        "train", ("gpu01", "gpu02"), float(start), 1800.0)
    assert math.isnan(job.start_unix) and math.isnan(job.end_unix)   # still pending at the end
    assert history.events_at(job.submit_unix + 0.1).jobs[0].state == "pending"
