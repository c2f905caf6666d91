"""Parameter schema and validated configuration of the `host_telemetry` node (no rclpy)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, check_ids, load_config_yaml, param, read_parameters)
from rackpower_nodes.core.workload_source_config import (
    WORKLOAD_SOURCE_PARAMETERS, WorkloadSourceConfig, workload_source_config)


TELEMETRY_PARAMETERS: tuple[ParamSpec, ...] = (
    param("hosts.names", [], "string_array",
          "Host id per scraped endpoint (e.g. srv01); unique, [A-Za-z0-9_.-]+"),
    param("hosts.urls", [], "string_array",
          "node_exporter URL per host, e.g. http://10.0.7.11:9100/metrics; same order as "
          "hosts.names"),
    param("poll.rate_hz", 1.0, "double", "Scrape and publish rate in Hz", (0.1, 10.0)),
    param("poll.timeout_s", 0.4, "double",
          "Per-host HTTP timeout in s; must be shorter than the poll period", (0.01, 10.0),
          positive=True),
    param("poll.max_body_bytes", 2 * 2**20, "integer",
          "Largest node_exporter response body accepted, bytes; a larger one is a scrape error "
          "(real bodies are 50-150 kB)", (65536, 64 * 2**20)),
    param("stale_after_s", 3.0, "double",
          "A host with no good scrape for this long is reported stale, s", (0.1, 3600.0)),
    param("local_host.enabled", False, "bool",
          "Also report the controller itself, read with psutil"),
    param("local_host.name", "controller", "string", "Host id of the controller"),
    param("schedule.file", "", "string",
          "YAML file with a top-level `schedule:` list of known workload jobs ('' = none)"),
    param("calendar.utc_offset_s", 0, "integer",
          "Offset of the rack's local time from UTC in s, for time-of-day features",
          (-50400, 50400)),
    param("publish.deadline_s", 2.0, "double",
          "QoS deadline of host_telemetry in s (a few poll periods)", (0.01, 3600.0),
          positive=True),
    param("frame_id", "rack", "string", "header.frame_id of published messages"),
) + WORKLOAD_SOURCE_PARAMETERS


@dataclass(frozen=True)
class TelemetryConfig:
    hosts: tuple[tuple[str, str], ...]   # (host id, URL)
    poll_rate_hz: float
    timeout_s: float
    max_body_bytes: int                  # largest response body accepted, bytes
    stale_after_s: float
    local_host: str | None               # host id of the controller when enabled
    schedule_file: str
    utc_offset_s: int
    deadline_s: float
    frame_id: str
    workload: WorkloadSourceConfig       # the workload_events source


def telemetry_config_from_params(values: Mapping[str, Any]) -> TelemetryConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(TELEMETRY_PARAMETERS, values, errors, "host_telemetry")
    names, urls = v.get("hosts.names", ()), v.get("hosts.urls", ())
    if len(names) != len(urls):
        errors.append(f"hosts.urls = {list(urls)!r}: has {len(urls)} values, expected "
                      f"{len(names)} (one per hosts.names)")
    _check_hosts(names, urls, errors)
    local = v.get("local_host.name") if v.get("local_host.enabled") else None
    if not names and local is None:
        errors.append("hosts.names = []: expected at least one host, or local_host.enabled")
    if local is not None and local in names:
        errors.append(f"local_host.name = {local!r}: also in hosts.names, expected unique ids")
    schedule = v.get("schedule.file", "")
    if schedule and not Path(schedule).is_file():
        errors.append(f"schedule.file = {schedule!r}: no such file")
    if "poll.rate_hz" in v and "poll.timeout_s" in v and v["poll.timeout_s"] >= 1 / v[
            "poll.rate_hz"]:
        errors.append(f"poll.timeout_s = {v['poll.timeout_s']}: expected less than the poll "
                      f"period 1/poll.rate_hz = {1 / v['poll.rate_hz']:.3g} s")
    workload = workload_source_config(v, schedule, errors)
    if errors:
        raise ConfigError(errors)
    return TelemetryConfig(
        hosts=tuple(zip(names, urls)), poll_rate_hz=v["poll.rate_hz"],
        timeout_s=v["poll.timeout_s"], max_body_bytes=v["poll.max_body_bytes"],
        stale_after_s=v["stale_after_s"], local_host=local,
        schedule_file=schedule, utc_offset_s=v["calendar.utc_offset_s"],
        deadline_s=v["publish.deadline_s"], frame_id=v["frame_id"], workload=workload)


def _check_hosts(names, urls, errors: list[str]) -> None:
    check_ids("hosts.names", names, errors)
    for i, url in enumerate(urls):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            errors.append(f"hosts.urls[{i}] = {url!r}: expected http(s)://host:port/metrics")


def load_telemetry_config_yaml(path: str | Path,
                               node_name: str = "host_telemetry") -> TelemetryConfig:
    return load_config_yaml(path, node_name, telemetry_config_from_params)
