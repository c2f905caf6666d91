"""`host_telemetry` publishes `workload_events` over DDS: the schedule's jobs before they start,
then running; Slurm's queue through a stand-in `squeue` whose failures publish nothing and show
on /diagnostics; a bad `workload.source` stops the node naming it."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time

import pytest
import yaml

from helpers.graph import leave_graph, spin_until
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros
NS = "/rack_wl"


def _params(tmp_path, **extra) -> str:
    params = {"local_host": {"enabled": True},
              "poll": {"rate_hz": 2.0, "timeout_s": 0.4}, "frame_id": "rack_wl"}
    params.update(extra)
    path = tmp_path / "telemetry.yaml"
    path.write_text(yaml.safe_dump({"/**/host_telemetry": {"ros__parameters": params}}))
    return str(path)


def _start(ros_env, params_file: str) -> subprocess.Popen:
    return subprocess.Popen([str(executable("host_telemetry")), "--ros-args", "-r",
                             f"__ns:={NS}", "--params-file", params_file], env=ros_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class _Listener:
    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rackpower.msg import WorkloadEvents

        from rackpower_nodes.nodes.common import latched_qos

        self.node = rclpy.create_node("workload_listener", namespace=NS)
        self.messages: list = []
        self.status = None                  # the newest workload_events DiagnosticStatus
        self.node.create_subscription(WorkloadEvents, "workload_events", self.messages.append,
                                      latched_qos())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NS}/host_telemetry: workload_events"):
                self.status = status

    def spin_until(self, seconds: float, cond) -> bool:
        return spin_until(self.node, cond, seconds)


@pytest.fixture
def listener(ros_env):
    import rclpy

    with rclpy.init():
        lis = _Listener()
        yield lis
        leave_graph(lis.node)


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _job(msg, name: str):
    return next((j for j in msg.jobs if j.name == name), None)


def test_the_schedule_is_published_before_its_jobs_start(ros_env, tmp_path, listener):
    now = time.time()
    soon, later = math.ceil(now + 8), math.ceil(now + 300)     # Unix s, whole seconds
    day = 86400
    schedule = tmp_path / "schedule.yaml"
    schedule.write_text(yaml.safe_dump({"schedule": {"jobs": [
        {"name": "train", "hosts": ["gpu01", "gpu02"], "expected_util": 0.9,
         "duration_s": 1800, "every": {"period_s": day, "phase_s": later % day}},
        {"name": "etl", "hosts": ["srv03"], "expected_util": 0.5, "duration_s": 600,
         "every": {"period_s": day, "phase_s": soon % day}}]}}))
    node = _start(ros_env, _params(tmp_path, schedule={"file": str(schedule)}))
    try:
        assert listener.spin_until(60, lambda: any(
            _stamp(m) >= soon for m in listener.messages)), "no snapshot after etl's start"
        assert node.poll() is None, "node died"
    finally:
        leave_graph(listener.node)              # before the node it listens to stops
        stop_process(node)
    first = listener.messages[0]
    assert first.source == "schedule" and first.header.frame_id == "rack_wl"
    train = _job(first, "train")
    assert train is not None, first
    assert (train.state, list(train.hosts), train.start_unix) == (
        "pending", ["gpu01", "gpu02"], float(later))
    assert train.duration_s == 1800 and train.expected_util == pytest.approx(0.9)
    assert _stamp(first) < later
    for msg in listener.messages:                 # etl: pending until it starts, then running
        etl = _job(msg, "etl")
        assert etl is not None and etl.start_unix == float(soon) and list(etl.hosts) == ["srv03"]
        assert etl.state == ("running" if _stamp(msg) >= soon else "pending"), msg
    assert _job(listener.messages[-1], "etl").state == "running"


# A stand-in for `squeue --json`: fails while FAIL exists (exit 1, a message on stderr), else
# prints one pending job bound to two hosts with an expected start.
SQUEUE = """
import json, os, sys
if os.path.exists(sys.argv[1]):
    sys.exit("squeue: error: Unable to contact slurm controller (connect failure)")
print(json.dumps({"jobs": [{"job_id": 42, "name": "llm-train", "job_state": "PENDING",
    "nodes": "", "required_nodes": "gpu[01-02]", "start_time": %d, "time_limit": 60,
    "node_count": 2, "comment": "power_class=gpu-train"}]}))
"""


def test_slurm_failures_publish_nothing_and_warn_until_the_queue_answers(ros_env, tmp_path,
                                                                        listener):
    fail = tmp_path / "FAIL"
    fail.write_text("")
    start = int(time.time()) + 900
    script = tmp_path / "squeue.py"
    script.write_text(SQUEUE % start)
    slurm = {"command": [sys.executable, str(script), str(fail)], "timeout_s": 5.0,
             "start_command": [sys.executable, "-c", "pass"],
             "nodes_command": [sys.executable, "-c", "import sys; sys.exit(3)"]}
    node = _start(ros_env, _params(tmp_path, workload={"source": "slurm", "rate_hz": 2.0,
                                                       "slurm": slurm}))
    try:
        assert listener.spin_until(60, lambda: listener.status is not None
                                   and "Unable to contact" in listener.status.message)
        assert int.from_bytes(listener.status.level, "little") == 1          # WARN
        assert listener.messages == []
        fail.unlink()
        assert listener.spin_until(30, lambda: listener.messages), "no snapshot after recovery"
        assert listener.spin_until(30, lambda: listener.status.message == "1 jobs from slurm")
        assert int.from_bytes(listener.status.level, "little") == 0          # OK
        assert node.poll() is None, "node died"
    finally:
        leave_graph(listener.node)              # before the node it listens to stops
        stop_process(node)
    msg = listener.messages[0]
    assert msg.source == "slurm" and len(msg.jobs) == 1
    job = msg.jobs[0]
    assert (job.job_id, job.state, list(job.hosts), job.start_unix, job.duration_s,
            job.power_class) == ("42", "pending", ["gpu01", "gpu02"], float(start), 3600.0,
                                 "gpu-train")


@pytest.mark.parametrize("overrides, named", [
    ({"workload": {"source": "slrum"}}, "workload.source = 'slrum': expected one of"),
    ({"workload": {"source": "schedule"}},
     "workload.source = 'schedule': expected schedule.file"),
])
def test_a_bad_workload_source_stops_the_node_naming_it(ros_env, tmp_path, overrides, named):
    out = subprocess.run([str(executable("host_telemetry")), "--ros-args", "--params-file",
                          _params(tmp_path, **overrides)], env=ros_env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    assert named in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_stand_in_squeue_prints_what_the_test_expects(tmp_path):
    """The stand-in's own check: its JSON is what parse_squeue reads as one pending job."""
    from rackpower_nodes.sources.slurm import parse_squeue

    script = tmp_path / "squeue.py"
    script.write_text(SQUEUE % 1_800_000_000)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    events, skipped = parse_squeue(json.loads(out), 0.0)
    assert skipped == () and [j.job_id for j in events.jobs] == ["42"]


@pytest.mark.parametrize("values, source, start_command, error", [
    ({}, "none", ("squeue", "--start", "--noheader", "--format=%i|%Y"), None),
    ({"schedule.file": __file__}, "schedule", None, None),
    ({"workload.source": "slurm", "workload.slurm.start_command": [""]}, "slurm", (), None),
    ({"workload.source": "slurm", "workload.slurm.command": [""]}, None, None,
     "workload.slurm.command = ['']: expected the queue query"),
])
def test_the_source_configuration(values, source, start_command, error):
    """auto is the schedule when there is one, else none; [''] asks no helper command."""
    from rackpower_nodes.core.params import ConfigError
    from rackpower_nodes.core.telemetry_config import telemetry_config_from_params

    values = {"local_host.enabled": True, **values}
    if error is not None:
        with pytest.raises(ConfigError, match=re.escape(error)):
            telemetry_config_from_params(values)
        return
    cfg = telemetry_config_from_params(values).workload
    assert cfg.source == source
    assert start_command is None or cfg.slurm_start_command == start_command
