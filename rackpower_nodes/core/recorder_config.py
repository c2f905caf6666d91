"""Parameter schema and validated configuration of the `recorder` node (no rclpy)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, load_config_yaml, param, read_parameters)

DEFAULT_TOPICS = ("power_samples", "host_telemetry", "power_forecast", "power_allocation",
                  "allocation_error", "model_update", "workload_events", "component_health")
STORAGES = ("mcap", "sqlite3")
MIB = 1 << 20

RECORDER_PARAMETERS: tuple[ParamSpec, ...] = (
    param("topics", list(DEFAULT_TOPICS), "string_array",
          "Topics to record; relative names resolve in the node's namespace"),
    param("output.folder", "bags", "string",
          "Folder the bags are written to (created when absent)"),
    param("output.prefix", "rackpower", "string",
          "Bag folder names: <prefix>_<UTC start time>, e.g. rackpower_20260101T120000_000"),
    param("storage", "mcap", "string", "rosbag2 storage plugin", choices=STORAGES),
    param("rotation.max_bytes", 64 * MIB, "integer",
          "Close the bag and start a new one at this size, bytes (0 = no size limit)",
          (0, 1 << 40)),
    param("rotation.max_duration_s", 600.0, "double",
          "Close the bag and start a new one after this long, s (0 = no time limit)",
          (0.0, 7 * 86400.0)),
    param("quota.max_total_bytes", 0, "integer",
          "Delete the oldest closed bags to keep all bags of this prefix below this many "
          "bytes (0 = no quota)", (0, 1 << 50)),
    param("flush.interval_s", 0.5, "double",
          "Write buffered messages to disk this often, s (a kill -9 loses at most this plus "
          "one callback)", (0.05, 1.0)),
    param("discovery.interval_s", 1.0, "double",
          "Look for the types of topics not yet subscribed this often, s", (0.1, 60.0)),
    param("qos.depth", 100, "integer",
          "Subscription queue depth per topic (messages)", (1, 10000)),
    param("diagnostics.period_s", 1.0, "double", "Period of /diagnostics, s", (0.1, 60.0)),
)

_TOPIC_RE = re.compile(r"^(~/|/)?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class RecorderConfig:
    """What to record and how. Sizes in bytes, times in s."""

    topics: tuple[str, ...]
    folder: Path
    prefix: str
    storage: str
    max_bag_bytes: int
    max_bag_duration_s: float
    quota_bytes: int
    flush_interval_s: float
    discovery_interval_s: float
    qos_depth: int
    diagnostics_period_s: float


def recorder_config_from_params(values: Mapping[str, Any]) -> RecorderConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(RECORDER_PARAMETERS, values, errors, "recorder")
    topics = v.get("topics", ())
    if "topics" in v and not topics:
        errors.append("topics = []: expected at least one topic name")
    for i, name in enumerate(topics):
        if not _TOPIC_RE.match(name):
            errors.append(f"topics[{i}] = {name!r}: expected a ROS topic name "
                          "(e.g. power_samples or /rack_01/power_samples)")
    if len(set(topics)) != len(topics):
        errors.append(f"topics = {list(topics)!r}: expected each topic once")
    if "output.folder" in v and not v["output.folder"].strip():
        errors.append("output.folder = '': expected a folder path")
    prefix = v.get("output.prefix")
    if prefix is not None and not _PREFIX_RE.match(prefix):
        errors.append(f"output.prefix = {prefix!r}: expected [A-Za-z0-9_.-]+")
    size, quota = v.get("rotation.max_bytes"), v.get("quota.max_total_bytes")
    if size is not None and 0 < size < 64 * 1024:
        errors.append(f"rotation.max_bytes = {size!r}: expected 0 (no limit) or >= 65536")
    if quota and size is not None and (size == 0 or quota < 2 * size):
        errors.append(f"quota.max_total_bytes = {quota!r}: expected 0 (no quota) or at least "
                      f"twice rotation.max_bytes ({size!r}, which must be > 0 with a quota)")
    duration = v.get("rotation.max_duration_s")
    if duration is not None and 0 < duration < 1.0:
        errors.append(f"rotation.max_duration_s = {duration!r}: expected 0 (no limit) or "
                      ">= 1.0 s")
    if errors:
        raise ConfigError(errors)
    return RecorderConfig(
        topics=tuple(topics), folder=Path(v["output.folder"]).expanduser(), prefix=prefix,
        storage=v["storage"], max_bag_bytes=size, max_bag_duration_s=duration,
        quota_bytes=quota, flush_interval_s=v["flush.interval_s"],
        discovery_interval_s=v["discovery.interval_s"], qos_depth=v["qos.depth"],
        diagnostics_period_s=v["diagnostics.period_s"])


def load_recorder_config_yaml(path: str | Path, node_name: str = "recorder") -> RecorderConfig:
    return load_config_yaml(path, node_name, recorder_config_from_params)
