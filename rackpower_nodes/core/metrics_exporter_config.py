"""Parameter schema and validated configuration of the `metrics_exporter` node (no rclpy).

The node serves the rack's state to Prometheus at `http://<http.address>:<http.port>/metrics`.
The endpoint has no authentication, so it binds to loopback by default: an operator opens it
on the management network's address only (docs/metrics.md).
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.params import ConfigError, ParamSpec, load_config_yaml, param, \
    read_parameters

DEFAULT_PORT = 9470
LABEL_RE = re.compile(r"^[A-Za-z0-9_.:-]*$")

METRICS_EXPORTER_PARAMETERS: tuple[ParamSpec, ...] = (
    param("rack", "", "string",
          "Value of the `rack` label on every metric ('' = the node's namespace, e.g. rack_01)"),
    param("http.address", "127.0.0.1", "string",
          "Address the /metrics endpoint listens on (an IP address; it has no authentication: "
          "loopback or the management network only)"),
    param("http.port", DEFAULT_PORT, "integer",
          "TCP port of the /metrics endpoint (0 = any free port, named in the log)",
          (0, 65535)),
    param("forecast.lead_s", 1.0, "double",
          "Start of the actuation window after the forecast origin, s (the pdu_actuator's "
          "policy.lead_s): the forecast quantiles are their peak over that window",
          (0.0, 60.0)),
    param("forecast.window_s", 1.0, "double",
          "Length of the actuation window, s, until an allocation says its own window_s",
          (0.01, 60.0), positive=True),
)


@dataclass(frozen=True)
class MetricsExporterConfig:
    """`rack`: the label value ('' = take the namespace); `address`, `port`: where /metrics
    listens; `lead_s`, `window_s`: the actuation window the forecast peaks cover, s."""

    rack: str
    address: str
    port: int
    lead_s: float
    window_s: float


def metrics_exporter_config_from_params(values: Mapping[str, Any]) -> MetricsExporterConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(METRICS_EXPORTER_PARAMETERS, values, errors, "metrics_exporter")
    rack = v.get("rack", "")
    if not LABEL_RE.match(rack):
        errors.append(f"rack = {rack!r}: expected letters, digits, '_', '.', ':' or '-'")
    address = v.get("http.address", "127.0.0.1")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        errors.append(f"http.address = {address!r}: expected an IP address such as "
                      "127.0.0.1 or the management network's address")
    if errors:
        raise ConfigError(errors)
    return MetricsExporterConfig(rack=rack, address=address, port=v["http.port"],
                                 lead_s=v["forecast.lead_s"], window_s=v["forecast.window_s"])


def load_metrics_exporter_config_yaml(path: str | Path,
                                      node_name: str = "metrics_exporter"
                                      ) -> MetricsExporterConfig:
    return load_config_yaml(path, node_name, metrics_exporter_config_from_params)
