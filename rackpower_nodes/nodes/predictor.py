"""The `predictor` node: `power_samples`, `host_telemetry` and `workload_events` in,
`power_forecast` out at 10 Hz.

One thread spins every callback (`run_node(threads=1)`: rclpy's events executor): the inputs
only append to the forecast service's windows, and inference runs on a timer. A new model (a
`model_update` message, or a change of the `model.path` parameter) is loaded on a worker
thread the node owns (one load at a time, in the order asked) and swapped in atomically, so
no callback waits for a load and no cycle is skipped. Without a usable model, or for
components whose inputs are stale, forecasts come from the persistence fallback with a wide
margin, and both the message and the diagnostics say so. The newest `workload_events`
snapshot (latched: a late start gets the last one) feeds the event features; an invalid one
is dropped and logged.

An LSTM is served as `inference.runtime` says: `onnx` runs its ONNX export (weights.onnx) in
onnxruntime and never imports torch (about 20 MB of memory instead of 200), `torch` its torch
network, `auto` (the default) the export where the model directory has one (models saved
before it existed have none). The ONNX session runs on `inference.threads` threads, fixed when
it is opened on the loader thread. The torch LSTM runs on `inference.threads` torch threads
(1 by default), set on the forecasting thread itself the first cycle a model serves: torch's
OpenMP thread count is the calling thread's, so setting it on the loader thread would leave
inference on every core (measured in the rack: the predictor at 19 % of a core with the
default, 8 % with one thread; the LSTM of 16 components takes about a millisecond).
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node

from rackpower.msg import HostTelemetry, ModelUpdate, PowerForecast, PowerSamples, WorkloadEvents
from rackpower_nodes.core.forecast.base import ModelLoadError
from rackpower_nodes.core.forecast.serving import Forecast, ForecastService
from rackpower_nodes.core.predictor_config import (
    PREDICTOR_PARAMETERS, PredictorConfig, predictor_config_from_params)
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.workload_msgs import WorkloadEventsError, events_from_msg
from rackpower_nodes.nodes.common import (declare_from_specs, diagnostic_status,
    float32_array as _f32, forecast_qos, latched_qos, publish_diagnostics, samples_qos)

LATENCY_WINDOW = 200
LOADER_JOIN_S = 5.0          # how long destroy_node waits for a load in progress, s


def _limit_torch_threads(threads: int) -> None:
    """torch's intra-op threads for inference on the calling thread (a model that needs no
    torch has not imported it: nothing to do)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def to_message(fc: Forecast, components, frame_id: str, inference_ms: float) -> PowerForecast:
    msg = PowerForecast()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(fc.t_unix * 1e9), 10**9)
    msg.header.frame_id = frame_id
    msg.step_s = fc.step_s
    msg.horizon_steps = int(fc.p50_w.shape[1])
    msg.channel_ids = list(components)
    msg.p50_w, msg.p90_w, msg.p99_w = _f32(fc.p50_w), _f32(fc.p90_w), _f32(fc.p99_w)
    msg.peak_p90_w = _f32(fc.p90_w.max(axis=1))
    msg.last_w = _f32(np.nan_to_num(fc.last_w, nan=-1.0))
    msg.model_name, msg.model_version = fc.model_name, fc.model_version
    msg.fallback = bool(fc.fallback.any())
    msg.fallback_reason = fc.reason
    msg.inference_ms = float(inference_ms)
    return msg


class PredictorNode(Node):
    """Forecasts each component's power for the next horizon."""

    def __init__(self, **kwargs):
        super().__init__("predictor", **kwargs)
        self.config: PredictorConfig = predictor_config_from_params(
            declare_from_specs(self, PREDICTOR_PARAMETERS))
        cfg = self.config
        schedule = WorkloadSchedule.from_file(cfg.schedule_file) if cfg.schedule_file else None
        self.service = ForecastService(cfg.components, cfg.idle_w, cfg.max_w, schedule,
                                       cfg.stale_after_s, cfg.margin_frac, cfg.min_margin_w,
                                       events_stale_after_s=cfg.events_stale_after_s,
                                       calibration=cfg.calibration_settings())
        self._latency_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._cycles = 0
        self._threads_set_for = None           # the model torch's threads were set for
        self._last_fallback = (0, "")
        self._load_state = ("none", "no model configured")
        self.create_subscription(PowerSamples, "power_samples", self.service.push_samples,
                                 samples_qos(0.25))
        self.create_subscription(HostTelemetry, "host_telemetry",
                                 self.service.push_host_telemetry, samples_qos(2.0))
        self.create_subscription(ModelUpdate, "model_update", self._on_model_update,
                                 latched_qos())
        self._events_error, self._events = "", ("", 0, 0.0)     # (source, jobs, stamp)
        self.create_subscription(WorkloadEvents, "workload_events", self._on_workload_events,
                                 latched_qos())
        self._pub = self.create_publisher(PowerForecast, "power_forecast", forecast_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0 / cfg.rate_hz, self._cycle)
        self.create_timer(1.0, self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_parameters)
        self._loads: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._loader = threading.Thread(target=self._load_loop, daemon=True,
                                        name="model-loader")
        self._loader.start()
        if cfg.model_path:
            self._load_async(cfg.model_path, "model.path")

    def _cycle(self) -> None:
        began = time.perf_counter()
        model = self.service.model
        if model is not None and model is not self._threads_set_for:
            _limit_torch_threads(self.config.inference_threads)
            self._threads_set_for = model
        fc = self.service.forecast(time.time())
        elapsed_ms = (time.perf_counter() - began) * 1e3
        self._latency_ms.append(elapsed_ms)
        self._cycles += 1
        self._last_fallback = (int(fc.fallback.sum()), fc.reason)
        self._pub.publish(to_message(fc, self.service.components, self.config.frame_id,
                                     elapsed_ms))

    def _on_workload_events(self, msg: WorkloadEvents) -> None:
        try:
            events = events_from_msg(msg)
        except WorkloadEventsError as exc:
            if str(exc) != self._events_error:        # once per distinct error, not per message
                self.get_logger().warning(f"workload_events from {msg.source!r} dropped: {exc}")
            self._events_error = str(exc)
            return
        self._events_error, self._events = "", (events.source, len(events.jobs),
                                                 events.stamp_unix)
        self.service.push_workload_events(events)

    def _on_model_update(self, msg: ModelUpdate) -> None:
        self._load_async(msg.model_path, f"model_update ({msg.reason or 'no reason'})")

    def _on_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "model.path" and p.value:
                self._load_async(str(p.value), "model.path")
        return SetParametersResult(successful=True)

    def destroy_node(self) -> None:
        self._loads.put(None)
        self._loader.join(LOADER_JOIN_S)
        super().destroy_node()

    def _load_async(self, path: str, why: str) -> None:
        """Load on the loader thread; the model in service keeps serving meanwhile."""
        self._loads.put((path, why))

    def _load_loop(self) -> None:
        while (job := self._loads.get()) is not None:
            self._load(*job)

    def _load(self, path: str, why: str) -> None:
        try:
            model = self.service.load(path, self.config.inference_runtime,
                                      self.config.inference_threads)
        except ModelLoadError as exc:
            self._load_state = ("error", str(exc))
            self.get_logger().error(f"cannot load model ({why}): {exc}; "
                                    + ("keeping the model in service" if self.service.model
                                       else "serving the persistence fallback"))
            return
        self._load_state = ("loaded", f"{model.name} {model.version} from {path}")
        self.get_logger().info(f"model in service ({why}): {model.name} {model.version}")

    def _events_values(self) -> dict[str, object]:
        source, jobs, stamp = self._events
        return {"workload_source": source or "none yet", "workload_jobs": jobs,
                "workload_age_s": f"{time.time() - stamp:.1f}" if stamp else "never",
                "workload_error": self._events_error}

    def _publish_diagnostics(self) -> None:
        lat = np.array(self._latency_ms) if self._latency_ms else np.array([np.nan])
        model = self.service.model
        state, detail = self._load_state
        n_fallback, reason = self._last_fallback
        if model is None:
            level, text = DiagnosticStatus.WARN, f"persistence fallback: {detail}"
        elif n_fallback:
            level, text = DiagnosticStatus.WARN, f"{n_fallback} components in fallback: {reason}"
        elif state == "error":
            level, text = DiagnosticStatus.WARN, f"serving {model.version}; last load: {detail}"
        else:
            level, text = DiagnosticStatus.OK, f"serving {model.name} {model.version}"
        values = {"model": model.name if model else "persistence",
                  "model_version": model.version if model else "fallback",
                  "load_state": state, "load_detail": detail, "cycles": self._cycles,
                  "fallback_components": n_fallback, "fallback_reason": reason,
                  "inference_ms_p50": f"{np.percentile(lat, 50):.2f}",
                  "inference_ms_p99": f"{np.percentile(lat, 99):.2f}",
                  "inference_ms_max": f"{lat.max():.2f}", **self._events_values(),
                  **served_values(self.service.served_summary())}
        publish_diagnostics(self, self._diag_pub, [diagnostic_status(
            level, f"{self.get_fully_qualified_name()}: forecaster", text, "predictor",
            values)])


def served_values(summary: dict) -> dict[str, str]:
    """Diagnostic values ``served.<class>`` from ForecastService.served_summary()."""
    out = {}
    for klass, doc in sorted(summary.items()):
        bound = f", bound {doc['bound']:.2f}x" if doc["bound"] is not None else ", no bound"
        if doc["error_ratio"] is None:
            text = f"no forecast matured yet{bound}"
        else:
            text = (f"error {doc['error_ratio']:.3f}x persistence's over {doc['matured']} "
                    f"matured forecasts{bound}, {doc['mixed']} held closer to persistence")
        out[f"served.{klass}"] = f"{text}; serving {doc['serving']} when calm"
    return out


def main(args=None) -> int:
    return run_node(PredictorNode, "predictor", args, threads=1)


if __name__ == "__main__":
    import sys

    sys.exit(main())
