"""The `health_monitor` node: `power_samples`, `host_telemetry` and `workload_events` in, one
`ComponentHealth` per component on `component_health` and `/diagnostics` out.

The input subscriptions feed a :class:`~rackpower_nodes.core.health.stream.HealthStream`
(per-second rows of each component's board power and its host's telemetry); a timer pops the
complete seconds (every `publish.period_s`), hands them to the core's
:class:`~rackpower_nodes.core.health.monitor.HealthMonitor` and publishes a component's newest
verdict at once when its state or cause changed (or it went stale or came back), otherwise
every `publish.refresh_s` with its newest score and evidence
(:class:`~rackpower_nodes.core.health.publishing.ChangeGate`). `component_health` is latched
(reliable, transient local, depth = the number of components), so a late subscriber gets each
component's newest message at once. `/diagnostics` carries every component every period.

In `/diagnostics` each component is one status: OK (ok), WARN (watch), ERROR (fault), the
message naming the suspected cause and the values the evidence. A component without a power
sample for `inputs.stale_after_s` is STALE: its verdict is not refreshed and the status says
since when nothing came (a component never heard from is STALE too, never a silent OK).

With `reference.enabled` a thread of its own reads each component's outlet power register
from its PDU (read only, `drivers.pdu_reference`) as the independent meter the board is checked
against (`ref_w`: sensor offset and gain); the diagnostics say per PDU how the last read went.
With `psu_meters.enabled` another thread reads each component's PSU meters from its BMC
(Redfish `Power.PowerSupplies[]`, read only, `drivers.psu_meter_reader`) every
`psu_meters.period_s` (10 s) into `psu_in_w` / `psu_out_w` (the PSU-efficiency detector);
`/diagnostics` has one status per BMC (OK, WARN naming the error, STALE when no reading came
for `psu_meters.stale_after_s`) and each component's chassis state.

Without `health.model_path` only the checks that need no learned baseline run (stuck channel,
dropouts, board vs reference; the message's `baseline_learned` is false). With
`health.learn_s` > 0 the node then learns a baseline online
(:class:`~rackpower_nodes.core.health.online.OnlineLearner`: that many clean seconds, a
component's seconds in watch or fault left out, fitted in a child process and saved under
`health.learn_dir`) and switches to it, keeping the physical checks' state.

One thread spins every callback (`run_node(threads=1)`: rclpy's events executor); nothing on
it blocks for long: the reference and PSU meter reads have their threads, the learner's fit
its process (started from a thread of its own), and a cycle is a few vectorised updates.
"""
from __future__ import annotations

import math
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from rackpower.msg import ComponentHealth, HostTelemetry, PowerSamples, WorkloadEvents
from rackpower_nodes.core.health import HealthVerdict
from rackpower_nodes.core.health.publishing import ChangeGate
from rackpower_nodes.core.health.stream import HealthStream, HealthStreamError
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.health_monitor_config import (
    HEALTH_MONITOR_PARAMETERS, HealthMonitorConfig, health_monitor_config_from_params,
    health_parameter_specs)
from rackpower_nodes.nodes.common import (
    declare_from_specs, diagnostic_status, float32_array, latched_qos, publish_diagnostics,
    samples_qos)
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.workload_msgs import WorkloadEventsError, events_from_msg

LEVELS = {"ok": DiagnosticStatus.OK, "watch": DiagnosticStatus.WARN,
          "fault": DiagnosticStatus.ERROR}


def health_qos(components: int) -> QoSProfile:
    """component_health: latest state per component: reliable, transient local, depth = the
    number of components (each cycle publishes every one, so a late subscriber gets all)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, components),
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _stamp(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def to_message(v: HealthVerdict, t_unix: float, learned: bool, frame_id: str,
               extra: dict[str, float]) -> ComponentHealth:
    msg = ComponentHealth(component_id=v.component, state=v.state, score=float(v.score),
                          cause=v.cause, sensor_fault=v.sensor_fault,
                          since_unix=float(v.since_unix), baseline_learned=bool(learned))
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t_unix * 1e9), 10**9)
    evidence = {**v.evidence, **extra}
    msg.evidence_names = list(evidence)
    msg.evidence_values = float32_array(list(evidence.values()))
    return msg


def _when(t_unix: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(t_unix)) if math.isfinite(t_unix) else "?"


def status_text(v: HealthVerdict | None, age_s: float, stale_after_s: float) -> tuple[str, str]:
    """(level name, message) of one component's diagnostics: ok, watch, fault or stale."""
    if v is None:
        what = "no power sample yet" if not math.isfinite(age_s) else "not judged yet"
        return "stale", f"stale: {what}"
    if v.state == "fault":
        whose = " (the sensor, not the component)" if v.sensor_fault else ""
        said = f"fault: {v.cause}{whose} since {_when(v.since_unix)} (score {v.score:.2f})"
    elif v.state == "watch":
        said = f"watch: {v.cause or 'evidence building up'} (score {v.score:.2f})"
    else:
        said = "ok"
    if age_s > stale_after_s:
        age = f"{age_s:.0f} s" if math.isfinite(age_s) else "ever"
        return ("fault" if v.state == "fault" else "stale"), \
            f"stale: no power sample for {age}; last verdict {said}"
    return v.state, said


class HealthMonitorNode(Node):
    """Judges each component's health from its power draw and publishes it."""

    def __init__(self, **kwargs):
        super().__init__("health_monitor", **kwargs)
        self.config: HealthMonitorConfig = health_monitor_config_from_params(
            declare_from_specs(self, HEALTH_MONITOR_PARAMETERS + health_parameter_specs()))
        cfg = self.config
        self._lock = threading.Lock()           # the stream: the reference thread pushes too
        self.stream = HealthStream(cfg.names, cfg.kinds, cfg.late_s, cfg.telemetry_hold_s,
                                   cfg.events_stale_after_s)
        self.monitor, self._model_state = self._make_monitor(cfg)
        self.learner = None
        if self.monitor.model is None and cfg.learn_s > 0:
            from rackpower_nodes.core.health.online import OnlineLearner

            folder = cfg.learn_dir or Path(tempfile.gettempdir()) / "rackpower-health"
            self.learner = OnlineLearner(cfg.learn_s, dict(cfg.health_values), folder)
        self.verdicts: dict[str, tuple[HealthVerdict, float]] = {}    # (verdict, row end)
        self._events_error = ""
        self._cycles = 0
        self._gate = ChangeGate(cfg.refresh_s)
        self.create_subscription(PowerSamples, "power_samples", self._on_samples,
                                 samples_qos(0.25))
        self.create_subscription(HostTelemetry, "host_telemetry", self._on_telemetry,
                                 samples_qos(2.0))
        self.create_subscription(WorkloadEvents, "workload_events", self._on_events,
                                 latched_qos())
        self._pub = self.create_publisher(ComponentHealth, "component_health",
                                          health_qos(len(cfg.names)))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(cfg.period_s, self._cycle)
        self._reference = None
        if cfg.reference_pdus:                  # pymodbus only where a PDU is read
            from rackpower_nodes.drivers.pdu_reference import ReferenceReader

            self._reference = ReferenceReader(cfg.reference_pdus, cfg.reference_period_s,
                                              cfg.reference_timeout_s,
                                              self._push_reference).start()
        self._psu_meters = None
        if cfg.psu_meters is not None:          # the redfish library only where BMCs are read
            from rackpower_nodes.drivers.psu_meter_reader import PsuMeterReader

            self._psu_meters = PsuMeterReader(cfg.psu_meters, cfg.psu_meters.password(),
                                              self._push_psu).start()

    def destroy_node(self) -> None:
        if self._reference is not None:
            self._reference.stop()
        if self._psu_meters is not None:
            self._psu_meters.stop()
        if self.learner is not None:
            self.learner.close()
        super().destroy_node()

    def _push_reference(self, t_unix: float, power_w: dict[str, float]) -> None:
        with self._lock:
            self.stream.push_reference(t_unix, power_w)

    def _push_psu(self, t_unix: float, power_w: dict[str, tuple[float, float]]) -> None:
        with self._lock:
            self.stream.push_psu(t_unix, power_w)

    def _make_monitor(self, cfg: HealthMonitorConfig):
        """The core monitor, with the learned baseline of ``health.model_path`` when set (a
        file that cannot be loaded, or one learned for other components, stops the node)."""
        from rackpower_nodes.core.health.monitor import HealthModel, HealthMonitor

        model, state = None, "none: the physical checks only"
        try:
            if cfg.model_path:
                model = HealthModel.load(cfg.model_path)
                state = f"loaded from {cfg.model_path}"
            monitor = HealthMonitor(cfg.names, cfg.kinds, model, cfg.health)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"health.model_path = {cfg.model_path!r}: cannot use the "
                              f"health model: {exc}") from exc
        self.get_logger().info(f"health model: {state}")
        return monitor, state

    # -- inputs ---------------------------------------------------------------------------------

    def _on_samples(self, msg: PowerSamples) -> None:
        n, k = len(msg.channel_ids), int(msg.sample_count)
        current = np.asarray(msg.current_a, dtype=np.float32)
        if n == 0 or k == 0 or current.size != n * k or len(msg.voltage_v) != n:
            return                                  # a batch without raw samples: nothing
        try:
            with self._lock:
                self.stream.push_samples(_stamp(msg.header), msg.sample_period_s,
                                         list(msg.channel_ids), current.reshape(n, k),
                                         np.asarray(msg.voltage_v))
        except HealthStreamError as exc:
            self.get_logger().warning(f"power_samples batch dropped: {exc}",
                                      throttle_duration_sec=10.0)

    def _on_telemetry(self, msg: HostTelemetry) -> None:
        hosts = {h.host_id: (h.cpu_util, h.disk_read_bps + h.disk_write_bps,
                             h.net_rx_bps + h.net_tx_bps, h.up and not h.stale)
                 for h in msg.hosts}
        with self._lock:
            self.stream.push_telemetry(_stamp(msg.header), hosts)

    def _on_events(self, msg: WorkloadEvents) -> None:
        try:
            events = events_from_msg(msg)
        except WorkloadEventsError as exc:
            if str(exc) != self._events_error:
                self.get_logger().warning(f"workload_events from {msg.source!r} dropped: {exc}")
            self._events_error = str(exc)
            return
        self._events_error = ""
        running = {h for j in events.jobs if j.state == "running" for h in j.hosts}
        with self._lock:
            self.stream.push_jobs(events.stamp_unix, running)

    # -- the cycle ------------------------------------------------------------------------------

    def _cycle(self) -> None:
        now = time.time()
        with self._lock:
            frame = self.stream.pop(now)
            last = self.stream.last_sample_unix.copy()
        # s since each component's newest sample (inf: never; 0 for a stamp a little ahead
        # of this clock)
        ages = np.where(np.isfinite(last), np.clip(now - last, 0.0, None), np.inf)
        stale = ages > self.config.stale_after_s
        if frame is not None:
            end = frame.t_unix[-1] + 1.0
            verdicts = self.monitor.update(frame)           # in names order
            for v, is_stale in zip(verdicts, stale):
                if not is_stale:
                    self.verdicts[v.component] = (v, end)
            if self.learner is not None:
                self.learner.add(frame, verdicts)
        if self.learner is not None:
            self._learned_model()
        self._cycles += 1
        learned = self.monitor.learned
        cfg_stale = self.config.stale_after_s
        for name, age in zip(self.config.names, ages):
            if name in self.verdicts:
                v, end = self.verdicts[name]
                if not self._gate.due(name, (v.state, v.cause, bool(age > cfg_stale)), now):
                    continue
                self._pub.publish(to_message(v, end, learned, self.config.frame_id,
                                             {"samples_age_s": min(float(age), 1e9)}))
        self._publish_diagnostics(ages, learned)

    def _learned_model(self) -> None:
        """Switch to the model the learner fitted, once it is ready (the physical checks
        carry on with their state)."""
        model = self.learner.poll()
        if self.learner.done:
            self._model_state = self.learner.state
            (self.get_logger().info if model is not None else self.get_logger().error)(
                f"health model: {self.learner.state}")
            self.learner = None
        if model is None:
            return
        from rackpower_nodes.core.health.monitor import HealthMonitor

        cfg, old = self.config, self.monitor
        self.monitor = HealthMonitor(cfg.names, cfg.kinds, model, cfg.health)
        self.monitor.checks = old.checks

    def _publish_diagnostics(self, ages: np.ndarray, learned: bool) -> None:
        cfg, statuses = self.config, []
        levels = {**LEVELS, "stale": DiagnosticStatus.STALE}
        model = self.learner.state if self.learner else self._model_state
        reference = self._reference.state() if self._reference else "none"
        psu = self._psu_meters
        now = time.time()
        for i, name in enumerate(cfg.names):
            v, _ = self.verdicts.get(name, (None, math.nan))
            state, text = status_text(v, float(ages[i]), cfg.stale_after_s)
            values = {"state": state, "cause": v.cause if v else "",
                      "score": f"{v.score:.3f}" if v else "",
                      "since": _when(v.since_unix) if v and v.state != "ok" else "",
                      "samples_age_s": f"{ages[i]:.1f}", "baseline_learned": learned,
                      "model": model, "reference": reference,
                      **({"psu_meter": psu.chassis_state(name, now) or "none"} if psu else {}),
                      "late_values_dropped": self.stream.late_dropped,
                      **({k: f"{x:.4g}" for k, x in v.evidence.items()} if v else {})}
            statuses.append(diagnostic_status(
                levels[state], f"{self.get_fully_qualified_name()}: {name}", text, name,
                values))
        for bmc in (psu.bmc_status(now) if psu else ()):
            statuses.append(diagnostic_status(
                levels[bmc.level if bmc.level != "warn" else "watch"],
                f"{self.get_fully_qualified_name()}: PSU meters {bmc.bmc}", bmc.message,
                bmc.bmc, {"reads": psu.reads, **bmc.chassis}))
        publish_diagnostics(self, self._diag_pub, statuses)


def main(args=None) -> int:
    return run_node(HealthMonitorNode, "health_monitor", args, threads=1)


if __name__ == "__main__":
    import sys

    sys.exit(main())
