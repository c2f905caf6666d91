"""The `predictor` executable takes `workload_events` over DDS: a snapshot published before it
started (latched) reaches it, a newer one replaces it, an invalid one is dropped and named on
/diagnostics while the last good one stays."""
from __future__ import annotations

import subprocess
import time

import pytest
import yaml

from rackpower_nodes.core.workload_events import JobEvent, WorkloadEvents
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros
NS = "/rack_wp"


def _start(ros_env, tmp_path) -> subprocess.Popen:
    params = {"components": {"names": ["gpu01", "srv03"], "idle_w": [90.0, 60.0],
                             "max_w": [900.0, 300.0]}}
    path = tmp_path / "predictor.yaml"
    path.write_text(yaml.safe_dump({"/**/predictor": {"ros__parameters": params}}))
    return subprocess.Popen([str(executable("predictor")), "--ros-args", "-r", f"__ns:={NS}",
                             "--params-file", str(path)], env=ros_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _snapshot(n_jobs: int) -> WorkloadEvents:
    now = time.time()
    return WorkloadEvents(now, tuple(
        JobEvent(str(100 + k), f"job{k}", ("gpu01",), "pending", now + 60 * (k + 1), 600.0,
                 0.8, "gpu-train") for k in range(n_jobs)), "sim")


def test_the_predictor_takes_snapshots_and_drops_invalid_ones(ros_env, tmp_path):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rackpower.msg import WorkloadEvents as Msg

    from rackpower_nodes.nodes.common import latched_qos
    from rackpower_nodes.nodes.workload_msgs import events_to_msg

    seen: dict[str, str] = {}

    def on_diag(msg) -> None:
        for status in msg.status:
            if status.name == f"{NS}/predictor: forecaster":
                seen.update({kv.key: kv.value for kv in status.values})

    def spin_until(cond, seconds: float = 60.0) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end and node.poll() is None:
            rclpy.spin_once(me, timeout_sec=0.1)
            if cond():
                return True
        return False

    node = None
    try:
        with rclpy.init():                      # left before the predictor is stopped
            me = rclpy.create_node("workload_pub", namespace=NS)
            me.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
            pub = me.create_publisher(Msg, "workload_events", latched_qos())
            pub.publish(events_to_msg(_snapshot(2)))            # before the predictor exists
            node = _start(ros_env, tmp_path)
            assert spin_until(lambda: seen.get("workload_jobs") == "2"), seen
            assert seen["workload_source"] == "sim" and seen["workload_error"] == ""
            pub.publish(events_to_msg(_snapshot(3)))
            assert spin_until(lambda: seen.get("workload_jobs") == "3"), seen
            bad = events_to_msg(_snapshot(1))
            bad.jobs[0].state = "running"
            bad.jobs[0].start_unix = float("nan")             # a running job needs its start
            pub.publish(bad)
            assert spin_until(lambda: "job '100'" in seen.get("workload_error", "")), seen
            assert "start_unix" in seen["workload_error"] and seen["workload_jobs"] == "3"
            assert node.poll() is None, "predictor died"
            me.destroy_node()
    finally:
        if node is not None:
            stop_process(node)
    assert node.returncode == 0
