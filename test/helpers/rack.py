"""The `pdu_actuator` node's test rack: its parameters, two simulated Modbus PDUs and `Rack`,
the test's side of the graph (a sensor and a predictor stand-in publishing over DDS, and
listeners for allocations, allocation errors and /diagnostics).

Four components a1, a2 (PDU pdu-a, outlets 1, 2) and b1, b2 (pdu-b, outlets 1, 2) draw
MEASURED W; the budget is 920 W (5 A x 230 V x 0.8).
"""
from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

from rackpower_nodes.core.actuator_config import actuator_config_from_params
from rackpower_nodes.core.allocation import AllocationController
from rackpower_nodes.core.params import flatten_parameters
from rackpower_nodes.sim.pdu import PduModel, SimPduServer
from rackpower_nodes.tools.launch_env import executable, stop_process

NS = "/rack_pa"
NAMES = ["a1", "a2", "b1", "b2"]
MEASURED = np.array([150.0, 120.0, 100.0, 80.0])       # W per component
HORIZON = 50                                           # forecast steps of 0.1 s

__all__ = ["HORIZON", "MEASURED", "NAMES", "NS", "Rack", "actuator_params", "expected_static",
           "free_port", "pdu_server", "running_actuator", "stamp", "start_actuator"]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def actuator_params(ports: list[int], forecast_stale_s: float = 0.2) -> dict:
    """The actuator's parameters (nested, as in a YAML file) for two simulated PDUs on
    loopback `ports`; forecasts older than `forecast_stale_s` (s) mean safe mode."""
    return {
        "mode": "proactive", "autostart": True,
        "budget": {"breaker_a": 5.0, "voltage_v": 230.0, "derating": 0.8},     # 920 W
        "policy": {"quantile": "p99", "lead_s": 1.0, "window_s": 1.0},
        "inputs": {"forecast_stale_s": forecast_stale_s, "samples_stale_s": 0.5},
        "control": {"rate_hz": 10.0},
        "components": {"names": NAMES, "pdu": ["pdu-a", "pdu-a", "pdu-b", "pdu-b"],
                       "outlet": [1, 2, 1, 2], "floor_w": [50.0] * 4,
                       "ceiling_w": [400.0] * 4, "priority": [2, 1, 2, 1]},
        "pdus": {"names": ["pdu-a", "pdu-b"],
                 "urls": [f"tcp://127.0.0.1:{p}" for p in ports],
                 "maps": ["rackpower_sim", "rackpower_sim"], "unit_ids": [1, 1]},
        "pdu": {"timeout_s": 0.3, "retry_s": 0.5},
    }


def start_actuator(tmp_path: Path, params: dict, env: dict) -> tuple[subprocess.Popen, Path]:
    """The pdu_actuator process in NS with `params` (written to tmp_path/actuator.yaml); its
    output goes to the returned file (tmp_path/actuator.err)."""
    path = tmp_path / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    log = tmp_path / "actuator.err"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(executable("pdu_actuator")), "--ros-args", "-r", f"__ns:={NS}",
             "--params-file", str(path)], env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


@contextmanager
def running_actuator(tmp_path: Path, params: dict, env: dict,
                     servers: Sequence[SimPduServer]) -> Iterator[subprocess.Popen]:
    """`start_actuator`; on the way out the process is stopped if it still runs and every
    PDU server in `servers` (as the list holds them then) stopped; after a body that did not
    fail, the process's output must hold no traceback."""
    proc, log = start_actuator(tmp_path, params, env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            stop_process(proc)
        for s in servers:
            s.stop()
    text = log.read_text()
    assert "Traceback" not in text, text


def pdu_server(port: int) -> SimPduServer:
    """A simulated PDU (24 outlets rated 2300 W, 4600 W breaker) for `port`, not started."""
    return SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0), port=port,
                        unit_id=1)


class Rack:
    """The test's side of the graph: a sensor and a predictor stand-in, and listeners."""

    def __init__(self, namespace: str = NS):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import AllocationError, PowerAllocation, PowerForecast, PowerSamples
        from rackpower_nodes.nodes.common import samples_qos
        from rackpower_nodes.nodes.common import errors_qos, forecast_qos, latched_qos

        self.node = rclpy.create_node("actuator_test", namespace=namespace)
        self.allocations: list = []
        self.errors: list = []
        self.diag: dict[str, tuple[int, str]] = {}
        self.samples_pub = self.node.create_publisher(PowerSamples, "power_samples",
                                                      samples_qos(0.25))
        self.forecast_pub = self.node.create_publisher(PowerForecast, "power_forecast",
                                                       forecast_qos())
        self.node.create_subscription(PowerAllocation, "power_allocation",
                                      self.allocations.append, latched_qos())
        self.node.create_subscription(AllocationError, "allocation_error", self.errors.append,
                                      errors_qos())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.forecasting = True
        self.last_forecast_t = None
        self.measured = MEASURED.copy()
        # publishing and listening go on in the background, also while mbpoll runs
        self.node.create_timer(0.05, self._publish_samples)
        self.node.create_timer(0.1, self._publish_forecast)
        self.executor = rclpy.executors.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if "pdu_actuator" in s.name:
                self.diag[s.name.rsplit(": ", 1)[-1]] = (s.level[0] if isinstance(
                    s.level, bytes) else s.level, s.message)

    def _publish_samples(self) -> None:
        from rackpower.msg import PowerSamples
        from rackpower_nodes.nodes.current_sensor import float32_array

        msg = PowerSamples(channel_ids=NAMES, sample_count=1, sample_period_s=0.05,
                           mean_power_w=float32_array(self.measured),
                           peak_power_w=float32_array(self.measured))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
        self.samples_pub.publish(msg)

    def _publish_forecast(self) -> None:
        from rackpower.msg import PowerForecast
        from rackpower_nodes.nodes.current_sensor import float32_array

        if not self.forecasting:
            return
        now = time.time()
        base = np.repeat(self.measured[:, None], HORIZON, axis=1)
        msg = PowerForecast(step_s=0.1, horizon_steps=HORIZON, channel_ids=NAMES,
                            p50_w=float32_array(base), p90_w=float32_array(base * 1.05),
                            p99_w=float32_array(base * 1.1), model_name="test",
                            model_version="1")
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(now * 1e9), 10**9)
        self.forecast_pub.publish(msg)
        self.last_forecast_t = now

    def run_until(self, predicate, timeout_s: float) -> bool:
        """Wait up to `timeout_s` (s) for the newest allocation to satisfy `predicate`."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.allocations and predicate(self.allocations[-1]):
                return True
            time.sleep(0.01)
        return False


def stamp(msg) -> float:
    """A message's header stamp in s since the epoch."""
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def expected_static(params: dict) -> np.ndarray:
    """The static split (W per component) the actuator leaves behind with `params`."""
    cfg = actuator_config_from_params(flatten_parameters(params))
    return AllocationController(cfg.components, cfg.policy, "static").static_allocation()
