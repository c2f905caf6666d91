"""The `current_sensor` node: the sensor board's frames in, `PowerSamples` batches out.

A reader thread (never the executor) reads the serial link, decodes frames and publishes each
batch as soon as it is complete, so a batch leaves within a read of its newest frame. Reads are
paced (`read_interval_s`: a fifth of the batch period, at most 20 ms; 20 ms at 10 Hz batches,
twenty 1 kHz frames a read instead of one, 10 ms at 20 Hz): a batch leaves at most that much
later than unpaced. Each read has a fixed cost (a wake-up, a decode, a conversion), which was
most of the node's CPU at 10 ms. The executor only runs the diagnostics timer. Parameters are
declared from the table in `core.sensor_config` (see `ros2 param describe`), all read-only;
the config is validated once at start and a bad one stops the node with a message that names
the key.
"""
from __future__ import annotations

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node

from rackpower.msg import PowerSamples
from rackpower_nodes.core.acquisition import Acquisition, SampleBatch
from rackpower_nodes.core.sensor_config import (
    SENSOR_PARAMETERS, SensorConfig, sensor_config_from_params)
from rackpower_nodes.drivers.port_reader import PortReader, PortState
from rackpower_nodes.drivers.serial_port import PySerialPort
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.common import (declare_from_specs, diagnostic_status, float32_array,
    publish_diagnostics, publish_unless_shut_down, samples_qos)

DIAGNOSTICS_PERIOD_S = 1.0
READ_INTERVAL_MAX_S = 0.020   # longest pacing of the serial reads that return data, s
READ_INTERVAL_SHARE = 0.2     # ... and at most this share of the batch period


def read_interval_s(publish_rate_hz: float) -> float:
    """Shortest time between two serial reads that return data, s: a fifth of the batch
    period, at most READ_INTERVAL_MAX_S."""
    return min(READ_INTERVAL_MAX_S, READ_INTERVAL_SHARE / publish_rate_hz)


def to_message(batch: SampleBatch, frame_id: str) -> PowerSamples:
    """Convert a core batch to the ROS message (arrays channel-major, float32)."""
    msg = PowerSamples()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(batch.stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.sample_period_s = batch.sample_period_s
    msg.sample_count = batch.sample_count
    msg.first_sequence = batch.first_sequence
    msg.first_board_time_us = batch.first_board_time_us
    msg.channel_ids = list(batch.components)
    msg.current_a = float32_array(batch.current_a)
    msg.voltage_v = float32_array(batch.voltage_v)
    msg.mean_power_w = float32_array(batch.mean_power_w)
    msg.peak_power_w = float32_array(batch.peak_power_w)
    msg.total_power_w = float(batch.mean_power_w.sum())
    msg.frames_lost = batch.frames_lost
    return msg


class CurrentSensorNode(Node):
    """Reads the sensor board and publishes `power_samples` and `/diagnostics`."""

    def __init__(self, **kwargs):
        super().__init__("current_sensor", **kwargs)
        self.config: SensorConfig = sensor_config_from_params(
            declare_from_specs(self, SENSOR_PARAMETERS))
        self._acq = Acquisition(self.config)
        self._pub = self.create_publisher(
            PowerSamples, "power_samples", samples_qos(self.config.deadline_s))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._state = PortState("connecting", "", time.time_ns(), 0)
        self._lock = threading.Lock()
        self._rate_window = (time.monotonic(), 0)
        cfg = self.config
        self._reader = PortReader(
            PySerialPort(cfg.port, cfg.baudrate, cfg.read_timeout_s),
            self._on_data, self._on_state, cfg.reconnect_initial_s, cfg.reconnect_max_s,
            (cfg.sched_priority, cfg.cpu_affinity, cfg.lock_memory),
            read_interval_s(cfg.publish_rate_hz))
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self._reader.start()
        self.get_logger().info(
            f"reading {cfg.port}: {cfg.board_channels} channels {cfg.sample_format} at "
            f"{cfg.frame_rate_hz:g} Hz, {len(cfg.channels)} components, batches of "
            f"{self._acq.frames_per_batch} frames")

    @property
    def acquisition(self) -> Acquisition:
        return self._acq

    def _on_data(self, data: bytes, host_ns: int) -> None:
        """Reader thread: decode and publish every batch this read completes."""
        with self._lock:
            batches = self._acq.ingest(data, host_ns)
        for batch in batches:
            if not publish_unless_shut_down(self, self._pub,
                                            to_message(batch, self.config.frame_id)):
                return                      # shutting down: the reader stops next

    def _on_state(self, state: PortState) -> None:
        """Reader thread: the link changed state; publish what was pending when it drops."""
        previous, self._state = self._state, state
        if state.state == previous.state and state.detail == previous.detail:
            return
        log = self.get_logger()
        if state.state == "disconnected":
            with self._lock:
                batch = self._acq.flush(time.time_ns())
                self._acq.port_reset()
            if batch is not None:
                publish_unless_shut_down(self, self._pub,
                                         to_message(batch, self.config.frame_id))
            log.warning(f"sensor board link lost: {state.detail}; reconnecting")
        elif state.state == "open":
            log.info(f"sensor board link open on {self.config.port}")

    def _publish_diagnostics(self) -> None:
        stats = self._acq.stats()
        now_mono, now_ns = time.monotonic(), time.time_ns()
        then, frames_then = self._rate_window
        self._rate_window = (now_mono, stats.frames)
        rate = (stats.frames - frames_then) / max(now_mono - then, 1e-9)
        age = (now_ns - stats.last_frame_host_ns) * 1e-9 if stats.last_frame_host_ns else -1.0
        level, message = self._health(rate, age)
        values = {
            "port": self.config.port, "port_state": self._state.state,
            "port_detail": self._state.detail, "reconnects": self._state.reconnects,
            "frame_rate_hz": f"{rate:.1f}", "expected_frame_rate_hz": self.config.frame_rate_hz,
            "frames": stats.frames, "crc_errors": stats.crc_errors,
            "header_errors": stats.header_errors, "sequence_gaps": stats.sequence_gaps,
            "frames_lost": stats.frames_lost, "bytes_discarded": stats.bytes_discarded,
            "board_restarts": stats.board_restarts, "batches": stats.batches,
            "last_frame_age_s": f"{age:.3f}",
            "clock_offset_ms": f"{stats.clock_offset_ns * 1e-6:.3f}",
            "clock_drift_ppm": f"{stats.clock_drift_ppm:.2f}",
            "voltage_source": stats.voltage_source,
        }
        for report in self._reader.realtime_reports:
            values[f"realtime.{report.setting}"] = report.detail
        publish_diagnostics(self, self._diag_pub, [diagnostic_status(
            level, f"{self.get_fully_qualified_name()}: sensor board", message,
            self.config.port, values)])

    def _health(self, rate_hz: float, age_s: float) -> tuple[bytes, str]:
        if self._state.state != "open":
            detail = f": {self._state.detail}" if self._state.detail else ""
            return DiagnosticStatus.ERROR, f"port {self._state.state}{detail}"
        if age_s < 0 or age_s > 1.0:
            return DiagnosticStatus.ERROR, "port open but no frames"
        if rate_hz < 0.9 * self.config.frame_rate_hz:
            return DiagnosticStatus.WARN, f"frame rate {rate_hz:.0f} Hz below expected"
        return DiagnosticStatus.OK, "receiving"

    def destroy_node(self) -> None:
        self._reader.stop()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(CurrentSensorNode, "current_sensor", args)


if __name__ == "__main__":
    sys.exit(main())
