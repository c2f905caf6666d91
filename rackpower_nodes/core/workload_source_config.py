"""Parameters of the `host_telemetry` node's `workload_events` source (no rclpy).

The node publishes what a batch scheduler says runs now and will run where, from one source:
``schedule`` (the ``schedule.file`` jobs, :meth:`WorkloadSchedule.events_at`), ``slurm``
(``squeue --json`` through :class:`~rackpower_nodes.sources.slurm.SlurmQueue`) or ``none``;
``auto`` is ``schedule`` when a schedule file is configured, else ``none``. These specs are part
of :data:`~rackpower_nodes.core.telemetry_config.TELEMETRY_PARAMETERS`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rackpower_nodes.core.params import ParamSpec, param

__all__ = ["WORKLOAD_SOURCES", "WORKLOAD_SOURCE_PARAMETERS", "WorkloadSourceConfig",
           "workload_source_config"]

WORKLOAD_SOURCES = ("auto", "schedule", "slurm", "none")

WORKLOAD_SOURCE_PARAMETERS: tuple[ParamSpec, ...] = (
    param("workload.source", "auto", "string",
          "Where workload_events come from: schedule (the jobs of schedule.file), slurm (the "
          "batch queue, squeue --json), none; auto = schedule when schedule.file is set, else "
          "none", choices=WORKLOAD_SOURCES),
    param("workload.rate_hz", 1.0, "double", "workload_events publish (and Slurm poll) rate, Hz",
          (0.01, 10.0)),
    param("workload.lookahead_s", 600.0, "double",
          "schedule source: jobs starting within this long are published as pending, s",
          (0.0, 86400.0)),
    param("workload.slurm.command", ["squeue", "--json"], "string_array",
          "slurm source: the queue query, printing squeue's JSON"),
    param("workload.slurm.start_command",
          ["squeue", "--start", "--noheader", "--format=%i|%Y"], "string_array",
          "slurm source: the hosts backfill plans for pending jobs ([''] = not asked: a ROS "
          "params file cannot hold an empty list)"),
    param("workload.slurm.nodes_command", ["sinfo", "--json"], "string_array",
          "slurm source: node sizes, to turn a job's CPUs and GPUs into a share of a host "
          "([''] = not asked)"),
    param("workload.slurm.timeout_s", 5.0, "double",
          "slurm source: each command is killed after this long, s (the poll runs off the "
          "executor; a slow one delays only the next snapshot)", (0.1, 120.0)),
    param("workload.slurm.conf", "", "string",
          "slurm source: SLURM_CONF for the commands ('' = their default)"),
)


@dataclass(frozen=True)
class WorkloadSourceConfig:
    """Which source feeds `workload_events` and how (times in s, rate in Hz)."""

    source: str                          # schedule, slurm or none (auto resolved)
    rate_hz: float
    lookahead_s: float
    slurm_command: tuple[str, ...]
    slurm_start_command: tuple[str, ...]  # () = not run
    slurm_nodes_command: tuple[str, ...]  # () = not run
    slurm_timeout_s: float
    slurm_conf: str


def workload_source_config(v: Mapping[str, Any], schedule_file: str,
                           errors: list[str]) -> WorkloadSourceConfig | None:
    """The source's config from values `read_parameters` checked (`v`), or None after adding
    to `errors` what is wrong (each naming the key and the value)."""
    source = v.get("workload.source")
    if source == "auto":
        source = "schedule" if schedule_file else "none"
    if source == "schedule" and not schedule_file:
        errors.append("workload.source = 'schedule': expected schedule.file to name the "
                      "schedule (it is '')")
    command = tuple(a for a in v.get("workload.slurm.command", ("?",)) if a)
    if source == "slurm" and not command:
        errors.append(f"workload.slurm.command = {list(v['workload.slurm.command'])!r}: "
                      "expected the queue query, e.g. [squeue, --json]")
    keys = [s.name for s in WORKLOAD_SOURCE_PARAMETERS]
    if errors or source is None or any(k not in v for k in keys):
        return None
    return WorkloadSourceConfig(
        source=source, rate_hz=v["workload.rate_hz"], lookahead_s=v["workload.lookahead_s"],
        slurm_command=command,
        slurm_start_command=tuple(a for a in v["workload.slurm.start_command"] if a),
        slurm_nodes_command=tuple(a for a in v["workload.slurm.nodes_command"] if a),
        slurm_timeout_s=v["workload.slurm.timeout_s"], slurm_conf=v["workload.slurm.conf"])
