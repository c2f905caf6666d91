"""The `metrics_exporter` node: the rack's state for Prometheus at `/metrics`.

In: `power_allocation` (latched: per component measured power, allocation, held, floor,
ceiling; the rack's budget and mode), `power_forecast`, `component_health` (latched, one per
component) and `/diagnostics` (only the statuses of this rack's nodes: link states and the
actuator's latency). Never the 1 kHz `power_samples`: the allocation already carries each
component's measured power, at 10 Hz.

Out: an HTTP endpoint served by prometheus_client on its own thread, at
`http://<http.address>:<http.port>/metrics` (loopback by default: it has no authentication),
and one `/diagnostics` status a second saying where it serves and how old each input is. The
message-to-metric logic is :class:`rackpower_nodes.core.metrics.RackMetrics`; this node only
converts messages into its records. docs/metrics.md lists the metrics.
"""
from __future__ import annotations

import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from prometheus_client import start_http_server
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from rackpower.msg import ComponentHealth, PowerAllocation, PowerForecast
from rackpower_nodes.core.allocation import ForecastView
from rackpower_nodes.core.metrics import (
    TOPICS, AllocationRecord, ForecastRecord, HealthRecord, RackMetrics, StatusRecord)
from rackpower_nodes.core.metrics_exporter_config import (
    METRICS_EXPORTER_PARAMETERS, MetricsExporterConfig, metrics_exporter_config_from_params)
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.nodes.common import (
    declare_from_specs, diagnostic_status, forecast_qos, latched_qos, publish_diagnostics)
from rackpower_nodes.nodes.main import run_node

HEALTH_DEPTH = 256      # component_health keeps one message per component (transient local)


def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def _f64(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def allocation_record(msg: PowerAllocation) -> AllocationRecord:
    return AllocationRecord(
        stamp_unix=_stamp(msg.header), mode=msg.mode, mode_reason=msg.mode_reason,
        budget_w=msg.budget_w, breaker_w=msg.breaker_w, window_s=msg.window_s,
        channel_ids=tuple(msg.channel_ids), allocated_w=_f64(msg.allocated_w),
        measured_w=_f64(msg.measured_w), floor_w=_f64(msg.floor_w),
        ceiling_w=_f64(msg.ceiling_w), held_w=_f64(msg.held_w),
        total_allocated_w=msg.total_allocated_w, total_measured_w=msg.total_measured_w,
        slack_w=msg.slack_w, forecast_model=msg.forecast_model, pdu_written=msg.pdu_written,
        forecast_w=_f64(msg.forecast_w))


def forecast_record(msg: PowerForecast) -> ForecastRecord:
    """ValueError when the quantile arrays do not hold channels x horizon_steps values."""
    shape = (len(msg.channel_ids), int(msg.horizon_steps))
    try:
        quantiles = [_f64(q).reshape(shape) for q in (msg.p50_w, msg.p90_w, msg.p99_w)]
    except ValueError as exc:
        raise ValueError(f"quantile arrays of {len(msg.p50_w)}/{len(msg.p90_w)}/"
                         f"{len(msg.p99_w)} values do not fit {shape[0]} channels x "
                         f"{shape[1]} steps") from exc
    view = ForecastView(_stamp(msg.header), msg.step_s, *quantiles)
    return ForecastRecord(view, tuple(msg.channel_ids), msg.model_name, msg.model_version,
                          msg.fallback, msg.fallback_reason, msg.inference_ms)


def status_record(status: DiagnosticStatus) -> StatusRecord:
    level = status.level[0] if isinstance(status.level, bytes) else int(status.level)
    return StatusRecord(level, status.name, status.hardware_id, status.message,
                        {kv.key: kv.value for kv in status.values})


class MetricsExporterNode(Node):
    """Subscribes the rack's state topics and serves them as Prometheus metrics."""

    def __init__(self, **kwargs):
        super().__init__("metrics_exporter", **kwargs)
        self.config: MetricsExporterConfig = metrics_exporter_config_from_params(
            declare_from_specs(self, METRICS_EXPORTER_PARAMETERS))
        cfg = self.config
        namespace = self.get_namespace().rstrip("/")
        self._diag_prefix = f"{namespace}/"           # this rack's nodes' statuses
        self.rack = cfg.rack or namespace.strip("/") or "default"
        self.metrics = RackMetrics(self.rack, cfg.lead_s, cfg.window_s)
        self._bad_forecast = ""
        self.create_subscription(PowerAllocation, "power_allocation", self._on_allocation,
                                 latched_qos())
        self.create_subscription(PowerForecast, "power_forecast", self._on_forecast,
                                 forecast_qos())
        self.create_subscription(
            ComponentHealth, "component_health",
            lambda msg: self.metrics.on_health(HealthRecord(
                _stamp(msg.header), msg.component_id, msg.state, msg.score, msg.cause,
                msg.sensor_fault)),
            QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=HEALTH_DEPTH,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        try:
            self._server, self._thread = start_http_server(cfg.port, cfg.address,
                                                           self.metrics.registry)
        except OSError as exc:
            raise ConfigError(f"http.port = {cfg.port}, http.address = {cfg.address!r}: "
                              f"cannot listen there ({exc.strerror or exc})") from exc
        self.port = self._server.server_port
        self.url = f"http://{cfg.address}:{self.port}/metrics"
        self.get_logger().info(f"serving rack {self.rack!r} metrics at {self.url}")

    def _on_allocation(self, msg: PowerAllocation) -> None:
        self.metrics.on_allocation(allocation_record(msg))

    def _on_forecast(self, msg: PowerForecast) -> None:
        try:
            record = forecast_record(msg)
        except ValueError as exc:
            if str(exc) != self._bad_forecast:       # once per distinct error, not per message
                self.get_logger().warning(f"power_forecast dropped: {exc}")
            self._bad_forecast = str(exc)
            return
        self._bad_forecast = ""
        self.metrics.on_forecast(record)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        mine = [status_record(s) for s in msg.status if s.name.startswith(self._diag_prefix)
                and not s.name.startswith(self.get_fully_qualified_name() + ":")]
        if mine:
            self.metrics.on_diagnostics(mine)

    def _publish_diagnostics(self) -> None:
        ages = self.metrics.input_ages()
        silent = [t for t in TOPICS if not math.isfinite(ages[t])]
        level, text = ((DiagnosticStatus.WARN, f"serving {self.url}; nothing yet on "
                        f"{', '.join(silent)}") if silent
                       else (DiagnosticStatus.OK, f"serving {self.url}"))
        values = {"url": self.url, "rack": self.rack,
                  **{f"{t}_age_s": f"{a:.2f}" for t, a in ages.items()}}
        publish_diagnostics(self, self._diag_pub, [diagnostic_status(
            level, f"{self.get_fully_qualified_name()}: endpoint", text, "metrics_exporter",
            values)])

    def destroy_node(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None
        super().destroy_node()


def main(args=None) -> int:
    return run_node(MetricsExporterNode, "metrics_exporter", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
