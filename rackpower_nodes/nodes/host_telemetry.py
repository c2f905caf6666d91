"""The `host_telemetry` node: node_exporter endpoints in, `HostTelemetry` and
`WorkloadEvents` out.

A poll thread the node owns (never the executor) polls every configured host concurrently
(each with its own timeout), turns counters into rates, adds calendar features and the known
workload schedule, and publishes one `HostTelemetry` per poll with sensor-data QoS and a
deadline. Per-host diagnostics say whether each host is reachable or stale, and why not. The
executor runs only a 1 Hz check that re-raises a crash of that thread (the process then ends
with its traceback, exit code 1), so the node spins on one thread (`threads=1`). At shutdown
the poll in progress is abandoned within about 0.1 s, whatever the hosts do: scrapes still
waiting on an unresponsive exporter end by their own timeouts and publish nothing.

`workload_events` (latest state: reliable, transient local, depth 1) carries what the workload
source (`workload.source`: the schedule, Slurm's queue, or none) says runs now and will run
where, at `workload.rate_hz`. The source is asked on a thread of its own, so a slow `squeue`
never holds the executor; a failed poll publishes nothing new (the last snapshot's stamp tells
its age), is logged once per kind of failure and shows as WARN on /diagnostics.
"""
from __future__ import annotations

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node

from rackpower.msg import HostMetrics, HostTelemetry, WorkloadEvents
from rackpower_nodes.core.schedule import ScheduleError, WorkloadSchedule
from rackpower_nodes.core.telemetry import (
    HostTarget, LocalHostReader, TelemetryCollector, calendar_features)
from rackpower_nodes.core.telemetry_config import (
    TELEMETRY_PARAMETERS, TelemetryConfig, telemetry_config_from_params)
from rackpower_nodes.core.workload_events import WorkloadEventsError
from rackpower_nodes.sources.slurm import SlurmError, SlurmQueue
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.common import (declare_from_specs, diagnostic_status, latched_qos,
    publish_unless_shut_down, samples_qos)
from rackpower_nodes.nodes.workload_msgs import events_to_msg

NAN = float("nan")
POLL_JOIN_S = 2.0        # longest destroy_node() waits for the poll thread, s
CHECK_PERIOD_S = 1.0     # how often the executor looks whether the poll thread crashed, s
_RATE_FIELDS = ("cpu_util", "mem_used_fraction", "mem_used_bytes", "net_rx_bps", "net_tx_bps",
                "disk_read_bps", "disk_write_bps")


class HostTelemetryNode(Node):
    """Scrapes hosts and publishes `host_telemetry` and `/diagnostics`."""

    def __init__(self, **kwargs):
        super().__init__("host_telemetry", **kwargs)
        self.config: TelemetryConfig = telemetry_config_from_params(
            declare_from_specs(self, TELEMETRY_PARAMETERS))
        cfg = self.config
        self._schedule = (WorkloadSchedule.from_file(cfg.schedule_file)
                          if cfg.schedule_file else None)
        self._collector = TelemetryCollector(
            [HostTarget(name, url, cfg.timeout_s, cfg.max_body_bytes) for name, url in cfg.hosts],
            stale_after_s=cfg.stale_after_s)
        self._local = LocalHostReader(cfg.local_host) if cfg.local_host else None
        self._pub = self.create_publisher(
            HostTelemetry, "host_telemetry", samples_qos(cfg.deadline_s))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._stop = threading.Event()
        self._poll_failure: BaseException | None = None
        self._poller = threading.Thread(target=self._run_polls, name="telemetry-poll",
                                        daemon=True)
        self.create_timer(CHECK_PERIOD_S, self._check_poller)
        self.get_logger().info(
            f"polling {len(cfg.hosts)} hosts at {cfg.poll_rate_hz:g} Hz"
            + (f" plus the local host as {cfg.local_host}" if cfg.local_host else ""))
        # advertised whatever the source, so the recorder finds the topic (none: no messages)
        self._events_pub = self.create_publisher(WorkloadEvents, "workload_events",
                                                 latched_qos())
        self._workload = WorkloadPoller(self, self._events_pub, self._workload_reader())
        self._poller.start()

    def _workload_reader(self):
        """The source's `() -> core WorkloadEvents`, or None for `none`."""
        wl = self.config.workload
        if wl.source == "schedule":
            return lambda: self._schedule.events_at(time.time(), wl.lookahead_s)
        if wl.source == "slurm":
            queue = SlurmQueue(wl.slurm_command, wl.slurm_timeout_s,
                               start_command=wl.slurm_start_command or None,
                               nodes_command=wl.slurm_nodes_command or None,
                               env={"SLURM_CONF": wl.slurm_conf} if wl.slurm_conf else None)
            return queue.poll
        return None

    def _run_polls(self) -> None:
        """Poll thread: one poll every 1 / poll.rate_hz s (a late poll is not caught up)."""
        period_s = 1.0 / self.config.poll_rate_hz
        due = time.monotonic()
        try:
            while not self._stop.is_set():
                self._poll()
                due = max(due + period_s, time.monotonic())
                self._stop.wait(due - time.monotonic())
        except BaseException as exc:
            self._poll_failure = exc
            raise

    def _check_poller(self) -> None:
        """Executor: re-raise the poll thread's crash, which ends the node (exit code 1)."""
        if self._poll_failure is not None:
            raise self._poll_failure

    def _poll(self) -> None:
        statuses = self._collector.poll()
        if self._local is not None:
            statuses.append(self._local.poll())
        now = time.time()
        msg = HostTelemetry()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.config.frame_id
        msg.hosts = [self._metrics(status, now) for status in statuses]
        cal = calendar_features(now, self.config.utc_offset_s)
        msg.hour_of_day = float(cal["hour_of_day"])
        msg.day_of_week = int(cal["day_of_week"])
        msg.is_weekend = bool(cal["is_weekend"])
        msg.time_of_day_sin, msg.time_of_day_cos = cal["tod_sin"], cal["tod_cos"]
        msg.day_of_week_sin, msg.day_of_week_cos = cal["dow_sin"], cal["dow_cos"]
        if self._stop.is_set() or not publish_unless_shut_down(self, self._pub, msg):
            return                            # shutting down: a poll cut short is not passed on
        self._publish_diagnostics(statuses, now)

    def _metrics(self, status, now: float) -> HostMetrics:
        m = HostMetrics(host_id=status.host, up=status.up, stale=status.stale,
                        last_error=status.last_error)
        m.age_s = float(now - status.last_success_s) if status.last_success_s else -1.0
        rates = None if status.stale else status.rates   # stale values are not passed on
        for field in _RATE_FIELDS:
            value = getattr(rates, field, None)
            setattr(m, field, NAN if value is None else float(value))
        m.next_job_in_s, m.next_job_expected_util, m.next_job_duration_s = NAN, NAN, NAN
        if self._schedule is not None:
            active = self._schedule.jobs_active(status.host, now)
            m.active_job = active[0].name if active else ""
            upcoming = self._schedule.next_job(status.host, now)
            if upcoming is not None:
                seconds, job = upcoming
                m.next_job_in_s = float(seconds)
                m.next_job_expected_util = float(job.expected_util)
                m.next_job_duration_s = float(job.duration_s)
        return m

    def _publish_diagnostics(self, statuses, now: float) -> None:
        prefix = self.get_fully_qualified_name()
        out = []
        for s in statuses:
            if s.up and not s.stale:
                level, text = DiagnosticStatus.OK, "reachable"
            elif s.stale:
                level, text = DiagnosticStatus.ERROR, f"stale: {s.last_error or 'no data'}"
            else:
                level, text = DiagnosticStatus.WARN, f"last scrape failed: {s.last_error}"
            values = {"up": s.up, "stale": s.stale, "last_error": s.last_error,
                      "consecutive_failures": s.consecutive_failures,
                      "counter_resets": s.counter_resets,
                      "age_s": f"{now - s.last_success_s:.2f}" if s.last_success_s else "never"}
            out.append(diagnostic_status(level, f"{prefix}: {s.host}", text, s.host, values))
        if self._workload.read is not None:
            out.append(self._workload.status(f"{prefix}: workload_events", now))
        diag = DiagnosticArray(status=out)
        diag.header.stamp = self.get_clock().now().to_msg()
        publish_unless_shut_down(self, self._diag_pub, diag)

    def destroy_node(self) -> None:
        """Stop the poll thread (its poll in progress returns within ~0.1 s after the
        collector is closed, at most POLL_JOIN_S is waited) and the workload thread."""
        if hasattr(self, "_stop"):
            self._stop.set()
        self._collector.close()
        if hasattr(self, "_poller") and self._poller.is_alive():
            self._poller.join(POLL_JOIN_S)
            if self._poller.is_alive():
                self.get_logger().warning(
                    f"the poll thread still runs {POLL_JOIN_S:g} s after the stop; going on")
        if hasattr(self, "_workload"):
            self._workload.stop()
        super().destroy_node()


class WorkloadPoller:
    """Asks the workload source every 1 / `workload.rate_hz` s on a thread of its own and
    publishes each snapshot; remembers the last failure for /diagnostics."""

    ERRORS = (SlurmError, ScheduleError, WorkloadEventsError)

    def __init__(self, node: Node, publisher, read):
        self.node, self.pub, self.read = node, publisher, read
        cfg = node.config
        self.period_s, self.frame_id = 1.0 / cfg.workload.rate_hz, cfg.frame_id
        self.source = cfg.workload.source
        self.last_ok_s, self.jobs, self.failures, self.error = 0.0, 0, 0, ""
        self._logged: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="workload-events", daemon=True)
        if read is not None:
            self._thread.start()
            node.get_logger().info(f"workload_events from {self.source} every "
                                   f"{self.period_s:g} s")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                self.poll_once()
                self._stop.wait(max(self.period_s - (time.monotonic() - began), 0.0))
        except BaseException as exc:
            self.error = f"source stopped: {exc!r}"
            self.node.get_logger().error(f"workload_events: {self.error}")
            raise

    def poll_once(self) -> None:
        try:
            events = self.read()
            msg = events_to_msg(events, self.frame_id, events.source or self.source)
        except self.ERRORS as exc:
            self.failures += 1
            self.error = str(exc)
            kind = type(exc).__name__
            if kind not in self._logged:          # once per kind of failure, not per poll
                self._logged.add(kind)
                self.node.get_logger().warning(
                    f"workload_events ({self.source}): {kind}: {exc}; nothing new is published "
                    "until a poll succeeds")
            return
        if self._logged:
            self.node.get_logger().info(f"workload_events ({self.source}): polling again "
                                        f"after {self.failures} failures")
        self._logged.clear()
        self.last_ok_s, self.jobs, self.failures, self.error = time.time(), len(msg.jobs), 0, ""
        publish_unless_shut_down(self.node, self.pub, msg)

    def status(self, name: str, now: float):
        ok = not self.error and self.last_ok_s > 0
        level = DiagnosticStatus.OK if ok else DiagnosticStatus.WARN
        if self.error.startswith("source stopped"):
            level = DiagnosticStatus.ERROR
        text = (f"{self.jobs} jobs from {self.source}" if ok
                else f"{self.source}: {self.error or 'no snapshot yet'}")
        age = f"{now - self.last_ok_s:.2f}" if self.last_ok_s else "never"
        return diagnostic_status(level, name, text, "workload_events", {
            "source": self.source, "jobs": self.jobs, "age_s": age,
            "consecutive_failures": self.failures, "last_error": self.error})

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)      # a Slurm command still running is killed at its timeout


def main(args=None) -> int:
    return run_node(HostTelemetryNode, "host_telemetry", args, threads=1)


if __name__ == "__main__":
    sys.exit(main())
