"""The `retrain_scheduler` executable hears `component_health` over DDS and keeps the faulty
stretches out of the retrain it runs.

The bag folder holds an hour of a quiet rack whose srv04 channel read +500 W for ten minutes.
This test's own node publishes ComponentHealth as the health monitor does (latched): srv04 in
fault from that stretch's start, back to ok at its end; srv07 in fault (a stuck sensor) from
50 min in, still. `~/retrain_now` then trains; the job's request carries both intervals, and
the registry entry and excluded.json beside the model list them with what they cost. A
restarted scheduler still has them.
"""
from __future__ import annotations

import json
import math
import subprocess

import pytest
import yaml
from helpers.graph import spin_until
from helpers.retrain import LSTM, NS, offpeak_not_now, SPEC_DOC, sim_config, write_sim_bag

from rackpower_nodes.core.model_registry import ModelRegistry
from rackpower_nodes.sim.rack_sim import generate
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

BAD_FROM_S, BAD_TO_S, STUCK_FROM_S = 1200.0, 1800.0, 3000.0


@pytest.fixture(scope="module")
def rack(tmp_path_factory):
    """(the hour's start, Unix s; a bag folder with the hour, srv04 +500 W over
    BAD_FROM_S..BAD_TO_S)."""
    root = tmp_path_factory.mktemp("retrain_health")
    data = generate(1.0, seed=102, rate_hz=2, config=sim_config())
    col, rate = list(data.names).index("srv04"), int(data.rate_hz)
    data.power_w[int(BAD_FROM_S) * rate:int(BAD_TO_S) * rate, col] += 500.0
    (root / "bags").mkdir()
    write_sim_bag(root / "bags" / "rack_0", data)
    return data.start_unix, root / "bags"


def _launch(ros_env, tmp_path, bags) -> subprocess.Popen:
    params = {"registry": {"root": str(tmp_path / "registry")},
              "bags": {"folder": str(bags), "namespace": NS},
              "offpeak": {"windows": offpeak_not_now(), "min_interval_s": 86400.0},
              "policy": {"check_period_s": 1.0}, "windows": dict(SPEC_DOC),
              "training": {"threads": 1, "nice": 5, "max_seconds": 150.0,
                           "hidden_size": LSTM["hidden_size"], "max_epochs": LSTM["max_epochs"]},
              "evaluation": {"holdout_s": 600.0}, "health": {"margin_s": 30.0}}
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump({"/**/retrain_scheduler": {"ros__parameters": params}}))
    return subprocess.Popen([str(executable("retrain_scheduler")), "--ros-args", "-r",
                             f"__ns:={NS}", "--params-file", str(path)], env=ros_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class _HealthMonitor:
    """Publishes ComponentHealth like the health monitor (latched); reads the scheduler's
    diagnostics; calls ~/retrain_now."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_srvs.srv import Trigger

        from rackpower.msg import ComponentHealth

        self.node = rclpy.create_node("health_monitor", namespace=NS)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=8,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub = self.node.create_publisher(ComponentHealth, "component_health", qos)
        self.diag: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.retrain = self.node.create_client(Trigger, "retrain_scheduler/retrain_now")

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.endswith(": retraining"):
                self.diag = {kv.key: kv.value for kv in s.values}

    def publish(self, component: str, state: str, cause: str, since: float, t: float) -> None:
        from rackpower.msg import ComponentHealth

        msg = ComponentHealth(component_id=component, state=state, score=1.5, cause=cause,
                              sensor_fault=cause.startswith("sensor_"), since_unix=since,
                              baseline_learned=True)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t * 1e9), 10**9)
        self.pub.publish(msg)

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.node, predicate, timeout_s)

    def retrain_now(self):
        import rclpy
        from std_srvs.srv import Trigger

        assert self.retrain.wait_for_service(timeout_sec=20.0), "service did not appear"
        future = self.retrain.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=20.0)
        assert future.done(), "no answer from ~/retrain_now"
        return future.result()


def test_fault_intervals_heard_on_component_health_stay_out_of_the_retrain(ros_env, tmp_path,
                                                                           rack):
    import rclpy

    t0, bags = rack
    proc = _launch(ros_env, tmp_path, bags)
    try:
        with rclpy.init():
            hm = _HealthMonitor()
            assert hm.spin_until(lambda: hm.diag.get("fault_intervals") == "0", 30), \
                "the scheduler's diagnostics never came"
            hm.publish("srv01", "ok", "", math.nan, t0 + 1250.0)
            hm.publish("srv04", "watch", "sensor_offset", t0 + BAD_FROM_S, t0 + 1230.0)
            hm.publish("srv04", "fault", "sensor_offset", t0 + BAD_FROM_S, t0 + 1250.0)
            hm.publish("srv04", "ok", "", math.nan, t0 + BAD_TO_S)
            hm.publish("srv07", "fault", "sensor_stuck", t0 + STUCK_FROM_S, t0 + 3060.0)
            assert hm.spin_until(lambda: hm.diag.get("fault_intervals") == "2", 20), hm.diag
            started = hm.retrain_now()
            assert started.success, started.message
            assert hm.spin_until(lambda: hm.diag.get("last_result", "").startswith(
                ("promoted", "rejected", "failed")), 150), hm.diag
            assert not hm.diag["last_result"].startswith("failed"), hm.diag
            assert proc.poll() is None
            hm.node.destroy_node()
    finally:
        stop_process(proc)

    registry = tmp_path / "registry"
    (request,) = registry.glob("jobs/*/request.json")
    assert json.loads(request.read_text())["flagged"] == [
        {"component": "srv04", "start_unix": t0 + BAD_FROM_S, "end_unix": t0 + BAD_TO_S,
         "cause": "sensor_offset"},
        {"component": "srv07", "start_unix": t0 + STUCK_FROM_S, "end_unix": None,
         "cause": "sensor_stuck"}]
    (entry,) = ModelRegistry(registry).entries().values()
    excluded = entry["trained_on"]["excluded"]
    assert [(iv["component"], iv["cause"], iv["sensor_fault"]) for iv in excluded["intervals"]
            ] == [("srv04", "sensor_offset", True), ("srv07", "sensor_stuck", True)]
    assert all(iv["windows"] > 0 and iv["margin_s"] == 30.0 for iv in excluded["intervals"])
    comps = excluded["components"]
    assert comps["srv04"]["seconds"] == pytest.approx(BAD_TO_S - BAD_FROM_S + 30.0)
    assert comps["srv07"]["seconds"] == pytest.approx(3600.0 - STUCK_FROM_S + 30.0, abs=15.0)
    assert set(comps) == {"srv04", "srv07"} and excluded["whole_span"] == []
    on_disk = json.loads((registry / entry["path"] / "excluded.json").read_text())
    assert on_disk == excluded

    # a restarted scheduler still knows both intervals (nobody publishes them again)
    proc = _launch(ros_env, tmp_path, bags)
    try:
        with rclpy.init():
            hm = _HealthMonitor()
            assert hm.spin_until(lambda: hm.diag.get("fault_intervals") == "2", 30), hm.diag
            hm.node.destroy_node()
    finally:
        stop_process(proc)
