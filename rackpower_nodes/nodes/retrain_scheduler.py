"""The `retrain_scheduler` node: retrains the forecaster off-peak and announces promotions.

Reads `power_samples` (the rack load: the sum of mean_power_w, for the load rule),
`allocation_error` (kept to weight the next training set) and `component_health` (the health
model's per-component states, latched: intervals in state fault, start = since_unix, end = back
to ok, kept for `bags.max_span_s` and saved in the registry's fault_intervals.json across
restarts, are passed to the job, which leaves their windows out of training and judging and
lists them in the model's metadata); checks the off-peak policy every
`policy.check_period_s`; runs the pipeline of core/retrain/, whose training job is its own
niced process that a timer polls, so the executor never waits for it. A promotion (or a
rollback) is announced on `model_update`, latched (reliable, transient local, depth 1); on
start the registry's model in service is announced the same way, so a restarted predictor
gets it. Services (std_srvs/Trigger): `~/retrain_now` (ignores the policy), `~/rollback`.
A failed job, a broken bag or a broken registry is reported in the diagnostics and the log;
the champion stays in service.
"""
from __future__ import annotations

import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from std_srvs.srv import Trigger

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from rackpower.msg import AllocationError, ComponentHealth, ModelUpdate, PowerSamples
from rackpower_nodes.core.forecast.messages import stamp_unix
from rackpower_nodes.core.model_registry import ModelRegistry, RegistryError
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.retrain import (FaultTracker, OffPeakGate, Outcome, RetrainError,
    RetrainPipeline, load_flags, save_flags)
from rackpower_nodes.core.retrain_config import (
    RETRAIN_PARAMETERS, RetrainConfig, retrain_config_from_params)
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.common import (declare_from_specs, diagnostic_status, errors_qos,
    latched_qos, publish_diagnostics, samples_qos)

POLL_PERIOD_S = 0.5
FAULTS_FILE = "fault_intervals.json"    # in the registry folder: the intervals, across restarts
#: component_health is latched with one message per component: a late joiner needs a depth of
#: at least the rack's component count to get every component's newest state
HEALTH_DEPTH = 256


def health_qos() -> QoSProfile:
    """component_health: reliable, transient local (matching the health monitor's latched
    publisher), keep last HEALTH_DEPTH."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=HEALTH_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class RetrainSchedulerNode(Node):
    """Decides when to retrain, runs the job, promotes or rejects, announces the result."""

    def __init__(self, **kwargs):
        super().__init__("retrain_scheduler", **kwargs)
        self.config: RetrainConfig = retrain_config_from_params(
            declare_from_specs(self, RETRAIN_PARAMETERS))
        try:
            self.registry = ModelRegistry(self.config.registry_root)
        except (RegistryError, OSError) as exc:
            raise ConfigError(f"registry.root = {self.config.registry_root!r}: {exc}") from exc
        self.gate = OffPeakGate(self.config.policy)
        self.pipeline = RetrainPipeline(self.registry, self.config.settings)
        self.errors: deque[tuple[float, str, float]] = deque(maxlen=self.config.keep_errors)
        self.faults = FaultTracker(self.config.flag_keep_s, self.config.max_flags)
        self.faults_file = self.registry.root / FAULTS_FILE
        try:
            self.faults.restore(load_flags(self.faults_file))
        except RetrainError as exc:             # a torn file loses the history, not the node
            self.get_logger().error(f"{exc}; starting without earlier fault intervals")
        self.state, self.why = "idle", "starting"
        self.last_result, self.last_error = "none yet", ""
        self.last_attempt = self._newest_registration()
        group = MutuallyExclusiveCallbackGroup()
        self._updates = self.create_publisher(ModelUpdate, "model_update", latched_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(PowerSamples, "power_samples", self._on_samples,
                                 samples_qos(1.0), callback_group=group)
        self.create_subscription(AllocationError, "allocation_error", self._on_error,
                                 errors_qos(), callback_group=group)
        self.create_subscription(ComponentHealth, "component_health", self._on_health,
                                 health_qos(), callback_group=group)
        self.create_service(Trigger, "~/retrain_now", self._on_retrain_now, callback_group=group)
        self.create_service(Trigger, "~/rollback", self._on_rollback, callback_group=group)
        self.create_timer(self.config.check_period_s, self._check_policy, callback_group=group)
        self.create_timer(POLL_PERIOD_S, self._poll_job, callback_group=group)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=group)
        current = self.registry.current()
        if current is not None:
            self._announce(current, "startup")
        self._check_policy()

    # --- inputs --------------------------------------------------------------------------
    def _on_samples(self, msg: PowerSamples) -> None:
        self.gate.push_load(time.time(), float(sum(msg.mean_power_w)))

    def _on_error(self, msg: AllocationError) -> None:
        err = float(msg.error_w)
        if err == err:                                   # NaN: no forecast to blame
            self.errors.append((stamp_unix(msg.header.stamp), msg.channel_id, abs(err)))

    def _on_health(self, msg: ComponentHealth) -> None:
        now = stamp_unix(msg.header.stamp) or time.time()
        if self.faults.update(msg.component_id, msg.state, msg.cause, float(msg.since_unix),
                              now):
            try:
                save_flags(self.faults_file, self.faults.intervals())
            except OSError as exc:
                self.last_error = f"{self.faults_file}: cannot write ({exc})"

    # --- deciding and running ------------------------------------------------------------
    def _check_policy(self) -> None:
        if self.pipeline.running:
            return
        ok, why = self.gate.check(time.time(), self.last_attempt)
        self.state, self.why = ("idle", why) if ok else ("waiting for off-peak", why)
        if ok:
            self._start(f"policy ({why})")

    def _start(self, trigger: str) -> tuple[bool, str]:
        self.last_attempt = time.time()
        try:
            job = self.pipeline.start(list(self.errors), flagged=self.faults.intervals())
        except (RetrainError, RegistryError, OSError) as exc:
            self.last_error = f"cannot start a retrain ({trigger}): {exc}"
            self.last_result = "failed to start"
            self.get_logger().error(self.last_error + "; the champion stays in service")
            return False, self.last_error
        self.state, self.why = "training", trigger
        text = (f"retrain started ({trigger}) in {job.workdir}, "
                f"{len(job.request['flagged'])} fault interval(s) left out")
        self.get_logger().info(text)
        return True, text

    def _poll_job(self) -> None:
        if not self.pipeline.running:
            return
        try:
            outcome = self.pipeline.poll()
        except (RegistryError, RetrainError, OSError, KeyError) as exc:
            self.pipeline.cancel()
            self._finish(Outcome("failed", "", f"registry: {exc}", {}))
            return
        if outcome is None:
            stage = self.pipeline.stage()
            self.state = "evaluating" if stage == "evaluating" else "training"
            return
        self._finish(outcome)

    def _finish(self, outcome: Outcome) -> None:
        self.state, self.why = "idle", f"last retrain {outcome.status}"
        self.last_result = f"{outcome.status} {outcome.version}: {outcome.reason}".strip()
        if outcome.status == "failed":
            self.last_error = outcome.reason
            self.get_logger().error(f"retrain failed: {outcome.reason}; the champion stays")
            return
        self.get_logger().info(f"retrain {self.last_result}")
        if outcome.status == "promoted":
            self._announce(self.registry.entry(outcome.version), "promoted")

    def _announce(self, entry: dict, reason: str) -> None:
        msg = ModelUpdate(model_path=str(self.registry.root / entry["path"]),
                          model_name=entry["model_name"], version=entry["model_version"],
                          reason=reason)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._updates.publish(msg)
        self.get_logger().info(f"model_update: {entry['version']} ({reason})")

    # --- services ------------------------------------------------------------------------
    def _on_retrain_now(self, _request, response):
        if self.pipeline.running:
            response.success = False
            response.message = f"a retrain job is running ({self.pipeline.stage()})"
        else:
            response.success, response.message = self._start("operator: ~/retrain_now")
        return response

    def _on_rollback(self, _request, response):
        try:
            entry = self.registry.rollback(reason="operator: ~/rollback")
        except RegistryError as exc:
            self.last_error = f"rollback: {exc}"
            response.success, response.message = False, str(exc)
            return response
        self._announce(entry, "rollback")
        self.last_result = f"rolled back to {entry['version']}"
        response.success, response.message = True, f"in service: {entry['version']}"
        return response

    # --- reporting -----------------------------------------------------------------------
    def _newest_registration(self) -> float | None:
        times = [e.get("created_unix", 0.0) for e in self.registry.entries().values()]
        return max(times) if times else None

    def _publish_diagnostics(self) -> None:
        try:
            current = self.registry.current()
            champion = current["version"] if current else "none"
        except RegistryError as exc:
            champion, self.last_error = "unknown", str(exc)
        failed = self.last_result.startswith("failed")
        level = DiagnosticStatus.WARN if failed else DiagnosticStatus.OK
        values = {"state": self.state, "detail": self.why, "last_result": self.last_result,
                  "champion_version": champion, "last_error": self.last_error or "none",
                  "errors_logged": len(self.errors),
                  "fault_intervals": len(self.faults.intervals()),
                  "last_attempt_unix": f"{self.last_attempt or 0.0:.0f}"}
        publish_diagnostics(self, self._diag_pub, [diagnostic_status(
            level, f"{self.get_fully_qualified_name()}: retraining",
            f"{self.state}; champion {champion}", "retrain_scheduler", values)])

    def destroy_node(self) -> None:
        self.pipeline.cancel()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(RetrainSchedulerNode, "retrain_scheduler", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
