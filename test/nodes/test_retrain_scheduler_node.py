"""The `retrain_scheduler` executable in its own process, driven through its services.

A registry holds a champion trained on a quiet workload; the bag folder holds an hour of a
busier one (written with rosbags' Writer). `~/retrain_now` trains and promotes a challenger,
announced on the latched `model_update`; `~/rollback` puts the champion back. A broken bag
folder is reported, never a crash; a bad config exits 2 naming the key.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml
from helpers.graph import spin_until
from helpers.retrain import LSTM, NS, offpeak_not_now, sim_config, train_champion, write_sim_bag

from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.core.model_registry import ModelRegistry
from rackpower_nodes.tools.launch_env import executable, stop_process
from rackpower_nodes.sim.rack_sim import generate

pytestmark = pytest.mark.ros


def _params(tmp_path, registry, bags, **extra) -> str:
    params = {"registry": {"root": str(registry)}, "bags": {"folder": str(bags),
                                                             "namespace": NS},
              "offpeak": {"windows": offpeak_not_now(), "min_interval_s": 86400.0},
              "policy": {"check_period_s": 1.0},
              "training": {"threads": 1, "nice": 5, "max_seconds": 150.0,
                           "hidden_size": LSTM["hidden_size"],
                           "max_epochs": LSTM["max_epochs"]},
              "evaluation": {"holdout_s": 600.0, "margin_frac": 0.02}}
    for key, value in extra.items():
        section, name = key.split("__")
        params.setdefault(section, {})[name] = value
    path = tmp_path / "retrain.yaml"
    path.write_text(yaml.safe_dump({"/**/retrain_scheduler": {"ros__parameters": params}}))
    return str(path)


def _launch(ros_env, params: str) -> subprocess.Popen:
    return subprocess.Popen([str(executable("retrain_scheduler")), "--ros-args", "-r",
                             f"__ns:={NS}", "--params-file", params], env=ros_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


class _Operator:
    """Listens to model_update and the diagnostics; calls the services."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import Trigger

        self.node = rclpy.create_node("operator", namespace=NS)
        self.updates: list = []
        self.diag: dict[str, str] = {}
        self.subscribe("updates")
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.retrain = self.node.create_client(Trigger, "retrain_scheduler/retrain_now")
        self.rollback = self.node.create_client(Trigger, "retrain_scheduler/rollback")

    def subscribe(self, attr: str) -> None:
        from rackpower.msg import ModelUpdate
        from rackpower_nodes.nodes.predictor import latched_qos

        setattr(self, attr, [])
        self.node.create_subscription(ModelUpdate, "model_update",
                                      lambda m: getattr(self, attr).append(m), latched_qos())

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.endswith(": retraining"):
                self.diag = {kv.key: kv.value for kv in s.values}

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.node, predicate, timeout_s)

    def call(self, client, timeout_s: float = 60.0):
        # a bound, not a timing: the first ~/retrain_now's answer once took over 20 s on a
        # 2-core machine running two evaluations beside the suite (it opens the bags)
        import rclpy
        from std_srvs.srv import Trigger

        assert client.wait_for_service(timeout_sec=timeout_s), "service did not appear"
        future = client.call_async(Trigger.Request())
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout_s)
        assert future.done(), "no answer from the service"
        return future.result()


@pytest.fixture(scope="module")
def rack(tmp_path_factory):
    """(registry folder with a champion on the quiet workload, its version, a bag folder
    with an hour of the busier one)."""
    root = tmp_path_factory.mktemp("retrain_node")
    quiet = generate(1.0, seed=1, rate_hz=2, config=sim_config())
    reg = ModelRegistry(root / "registry")
    _, champion = train_champion(from_sim(quiet, step_s=1.0), reg)
    busy = generate(1.0, seed=2, rate_hz=2,
                    config=sim_config(level=(0.6, 0.7), start="2024-03-04T01:00:00Z"))
    bags = root / "bags"
    bags.mkdir()
    write_sim_bag(bags / "rack_busy", busy)
    return reg.root, champion, bags


def test_retrain_now_promotes_and_rollback_restores(ros_env, tmp_path, rack):
    import rclpy

    registry, champion, bags = rack
    proc = _launch(ros_env, _params(tmp_path, registry, bags))
    try:
        with rclpy.init():
            op = _Operator()
            assert op.spin_until(lambda: op.updates, 20), "no startup announcement"
            assert op.updates[-1].model_path.endswith(champion)
            assert op.spin_until(lambda: op.diag.get("champion_version") == champion, 30.0)
            started = op.call(op.retrain)
            assert started.success, started.message
            busy = op.call(op.retrain)
            assert not busy.success and "running" in busy.message
            assert op.spin_until(lambda: op.updates[-1].reason == "promoted", 150), op.diag
            promoted = op.updates[-1]
            assert promoted.version and champion not in promoted.model_path
            op.subscribe("late")                        # a late joiner gets the latched one
            assert op.spin_until(lambda: op.late, 30.0)
            assert op.late[-1].model_path == promoted.model_path
            assert op.spin_until(lambda: op.diag.get("last_result", "").startswith("promoted"),
                                 30.0), op.diag
            back = op.call(op.rollback)
            assert back.success and champion in back.message
            assert op.spin_until(lambda: op.updates[-1].reason == "rollback", 30.0)
            assert op.updates[-1].model_path.endswith(champion)
            again = op.call(op.rollback)                # the challenger was rolled back
            assert not again.success and "no earlier version" in again.message
            assert proc.poll() is None
            op.node.destroy_node()
    finally:
        stop_process(proc)
    reg = ModelRegistry(registry)
    assert reg.current()["version"] == champion
    statuses = sorted(e["status"] for e in reg.entries().values())
    assert statuses == ["promoted", "rolled_back"]


def test_broken_bags_are_reported_not_fatal(ros_env, tmp_path):
    import rclpy

    bags = tmp_path / "bags"
    bags.mkdir()
    (bags / "torn.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(64))
    proc = _launch(ros_env, _params(tmp_path, tmp_path / "registry", bags))
    try:
        with rclpy.init():
            op = _Operator()
            answer = op.call(op.retrain)
            assert not answer.success and "torn.mcap" in answer.message
            assert op.spin_until(lambda: "torn.mcap" in op.diag.get("last_error", ""), 30.0)
            data = generate(0.02, seed=5, rate_hz=2, config=sim_config())
            write_sim_bag(bags / "short", data)         # opens, but too short to train on
            answer = op.call(op.retrain)
            assert answer.success, answer.message
            # the job's own failure (not the earlier one); then idle, or already back to
            # waiting for the next off-peak
            assert op.spin_until(lambda: "windows" in op.diag.get("last_error", "")
                                 and op.diag.get("last_result", "").startswith("failed")
                                 and op.diag.get("state") not in ("training", "evaluating"),
                                 90), op.diag
            assert proc.poll() is None, "the node must survive a failed job"
            op.node.destroy_node()
    finally:
        stop_process(proc)
    assert ModelRegistry(tmp_path / "registry").current() is None


def test_bad_config_exits_2_naming_the_key(ros_env, tmp_path):
    params = _params(tmp_path, tmp_path / "reg", tmp_path, offpeak__windows=["25:00-01:00"])
    proc = _launch(ros_env, params)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "offpeak.windows[0]" in err and "25:00-01:00" in err
    params = _params(tmp_path, "", tmp_path)
    proc = _launch(ros_env, params)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "registry.root" in err


def test_corrupt_registry_exits_2_naming_the_file(ros_env, tmp_path):
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "registry.json").write_text('{"format_version": 1, "entr')
    proc = _launch(ros_env, _params(tmp_path, tmp_path / "reg", tmp_path))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "registry.json: unreadable" in err and "registry.json.bak" in err
    assert (tmp_path / "reg" / "registry.json").read_text() == '{"format_version": 1, "entr'
