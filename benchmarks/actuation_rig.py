"""The rig of `bench_actuation.py`: what the benchmark runs beside the `pdu_actuator` node.

- `_TimedModel`: a simulated PDU's model that records when each allocation write reaches it;
- `_params`: the node's parameters for 16 components (config/rack.yaml) or 48 (two full
  24-outlet PDUs), PDU path only;
- `_base_w`, `_measured`, `_forecast_arrays`: batch k's distinct measured values (W) and the
  forecast sent before it;
- `_expected`: the float32 allocations the node computes for each batch, by its own
  AllocationController;
- `_Bench`: this process's node, publishing batches and listening to allocations and
  /diagnostics.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
import yaml
from rclpy.executors import SingleThreadedExecutor

from rackpower_nodes.core.actuator_config import actuator_config_from_params
from rackpower_nodes.core.allocation import AllocationController, ForecastView
from rackpower_nodes.core.params import flatten_parameters
from rackpower_nodes.drivers.pdu_link import float32_floor
from rackpower_nodes.sim.pdu import PduModel
from rackpower_nodes.tools.launch_env import share_file

__all__ = ["ALTERNATE_W", "HORIZON", "NAMESPACE", "STEP_W", "_Bench", "_TimedModel",
           "_base_w", "_expected", "_forecast_arrays", "_measured", "_params"]

NAMESPACE = "/rack_bench_act"
HORIZON = 50
STEP_W = 0.01            # per-batch increment of every measured value, W
ALTERNATE_W = 2.0        # added on odd batches: the next allocation shrinks, then grows


class _TimedModel(PduModel):
    """A PduModel that records when each allocation write reaches it (sim/pdu/ unchanged:
    SimPduServer applies register writes through `model.set_allocations`)."""

    def __init__(self, log: list, pdu: int, *args, **kwargs):
        self._log, self._pdu = log, pdu
        super().__init__(*args, **kwargs)

    def set_allocations(self, index, watts) -> None:
        t = time.time_ns()
        self._log.append((t, self._pdu, np.array(index, dtype=int).reshape(-1),
                          np.array(watts, dtype=np.float64).reshape(-1)))
        super().set_allocations(index, watts)


def _params(mode: str, n: int, ports: list[int]) -> dict:
    """16 components: config/rack.yaml's pdu_actuator section; 48: a full pair of 24-outlet
    PDUs on a 63 A breaker. Both measured at 12 % of the way from floor to ceiling. The PDU
    path only: rack.yaml's BMC power caps are left out (bench_power_caps.py measures those)."""
    rack = yaml.safe_load(share_file("config", "rack.yaml").read_text())
    params = rack["/**/pdu_actuator"]["ros__parameters"]
    if n != 16:
        names = [f"s{i + 1:02d}" for i in range(n)]
        params["components"] = {
            "names": names, "pdu": ["pdu-a" if i % 2 == 0 else "pdu-b" for i in range(n)],
            "outlet": [i // 2 + 1 for i in range(n)], "floor_w": [50.0] * n,
            "ceiling_w": [600.0 + 50.0 * (i % 5) for i in range(n)],
            "priority": [1 + i % 3 for i in range(n)]}
        params["budget"]["breaker_a"] = 63.0
    params["components"].pop("power_cap_url", None)
    params["mode"] = mode
    params["autostart"] = True
    params["pdus"]["urls"] = [f"tcp://127.0.0.1:{p}" for p in ports]
    params["pdu"]["retry_s"] = 0.5
    return params


def _base_w(params: dict) -> np.ndarray:
    c = params["components"]
    floor, ceiling = np.array(c["floor_w"]), np.array(c["ceiling_w"])
    return floor + 0.12 * (ceiling - floor)


def _measured(base: np.ndarray, k: int) -> np.ndarray:
    """Batch k's measured values as the float32 the message carries."""
    return (base + STEP_W * k + ALTERNATE_W * (k % 2)).astype(np.float32).astype(np.float64)


def _forecast_arrays(measured: np.ndarray) -> np.ndarray:
    """The forecast sent before each batch: 0.97 x measured, flat over the horizon (below
    measured + margin, so the allocation follows the batch; within the error threshold)."""
    return np.repeat((0.97 * measured).astype(np.float32)[:, None], HORIZON, axis=1)


def _expected(params: dict, base: np.ndarray, batches: int) -> np.ndarray:
    """(batches, n) the float32 allocations the node computes for each batch."""
    cfg = actuator_config_from_params(flatten_parameters(params))
    ctl = AllocationController(cfg.components, cfg.policy, cfg.mode)
    n = len(cfg.components)
    out = np.empty((batches, n))
    for k in range(batches):
        m = _measured(base, k)
        t = time.time()
        fc = None
        if cfg.mode == "proactive":
            f = _forecast_arrays(m).astype(np.float64)
            fc = ForecastView(t, 0.1, f, f, f, model="bench 1", fallback=np.zeros(n, bool))
        d = ctl.step(t, m, fc)
        if d.mode != cfg.mode:
            raise RuntimeError(f"expected-allocation table: mode {d.mode} ({d.mode_reason})")
        out[k] = float32_floor(d.allocated_w)
    return out


class _Bench:
    """This process's node: publishes batches, listens to allocations and diagnostics."""

    def __init__(self, names: list[str], mode: str):
        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import PowerAllocation, PowerForecast, PowerSamples
        from rackpower_nodes.nodes.common import samples_qos
        from rackpower_nodes.nodes.common import latched_qos
        from rackpower_nodes.nodes.predictor import forecast_qos

        self.names, self.mode_wanted = names, mode
        self.node = rclpy.create_node("actuation_bench", namespace=NAMESPACE)
        self.samples_pub = self.node.create_publisher(PowerSamples, "power_samples",
                                                      samples_qos(0.25))
        self.forecast_pub = self.node.create_publisher(PowerForecast, "power_forecast",
                                                       forecast_qos())
        self.modes: dict[str, int] = {}
        self.steps: list[tuple[int, float]] = []      # (allocation stamp ns, measured[0])
        self.off_mode: list[tuple[int, str]] = []      # (stamp ns, mode: reason) steps
        self.written_once = threading.Event()
        self.diag: dict[str, dict[str, str]] = {}
        self.node.create_subscription(PowerAllocation, "power_allocation", self._on_alloc,
                                      latched_qos())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()

    def _on_alloc(self, msg) -> None:
        self.modes[msg.mode] = self.modes.get(msg.mode, 0) + 1
        if msg.mode != self.mode_wanted:
            self.off_mode.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec,
                                  f"{msg.mode}: {msg.mode_reason}"))
        if len(msg.measured_w):
            self.steps.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec,
                               float(msg.measured_w[0])))
        if msg.pdu_written:
            self.written_once.set()

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.endswith("pdu_actuator: allocation"):
                self.diag["link"] = {kv.key: kv.value for kv in s.values}

    def publish(self, measured: np.ndarray, forecast: bool) -> int:
        from rackpower.msg import PowerForecast, PowerSamples
        from rackpower_nodes.nodes.current_sensor import float32_array

        if forecast:
            f = _forecast_arrays(measured)
            fmsg = PowerForecast(step_s=0.1, horizon_steps=HORIZON, channel_ids=self.names,
                                 p50_w=float32_array(f), p90_w=float32_array(f),
                                 p99_w=float32_array(f), model_name="bench", model_version="1")
            fmsg.header.stamp.sec, fmsg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            self.forecast_pub.publish(fmsg)
        msg = PowerSamples(channel_ids=self.names, sample_count=1, sample_period_s=0.1,
                           mean_power_w=float32_array(measured),
                           peak_power_w=float32_array(measured))
        t = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 10**9)
        self.samples_pub.publish(msg)
        return t
