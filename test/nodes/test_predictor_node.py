"""The `predictor` executable in the live graph: simulated rack -> current_sensor -> predictor.

One run walks through the states an operator meets: the model in service, a model swap by
`model_update` (no cycle missed), a broken model announced (kept serving the old one), the
samples stream stopping (fallback, said in the message) and coming back, then a served
forecaster with challengers, whose record against persistence the diagnostics show.
"""
from __future__ import annotations

import shutil
import subprocess
import time

import numpy as np
import pytest
import yaml

from helpers.graph import spin_until
from helpers.sensor import rack_board_params
from rackpower_nodes.core.forecast.baselines import EwmaForecaster, PersistenceForecaster
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.core.forecast.challengers import ServedForecaster
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows, split_by_time
from rackpower_nodes.core.forecast.registry import save_model
from rackpower_nodes.tools.launch_env import executable, stop_process
from rackpower_nodes.sim.live import LiveRack
from rackpower_nodes.sim.rack_sim import generate, load_config

pytestmark = pytest.mark.ros

SPEC = WindowSpec(step_s=0.1, history_steps=10, horizon_steps=10, coarse=(5,))
NS = "/rack_pr"
RATE_HZ = 10.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    data = generate(0.05, seed=3)
    ws = build_windows(from_sim(data, step_s=SPEC.step_s), SPEC)
    broken = root / "broken"
    shutil.copytree(save_model(EwmaForecaster().fit(ws), root), broken)
    (broken / "model.json").write_text("{")            # truncated metadata
    fit_on, val = split_by_time(ws, 0.8)
    served = ServedForecaster(members={"persistence": PersistenceForecaster().fit(fit_on),
                                       "ewma": EwmaForecaster().fit(fit_on)}).fit(fit_on, val)
    return {"persistence": save_model(PersistenceForecaster().fit(ws), root),
            "ewma": save_model(EwmaForecaster().fit(ws), root), "broken": broken,
            "served": save_model(served, root), "names": data.names}


def _params(tmp_path, board: str, model: str, names) -> str:
    cfg = load_config()
    idle = [float(c.model.steady_power_w(np.array([0.0]))[0]) for c in cfg.components]
    peak = [float(c.model.steady_power_w(np.array([1.0]))[0]) for c in cfg.components]
    doc = {
        "/**/current_sensor": {"ros__parameters": rack_board_params(board, names)},
        "/**/predictor": {"ros__parameters": {
            "model": {"path": model}, "inference": {"rate_hz": RATE_HZ},
            "inputs": {"stale_after_s": 0.5},
            "components": {"names": list(names), "idle_w": idle, "max_w": peak}}},
    }
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


class _Listener:
    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import ModelUpdate, PowerForecast
        from rackpower_nodes.nodes.predictor import forecast_qos, latched_qos

        self.node = rclpy.create_node("forecast_listener", namespace=NS)
        self.forecasts: list = []
        self.diag: dict[str, str] = {}
        self.node.create_subscription(PowerForecast, "power_forecast",
                                      lambda m: self.forecasts.append((time.monotonic(), m)),
                                      forecast_qos())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.updates = self.node.create_publisher(ModelUpdate, "model_update", latched_qos())

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.endswith(": forecaster"):
                self.diag = {kv.key: kv.value for kv in s.values}

    def announce(self, path, reason: str) -> None:
        from rackpower.msg import ModelUpdate

        self.updates.publish(ModelUpdate(model_path=str(path), reason=reason))

    def spin_until(self, predicate, timeout_s: float) -> bool:
        """Until the newest forecast satisfies ``predicate``."""
        return spin_until(self.node, lambda: bool(self.forecasts)
                          and predicate(self.forecasts[-1][1]), timeout_s, step_s=0.02)


def test_predictor_serves_swaps_and_falls_back(ros_env, tmp_path, models):
    import rclpy

    board = str(tmp_path / "board")
    rack = LiveRack(board, board_channels=16, board_rate_hz=500.0).start()
    params = _params(tmp_path, board, str(models["persistence"]), models["names"])
    args = ["--ros-args", "-r", f"__ns:={NS}", "--params-file", params]

    def launch(name: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(executable(name)), *args], env=ros_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    procs: list[subprocess.Popen] = []
    try:
        sensor, predictor = launch("current_sensor"), launch("predictor")
        with rclpy.init():
            lis = _Listener()
            served = lis.spin_until(lambda m: not m.fallback and m.model_name == "persistence",
                                    30)
            assert served, lis.forecasts[-1][1].fallback_reason if lis.forecasts else "none"
            start = len(lis.forecasts)
            lis.announce(models["ewma"], "promoted")
            assert lis.spin_until(lambda m: m.model_name == "ewma" and not m.fallback, 15)
            assert lis.spin_until(lambda m: False, 1.0) is False      # a few more cycles
            swap = lis.forecasts[start:]
            lis.announce(models["broken"], "promoted")
            assert lis.spin_until(lambda m: lis.diag.get("load_state") == "error", 30.0)
            assert lis.forecasts[-1][1].model_name == "ewma"          # still serving
            assert "model.json" in lis.diag.get("load_detail", "")
            stop_process(sensor)                                      # samples stop
            assert lis.spin_until(lambda m: m.fallback and "stale" in m.fallback_reason, 30.0)
            sensor = launch("current_sensor")
            recovered = lis.spin_until(lambda m: not m.fallback and m.model_name == "ewma", 40)
            assert recovered, lis.forecasts[-1][1].fallback_reason
            lis.announce(models["served"], "promoted")        # persistence and challengers
            assert lis.spin_until(lambda m: m.model_name == "served" and not m.fallback, 30)
            assert lis.spin_until(lambda m: "matured forecasts" in lis.diag.get("served.srv",
                                                                                ""), 30), lis.diag
            assert "bound 1.01x" in lis.diag["served.srv"], lis.diag["served.srv"]
            assert predictor.poll() is None
            all_msgs = [m for _, m in lis.forecasts]
            lis.node.destroy_node()
    finally:
        for proc in procs:
            stop_process(proc)
        rack.stop()
    stamps = np.array([m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in swap])
    assert np.diff(stamps).max() < 1.6 / RATE_HZ, "a cycle was missed during the swap"
    for m in all_msgs:
        n, h = len(m.channel_ids), m.horizon_steps
        p50, p90, p99 = (np.asarray(a).reshape(n, h) for a in (m.p50_w, m.p90_w, m.p99_w))
        assert (p50 >= 0).all() and (p50 <= p90).all() and (p90 <= p99).all()


def test_a_slow_model_load_leaves_the_one_thread_free(ros_env, monkeypatch):
    """On one thread (the events executor run_node uses for threads=1), a model load that
    takes long runs on the node's loader thread: forecasts keep coming, and inputs keep being
    taken, until it ends; then the load is reported."""
    import threading
    from types import SimpleNamespace

    import rclpy
    from rclpy.context import Context
    from rclpy.experimental import EventsExecutor

    from rackpower.msg import ModelUpdate, PowerForecast, PowerSamples
    from rackpower_nodes.core.forecast.serving import ForecastService
    from rackpower_nodes.nodes.predictor import (
        PredictorNode, forecast_qos, latched_qos, samples_qos)

    ns = "/rack_pr_slow"
    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]), args=[   # own graph
        "--ros-args", "-r", f"__ns:={ns}", "-p", "components.names:=[gpu01]",
        "-p", "components.idle_w:=[90.0]", "-p", "components.max_w:=[900.0]",
        "-p", f"inference.rate_hz:={RATE_HZ}", "-p", "inference.runtime:=onnx",
        "-p", "inference.threads:=2"])
    loading, release = threading.Event(), threading.Event()
    asked = []                                  # the runtime and threads the load was given

    def slow_load(path: str, runtime: str, threads: int):
        asked.append((runtime, threads))
        loading.set()
        assert release.wait(60), "the test never let the load finish"
        return SimpleNamespace(name="slow", version=path)

    taken = []                                  # the samples the node's callback took
    monkeypatch.setattr(ForecastService, "push_samples", lambda _, msg: taken.append(msg))
    executor = EventsExecutor(context=ctx)
    try:
        node = PredictorNode(context=ctx)
        monkeypatch.setattr(node.service, "load", slow_load)
        peer = rclpy.create_node("slow_load_peer", namespace=ns, context=ctx)
        forecasts = []
        peer.create_subscription(PowerForecast, "power_forecast", forecasts.append,
                                 forecast_qos())
        samples = peer.create_publisher(PowerSamples, "power_samples", samples_qos(0.25))
        updates = peer.create_publisher(ModelUpdate, "model_update", latched_qos())
        peer.create_timer(0.05, lambda: samples.publish(PowerSamples()))
        executor.add_node(node)
        executor.add_node(peer)

        def spin_until(cond, timeout_s: float = 30.0) -> bool:
            end = time.monotonic() + timeout_s
            while time.monotonic() < end and not cond():
                executor.spin_once(timeout_sec=0.05)
            return cond()

        assert spin_until(lambda: len(forecasts) >= 2)
        updates.publish(ModelUpdate(model_path="/models/slow", reason="promoted"))
        assert spin_until(loading.is_set)
        during, fed = len(forecasts), len(taken)
        assert spin_until(lambda: len(forecasts) >= during + 5 and len(taken) >= fed + 5,
                          timeout_s=60)
        assert node._load_state[0] == "none"            # still loading
        release.set()
        assert spin_until(lambda: node._load_state[0] == "loaded")
        assert "slow /models/slow" in node._load_state[1]
        assert asked == [("onnx", 2)]                   # inference.runtime, inference.threads
        assert all(m.model_name == "persistence" for m in forecasts)
        peer.destroy_node()
        node.destroy_node()
        assert not node._loader.is_alive()
    finally:
        release.set()
        executor.shutdown()
        rclpy.shutdown(context=ctx)


def test_torch_threads_are_limited_on_the_forecasting_thread_once_per_model(ros_env,
                                                                            monkeypatch):
    """torch's OpenMP thread count belongs to the thread that runs the LSTM: the node sets
    inference.threads on the thread that spins its cycle (not the loader thread), once for
    every model that comes into service, and not while none serves."""
    import threading

    import rclpy
    from rclpy.context import Context
    from rclpy.experimental import EventsExecutor

    import rackpower_nodes.nodes.predictor as predictor
    from rackpower_nodes.core.forecast.serving import ForecastService

    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]), args=[   # own graph
        "--ros-args", "-r", "__ns:=/rack_pr_threads", "-p", "components.names:=[gpu01]",
        "-p", "components.idle_w:=[90.0]", "-p", "components.max_w:=[900.0]",
        "-p", f"inference.rate_hz:={RATE_HZ}", "-p", "inference.threads:=3"])
    calls = []
    monkeypatch.setattr(predictor, "_limit_torch_threads",
                        lambda n: calls.append((threading.get_ident(), n)))
    served = [None]                 # the model the service says it serves (none, then two)
    monkeypatch.setattr(ForecastService, "model", property(lambda self: served[0]))
    executor = EventsExecutor(context=ctx)
    try:
        node = predictor.PredictorNode(context=ctx)
        executor.add_node(node)

        def cycles(n: int) -> None:
            end, goal = time.monotonic() + 60.0, node._cycles + n
            while time.monotonic() < end and node._cycles < goal:
                executor.spin_once(timeout_sec=0.05)
            assert node._cycles >= goal

        cycles(2)
        assert calls == []
        served[0] = object()
        cycles(3)
        assert calls == [(threading.get_ident(), 3)]
        served[0] = object()                          # a new model: set again, once
        cycles(3)
        assert calls == [(threading.get_ident(), 3)] * 2
        node.destroy_node()
    finally:
        executor.shutdown()
        rclpy.shutdown(context=ctx)
