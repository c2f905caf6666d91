"""Parameter schema and validated configuration of the `health_monitor` node (no rclpy).

The node's own parameters are in :data:`HEALTH_MONITOR_PARAMETERS`. Every other key under
``health.`` (except ``health.model_path``) belongs to the health model's own configuration
(:class:`rackpower_nodes.core.health.monitor.HealthConfig`): :func:`health_parameter_specs`
declares one parameter per field of it, and the builder hands them, without the ``health.``
prefix, to ``HealthConfig.from_mapping``. A key it does not know stops the node, named.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.bmc_login import bmc_login_params, bmc_password, chassis_url_errors
from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, check_ids, load_config_yaml, param, read_parameters,
    unknown_key_errors)

KINDS = ("server", "switch", "storage")
HEALTH_PREFIX = "health."

HEALTH_MONITOR_PARAMETERS: tuple[ParamSpec, ...] = (
    param("components.names", [], "string_array",
          "Component ids to watch (the sensor board's channel components), e.g. srv01"),
    param("components.kinds", [], "string_array",
          "Kind of each component: server, switch or storage (one per components.names)"),
    param("health.model_path", "", "string",
          "Health model file (HealthModel.save) with each component's learned baseline ('' = "
          "the physical checks only, until a baseline is learned online)"),
    param("health.learn_s", 0.0, "double",
          "Without a model: learn one from this many clean seconds (a component's seconds "
          "in watch or fault left out), in a child process, then use it (0 = never), s",
          (0.0, 30 * 86400.0)),
    param("health.learn_dir", "", "string",
          "Folder the online-learned model is saved to ('' = <temp dir>/rackpower-health)"),
    param("publish.period_s", 1.0, "double",
          "Judge the newest complete seconds and publish component_health this often, s",
          (0.1, 60.0)),
    param("publish.refresh_s", 5.0, "double",
          "A component whose state and cause stayed the same is published again this often "
          "(a change goes out at once; 0 = every judged period), s", (0.0, 3600.0)),
    param("inputs.late_s", 0.5, "double",
          "A second is judged once this long after its end (samples may arrive late), s",
          (0.0, 10.0)),
    param("inputs.stale_after_s", 5.0, "double",
          "A component without a power sample for this long is stale (its verdict is not "
          "refreshed; /diagnostics says STALE), s", (0.5, 3600.0)),
    param("telemetry.hold_s", 5.0, "double",
          "Host telemetry counts for a second when at most this old at its end, s",
          (0.5, 600.0)),
    param("events.stale_after_s", 30.0, "double",
          "A workload_events snapshot older than this says nothing about running jobs, s",
          (0.1, 3600.0)),
    param("frame_id", "rack", "string", "header.frame_id of published messages"),
    # the independent reference meter: the PDUs' outlet power registers, read only
    param("reference.enabled", False, "bool",
          "Read each component's outlet power from its PDU as an independent meter (read "
          "only: nothing is written to the PDUs)"),
    param("reference.period_s", 1.0, "double", "Read the PDUs this often, s", (0.2, 60.0)),
    param("reference.timeout_s", 0.3, "double", "Per PDU request timeout, s", (0.01, 10.0),
          positive=True),
    param("reference.pdus.names", [], "string_array", "PDU names"),
    param("reference.pdus.urls", [], "string_array",
          "Per PDU: tcp://host:port or rtu://<serial port>?baudrate=..."),
    param("reference.pdus.maps", [], "string_array",
          "Per PDU: register map preset (config/pdu/<name>.yaml) or path"),
    param("reference.pdus.unit_ids", [], "integer_array",
          "Per PDU: Modbus unit id; empty = all 1"),
    param("reference.components.pdu", [], "string_array",
          "Per component (components.names): the PDU feeding it ('' = no reference)"),
    param("reference.components.outlet", [], "integer_array",
          "Per component: its outlet on that PDU, 1-based (0 = no reference)"),
    # the PSUs' own meters (PMBus READ_PIN / READ_POUT) through the BMCs, read only; the
    # chassis URLs and credentials as pdu_actuator's components.power_cap_url / power_caps.*
    param("psu_meters.enabled", False, "bool",
          "Read each component's PSU input and output power from its BMC (Redfish "
          "Power.PowerSupplies[], read only) for the PSU-efficiency detector"),
    param("psu_meters.period_s", 10.0, "double",
          "Read the BMCs this often (BMCs refresh PMBus readings about every 10 s), s",
          (1.0, 600.0)),
    param("psu_meters.timeout_s", 1.0, "double", "Per BMC request timeout, s", (0.05, 30.0),
          positive=True),
    param("psu_meters.stale_after_s", 35.0, "double",
          "A BMC none of whose readings came for this long is STALE in /diagnostics, s",
          (1.0, 86400.0)),
    param("psu_meters.components.url", [], "string_array",
          "Per component (components.names): Redfish chassis URL of its BMC, "
          "http(s)://<bmc>/redfish/v1/Chassis/<id>, or '' for none"),
    *bmc_login_params("psu_meters"),
)


def _health_config_class():
    from rackpower_nodes.core.health.config import HealthConfig

    return HealthConfig


_SPEC_TYPES = ((bool, "bool"), (int, "integer"), (float, "double"), (str, "string"))


def health_parameter_specs() -> tuple[ParamSpec, ...]:
    """One ``health.<field>`` parameter per scalar setting of HealthConfig (and
    ``health.<field>.<sub>`` for a nested settings dataclass such as ``checks``), its default
    the dataclass's."""
    return tuple(_specs_of(_health_config_class()(), HEALTH_PREFIX))


def _specs_of(config: Any, prefix: str) -> list[ParamSpec]:
    if not dataclasses.is_dataclass(config):
        return []
    specs = []
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            specs += _specs_of(value, f"{prefix}{f.name}.")
            continue
        kind = next((t for py, t in _SPEC_TYPES if isinstance(value, py)), None)
        if kind is None or (kind == "double" and not math.isfinite(value)):
            continue                                # not expressible as a ROS parameter
        specs.append(param(prefix + f.name, float(value) if kind == "double" else value, kind,
                           f.metadata.get("description", f"health model setting {f.name}")))
    return specs


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"checks.stuck_s": 5} -> {"checks": {"stuck_s": 5}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


@dataclass(frozen=True)
class ReferencePdu:
    """One PDU read as a reference meter: its link and which outlet feeds which component."""

    name: str
    url: str
    register_map: str
    unit_id: int
    components: tuple[str, ...]
    outlets: tuple[int, ...]


@dataclass(frozen=True)
class PsuMeterSettings:
    """The BMCs read for the PSUs' own meters: the chassis URL per component read and how
    to log in (as pdu_actuator's power caps)."""

    components: tuple[str, ...]
    urls: tuple[str, ...]
    period_s: float = 10.0
    timeout_s: float = 1.0
    stale_after_s: float = 35.0
    auth: str = "session"
    username: str = ""
    password_env: str = "RACKPOWER_BMC_PASSWORD"
    password_file: str = ""
    cafile: str = ""

    def password(self) -> str:
        """From the environment variable, else the file (ConfigError naming it), else ''."""
        return bmc_password(self.password_env, self.password_file, "psu_meters")


@dataclass(frozen=True)
class HealthMonitorConfig:
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    model_path: str
    period_s: float
    late_s: float
    stale_after_s: float
    telemetry_hold_s: float
    events_stale_after_s: float
    frame_id: str
    health: Any                 # HealthConfig
    health_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    learn_s: float = 0.0                                # 0: no online learning
    learn_dir: str = ""
    reference_pdus: tuple[ReferencePdu, ...] = ()       # empty: no reference meter
    reference_period_s: float = 1.0
    reference_timeout_s: float = 0.3
    refresh_s: float = 5.0                              # unchanged verdicts, s
    psu_meters: PsuMeterSettings | None = None          # None: the BMCs are not read


def health_monitor_config_from_params(values: Mapping[str, Any]) -> HealthMonitorConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    own_names = {s.name for s in HEALTH_MONITOR_PARAMETERS}
    own = {k: v for k, v in values.items()
           if not k.startswith(HEALTH_PREFIX) or k in own_names}
    given_health = {k: v for k, v in values.items() if k not in own}
    v = read_parameters(HEALTH_MONITOR_PARAMETERS, own, errors, "health_monitor")
    names, kinds = v.get("components.names", ()), v.get("components.kinds", ())
    if not names:
        errors.append("components.names = []: expected at least one component id")
    check_ids("components.names", names, errors)
    if len(kinds) != len(names):
        errors.append(f"components.kinds = {list(kinds)!r}: has {len(kinds)} values, "
                      f"expected {len(names)} (one per components.names)")
    errors += [f"components.kinds[{i}] = {k!r}: expected one of {', '.join(KINDS)}"
               for i, k in enumerate(kinds) if k not in KINDS]
    model = v.get("health.model_path", "")
    if model and not Path(model).exists():
        errors.append(f"health.model_path = {model!r}: no such file or folder")
    health, health_values = _health_config(given_health, errors)
    pdus = _reference_pdus(v, names, errors) if v.get("reference.enabled") else ()
    psu = _psu_meters(v, names, errors) if v.get("psu_meters.enabled") else None
    if errors:
        raise ConfigError(errors)
    return HealthMonitorConfig(
        names=tuple(names), kinds=tuple(kinds), model_path=model,
        period_s=v["publish.period_s"], refresh_s=v["publish.refresh_s"],
        late_s=v["inputs.late_s"],
        stale_after_s=v["inputs.stale_after_s"], telemetry_hold_s=v["telemetry.hold_s"],
        events_stale_after_s=v["events.stale_after_s"], frame_id=v["frame_id"],
        health=health, health_values=health_values, reference_pdus=pdus,
        learn_s=v["health.learn_s"], learn_dir=v["health.learn_dir"],
        reference_period_s=v["reference.period_s"], reference_timeout_s=v["reference.timeout_s"],
        psu_meters=psu)


def _psu_meters(v: Mapping[str, Any], names, errors: list[str]) -> PsuMeterSettings | None:
    """The chassis to read per component and the login; errors appended."""
    urls = [str(u) for u in v.get("psu_meters.components.url", ())]
    if len(urls) != len(names):
        errors.append(f"psu_meters.components.url = {urls!r}: has {len(urls)} values, "
                      f"expected {len(names)} (one per components.names; '' = none)")
        return None
    bad = chassis_url_errors("psu_meters.components.url", names, urls)
    errors += bad
    wired = [(cid, url) for cid, url in zip(names, urls) if url]
    if not wired and not bad:
        errors.append("psu_meters.components.url: no chassis URL with psu_meters.enabled")
    period, stale = v.get("psu_meters.period_s", 10.0), v.get("psu_meters.stale_after_s", 35.0)
    if stale < period:
        errors.append(f"psu_meters.stale_after_s = {stale!r}: below psu_meters.period_s = "
                      f"{period!r} (every BMC would be stale between two reads)")
    if any(k not in v for k in ("psu_meters.auth", "psu_meters.timeout_s")):
        return None                                 # their own errors are already named
    return PsuMeterSettings(
        tuple(c for c, _ in wired), tuple(u for _, u in wired), period,
        v["psu_meters.timeout_s"], stale, v["psu_meters.auth"], v["psu_meters.username"],
        v["psu_meters.password_env"], v["psu_meters.password_file"], v["psu_meters.cafile"])


def _reference_pdus(v: Mapping[str, Any], names, errors: list[str]) -> tuple[ReferencePdu, ...]:
    """The PDUs to read and their outlets per component; errors appended."""
    from rackpower_nodes.core.pdu_map import load_register_map

    pdu_names = list(v.get("reference.pdus.names", ()))
    if not pdu_names:
        errors.append("reference.pdus.names = []: expected at least one PDU with "
                      "reference.enabled")
    check_ids("reference.pdus.names", pdu_names, errors)
    per_pdu = {}
    for key, default in (("urls", None), ("maps", None), ("unit_ids", 1)):
        vals = list(v.get(f"reference.pdus.{key}", ()))
        if not vals and default is not None:
            vals = [default] * len(pdu_names)
        if len(vals) != len(pdu_names):
            errors.append(f"reference.pdus.{key} = {vals!r}: has {len(vals)} values, expected "
                          f"{len(pdu_names)} (one per reference.pdus.names)")
            return ()
        per_pdu[key] = vals
    for i, (url, reg_map, unit) in enumerate(zip(per_pdu["urls"], per_pdu["maps"],
                                                 per_pdu["unit_ids"])):
        if not str(url).startswith(("tcp://", "rtu://")):
            errors.append(f"reference.pdus.urls[{i}] = {url!r}: expected tcp://host:port or "
                          "rtu://<serial port>")
        try:
            load_register_map(reg_map)
        except ConfigError as exc:
            errors.append(f"reference.pdus.maps[{i}] = {reg_map!r}: {exc}")
        if not 0 <= unit <= 247:
            errors.append(f"reference.pdus.unit_ids[{i}] = {unit!r}: expected 0..247")
    comp_pdu = list(v.get("reference.components.pdu", ()))
    outlet = list(v.get("reference.components.outlet", ()))
    for key, vals in (("pdu", comp_pdu), ("outlet", outlet)):
        if len(vals) != len(names):
            errors.append(f"reference.components.{key} = {vals!r}: has {len(vals)} values, "
                          f"expected {len(names)} (one per components.names)")
            return ()
    wired: dict[str, list[tuple[str, int]]] = {p: [] for p in pdu_names}
    for i, (cid, pdu, out) in enumerate(zip(names, comp_pdu, outlet)):
        if not pdu and not out:
            continue
        if pdu not in wired or out < 1:
            errors.append(f"reference.components.pdu[{i}] = {pdu!r}, reference.components."
                          f"outlet[{i}] = {out!r} ({cid}): expected one of "
                          f"{', '.join(pdu_names)} and an outlet >= 1 (or '' and 0: none)")
            continue
        wired[pdu].append((cid, out))
    return tuple(ReferencePdu(p, str(u), str(m), int(n), tuple(c for c, _ in wired[p]),
                              tuple(o for _, o in wired[p]))
                 for p, u, m, n in zip(pdu_names, per_pdu["urls"], per_pdu["maps"],
                                       per_pdu["unit_ids"]) if wired[p])


def _health_config(given: Mapping[str, Any], errors: list[str]):
    """HealthConfig from the ``health.*`` values (prefix stripped); errors appended."""
    specs = health_parameter_specs()
    if specs:                          # unknown keys named here, with the close match
        errors.extend(unknown_key_errors(given, (s.name for s in specs), "health_monitor"))
        given = {k: v for k, v in given.items() if k in {s.name for s in specs}}
        checked = read_parameters(specs, given, errors, "health_monitor")
        given = {k: checked[k] for k in given if k in checked}
    values = _nest({k.removeprefix(HEALTH_PREFIX): val for k, val in given.items()})
    try:
        return _health_config_class().from_mapping(values), values
    except (ValueError, TypeError, KeyError) as exc:
        text = str(exc).strip("'\"")
        head = text.split(":", 1)[0]
        errors.append(f"{HEALTH_PREFIX}{text}" if " " not in head and ":" in text
                      else f"health: {text}")
        return None, values


def load_health_monitor_config_yaml(path: str | Path,
                                    node_name: str = "health_monitor") -> HealthMonitorConfig:
    return load_config_yaml(path, node_name, health_monitor_config_from_params)
