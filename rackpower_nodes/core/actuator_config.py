"""Parameter schema and validated configuration of the `pdu_actuator` node (no rclpy).

The rack budget is the breaker rating (A x V) times a derating; each component has a floor
(idle power), a ceiling (its outlet or PSU rating), a priority, and the PDU outlet that feeds
it. PDUs are named, each with a URL (`tcp://host:port` or `rtu:///dev/ttyUSB0?baudrate=19200`),
a register map (a preset name from `config/pdu/` or a YAML path) and a Modbus unit id. A
server may also have a power cap: the Redfish URL of its chassis on its BMC
(`https://bmc/redfish/v1/Chassis/1`), written with the same allocation as its outlet. The BMC
password is read from an environment variable or a file, never from a parameter (parameters
can be listed by anyone on the ROS graph).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.actuator_budget import (
    BUDGET_PARAMETERS, BudgetSettings, budget_settings_from)
from rackpower_nodes.core.allocation import MODES, QUANTILES, Component, PolicyConfig
from rackpower_nodes.core.bmc_login import bmc_login_params, bmc_password, chassis_url_errors
from rackpower_nodes.core.feed_config import FEED_PARAMETERS, FeedSettings, feed_settings_from
from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, check_ids, load_config_yaml, param, read_parameters)

CAP_APIS = ("auto", "environment_metrics", "power_control")

ACTUATOR_PARAMETERS: tuple[ParamSpec, ...] = (
    param("mode", "proactive", "string",
          "Allocation mode: proactive (forecast), reactive (last measured + margin), static "
          "(nameplate split) or safe", choices=MODES, read_only=False),
    param("autostart", True, "bool",
          "Configure and activate by itself at start-up, retrying until the PDUs answer"),
    param("budget.breaker_a", None, "double", "Rating of the breaker feeding the rack, A",
          (0.1, 10000.0), required=True),
    param("budget.voltage_v", None, "double", "Nominal supply voltage, V", (1.0, 1000.0),
          required=True),
    param("budget.derating", None, "double",
          "Continuous-load fraction of the breaker rating the allocations may use",
          (0.05, 1.0), required=True),
    param("policy.quantile", "p90", "string",
          "Forecast quantile the proactive mode allocates", choices=QUANTILES),
    param("policy.margin_frac", 0.04, "double", "Proactive headroom as a fraction", (0.0, 5.0)),
    param("policy.margin_w", 10.0, "double", "Smallest proactive headroom, W", (0.0, 10000.0)),
    param("policy.lead_s", 1.0, "double",
          "Actuation latency: the window an allocation covers starts this long after now, s",
          (0.0, 60.0)),
    param("policy.window_s", 1.0, "double", "Length of the window an allocation covers, s",
          (0.01, 60.0), positive=True),
    param("policy.reactive_margin_frac", 0.10, "double",
          "Reactive headroom as a fraction of the last measured power", (0.0, 5.0)),
    param("policy.reactive_margin_w", 10.0, "double", "Smallest reactive headroom, W",
          (0.0, 10000.0)),
    param("policy.pinned_growth", 3.0, "double",
          "A component held at its allocation in force (throttled) asks for this many times "
          "it, plus the margin, as headroom until it is no longer held (a server's busy draw "
          "is 2-4x its idle draw)", (1.0, 100.0)),
    param("policy.pinned_hold_s", 0.2, "double",
          "How long a component must be held at its allocation before it grows, s (shorter "
          "clips, e.g. noise above the margin, gain only the margin)", (0.0, 60.0)),
    param("policy.error_threshold_frac", 0.15, "double",
          "Forecast error (fraction of the forecast) that triggers a correction", (0.0, 10.0)),
    param("policy.error_threshold_w", 20.0, "double",
          "Smallest forecast error that triggers a correction, W", (0.0, 10000.0)),
    param("policy.safe_policy", "reactive", "string",
          "What safe mode allocates: reactive with policy.safe_margin_frac, or static",
          choices=("reactive", "static")),
    param("policy.safe_margin_frac", 0.25, "double", "Safe-mode reactive headroom fraction",
          (0.0, 5.0)),
    param("inputs.forecast_stale_s", 0.25, "double",
          "No forecast received for this long switches to safe mode, s", (0.01, 60.0),
          positive=True),
    param("inputs.forecast_max_age_s", 1.0, "double",
          "A forecast whose origin (newest input) is older than this is not used, s",
          (0.05, 60.0), positive=True),
    param("inputs.samples_stale_s", 0.5, "double",
          "Deadline of power_samples: no fresh batch (a newer header.stamp with a finite "
          "value) for this long switches to safe mode, and a component's measurement older "
          "than this counts as unknown, s", (0.01, 60.0), positive=True),
    param("control.rate_hz", 10.0, "double",
          "Highest control rate; a step runs on a power_samples batch at most this often",
          (0.5, 100.0)),
    param("components.names", None, "string_array", "Component ids, as the sensor names them",
          required=True),
    param("components.pdu", None, "string_array",
          "The PDU (pdus.names) feeding each component", required=True),
    param("components.outlet", None, "integer_array",
          "PDU outlet number (1-based) per component", required=True),
    param("components.floor_w", None, "double_array",
          "Floor per component, W: its idle power, kept while the floors fit the budget",
          required=True),
    param("components.ceiling_w", None, "double_array",
          "Ceiling per component, W: its outlet or PSU rating, never exceeded",
          required=True),
    param("components.priority", [], "integer_array",
          "Priority per component (higher keeps power longer); empty = all 1"),
    param("components.nameplate_w", [], "double_array",
          "Nameplate power per component for the static split, W; empty = the ceilings"),
    param("components.power_cap_url", [], "string_array",
          "Per component: Redfish chassis URL of its BMC power limit, or '' for none; "
          "empty = no power caps"),
    param("pdus.names", None, "string_array", "PDU names", required=True),
    param("pdus.urls", None, "string_array",
          "Per PDU: tcp://host:port, or rtu:///dev/ttyUSB0?baudrate=19200&parity=E",
          required=True),
    param("pdus.maps", None, "string_array",
          "Per PDU: register map preset (config/pdu/<name>.yaml) or a YAML path",
          required=True),
    param("pdus.unit_ids", [], "integer_array", "Per PDU: Modbus unit id; empty = all 1"),
    param("pdu.timeout_s", 0.3, "double", "Modbus request timeout, s", (0.01, 10.0),
          positive=True),
    param("pdu.retry_s", 1.0, "double", "Wait between reconnection attempts, s",
          (0.05, 600.0), positive=True),
    param("pdu.verify_s", 0.5, "double",
          "Read-back period of every PDU allocation register and BMC limit, s: a value other "
          "than the one written is named and corrected", (0.05, 60.0), positive=True),
    param("pdu.allow_switching", False, "bool",
          "Allow switching outlets off to enforce an allocation (never by default)"),
    param("power_caps.api", "auto", "string",
          "Redfish resource holding the limit: auto, environment_metrics (PowerLimitWatts) or "
          "power_control (legacy Power.PowerControl)", choices=CAP_APIS),
    *bmc_login_params("power_caps"),
    param("power_caps.timeout_s", 1.0, "double", "Redfish request timeout, s", (0.05, 30.0),
          positive=True),
    param("power_caps.min_change_w", 5.0, "double",
          "Dead band: a power cap is not rewritten for a smaller change, W", (0.0, 1000.0)),
    param("power_caps.heartbeat_s", 2.0, "double",
          "Longest silence before a BMC is read to check it still answers, s", (0.1, 600.0),
          positive=True),
    param("publish.deadline_s", 0.5, "double", "QoS deadline of power_allocation, s",
          (0.01, 60.0), positive=True),
    param("frame_id", "rack", "string", "header.frame_id of published messages"),
) + BUDGET_PARAMETERS + FEED_PARAMETERS


@dataclass(frozen=True)
class PduSpec:
    name: str
    url: str
    register_map: str
    unit_id: int


@dataclass(frozen=True)
class PowerCapSpec:
    """How the BMC power caps are reached (shared by every capped component)."""

    api: str
    auth: str
    username: str
    password_env: str
    password_file: str
    cafile: str
    timeout_s: float
    min_change_w: float
    heartbeat_s: float

    def password(self) -> str:
        """The password from the environment variable, else the file, else ''; ConfigError
        naming the file when it cannot be read."""
        return bmc_password(self.password_env, self.password_file, "power_caps")


@dataclass(frozen=True)
class ActuatorConfig:
    mode: str
    autostart: bool
    policy: PolicyConfig
    components: tuple[Component, ...]
    outlets: tuple[tuple[str, int], ...]      # (pdu name, outlet number) per component
    pdus: tuple[PduSpec, ...]
    cap_urls: tuple[str, ...]                 # per component, '' = no power cap
    power_caps: PowerCapSpec
    forecast_stale_s: float
    samples_stale_s: float
    rate_hz: float
    timeout_s: float
    retry_s: float
    allow_switching: bool
    deadline_s: float
    frame_id: str
    verify_s: float = 0.5                     # read-back period of every PDU and BMC, s
    budget: BudgetSettings = BudgetSettings()  # config, or a coordinator's grants
    feeds: FeedSettings | None = None          # redundant feeds (core/feed_config.py)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.components)


def _per_item(v: Mapping, key: str, n: int, owner: str, errors: list[str],
              default: Any = None) -> list:
    arr = list(v.get(key, ()))
    if not arr and default is not None:
        return [default] * n
    if len(arr) != n:
        errors.append(f"{key} = {arr!r}: has {len(arr)} values, expected {n} (one per "
                      f"{owner})")
        return [default] * n
    return arr


def actuator_config_from_params(values: Mapping[str, Any]) -> ActuatorConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(ACTUATOR_PARAMETERS, values, errors, "pdu_actuator")
    if any(s.required and s.name not in v for s in ACTUATOR_PARAMETERS):
        raise ConfigError(errors)     # safety-critical values missing or malformed: say so
    names = list(v.get("components.names", ()))
    if not names:
        errors.append("components.names = []: expected at least one component id")
    check_ids("components.names", names, errors)
    n = len(names)
    comp_pdu = _per_item(v, "components.pdu", n, "components.names", errors, "")
    outlet = _per_item(v, "components.outlet", n, "components.names", errors, 0)
    floor = _per_item(v, "components.floor_w", n, "components.names", errors, math.nan)
    ceiling = _per_item(v, "components.ceiling_w", n, "components.names", errors, math.nan)
    priority = _per_item(v, "components.priority", n, "components.names", errors, 1)
    nameplate = list(v.get("components.nameplate_w", ())) or list(ceiling)
    if len(nameplate) != n:
        errors.append(f"components.nameplate_w = {nameplate!r}: has {len(nameplate)} values, "
                      f"expected {n} (one per components.names) or none")
        nameplate = list(ceiling)
    cap_urls = [str(u) for u in _per_item(v, "components.power_cap_url", n,
                                          "components.names", errors, "")]
    errors += chassis_url_errors("components.power_cap_url", names, cap_urls, "the power cap")

    pdu_names = list(v.get("pdus.names", ()))
    if not pdu_names:
        errors.append("pdus.names = []: expected at least one PDU")
    check_ids("pdus.names", pdu_names, errors)
    urls = _per_item(v, "pdus.urls", len(pdu_names), "pdus.names", errors, "")
    maps = _per_item(v, "pdus.maps", len(pdu_names), "pdus.names", errors, "")
    units = _per_item(v, "pdus.unit_ids", len(pdu_names), "pdus.names", errors, 1)
    pdus = []
    for i, name in enumerate(pdu_names):
        if not urls[i].startswith(("tcp://", "rtu://")):
            errors.append(f"pdus.urls[{i}] = {urls[i]!r}: expected tcp://host:port or "
                          "rtu:///dev/<port>?baudrate=<baud>")
        if not maps[i]:
            errors.append(f"pdus.maps[{i}] = {maps[i]!r}: expected a preset name or a path")
        if not 0 <= units[i] <= 255:
            errors.append(f"pdus.unit_ids[{i}] = {units[i]!r}: expected 0..255")
        pdus.append(PduSpec(name, urls[i], maps[i], int(units[i])))

    components, outlets, used = [], [], {}
    for i, cid in enumerate(names):
        lo, hi = floor[i], ceiling[i]
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi and hi > 0):
            errors.append(f"components.floor_w[{i}] = {lo!r}, components.ceiling_w[{i}] = "
                          f"{hi!r} ({cid}): expected 0 <= floor <= ceiling, ceiling > 0, in W")
        if not (math.isfinite(nameplate[i]) and nameplate[i] > 0):
            errors.append(f"components.nameplate_w[{i}] = {nameplate[i]!r} ({cid}): expected "
                          "> 0 W")
        if comp_pdu[i] not in pdu_names:
            errors.append(f"components.pdu[{i}] = {comp_pdu[i]!r} ({cid}): expected one of "
                          f"pdus.names {pdu_names!r}")
        if not outlet[i] >= 1:
            errors.append(f"components.outlet[{i}] = {outlet[i]!r} ({cid}): expected an outlet "
                          "number >= 1")
        key = (comp_pdu[i], int(outlet[i]))
        if key in used and outlet[i] >= 1:
            errors.append(f"components.outlet[{i}] = {outlet[i]!r} ({cid}): outlet already "
                          f"feeds {used[key]} on {comp_pdu[i]}")
        used.setdefault(key, cid)
        components.append(Component(cid, float(lo), float(hi), int(priority[i]),
                                    float(nameplate[i])))
        outlets.append(key)

    policy = None
    if not errors:
        try:
            policy = PolicyConfig(
                breaker_w=v["budget.breaker_a"] * v["budget.voltage_v"],
                derating=v["budget.derating"], quantile=v["policy.quantile"],
                margin_frac=v["policy.margin_frac"], margin_w=v["policy.margin_w"],
                lead_s=v["policy.lead_s"], window_s=v["policy.window_s"],
                reactive_margin_frac=v["policy.reactive_margin_frac"],
                reactive_margin_w=v["policy.reactive_margin_w"],
                pinned_growth=v["policy.pinned_growth"],
                pinned_hold_s=v["policy.pinned_hold_s"],
                error_threshold_frac=v["policy.error_threshold_frac"],
                error_threshold_w=v["policy.error_threshold_w"],
                forecast_stale_s=v["inputs.forecast_max_age_s"],
                safe_policy=v["policy.safe_policy"],
                safe_margin_frac=v["policy.safe_margin_frac"],
                samples_stale_s=v["inputs.samples_stale_s"])
        except ConfigError as exc:
            errors.extend(exc.errors)
    if policy is not None:
        _check_against_budget(policy, components, errors)
        budget = budget_settings_from(v, policy.budget_w,
                                      math.fsum(c.floor_w for c in components), errors)
        feeds = feed_settings_from(v, components, comp_pdu, pdu_names, errors)
    if errors:
        raise ConfigError(errors)
    return ActuatorConfig(
        mode=v["mode"], autostart=v["autostart"], policy=policy,
        components=tuple(components), outlets=tuple(outlets), pdus=tuple(pdus),
        cap_urls=tuple(cap_urls),
        power_caps=PowerCapSpec(
            api=v["power_caps.api"], auth=v["power_caps.auth"],
            username=v["power_caps.username"], password_env=v["power_caps.password_env"],
            password_file=v["power_caps.password_file"], cafile=v["power_caps.cafile"],
            timeout_s=v["power_caps.timeout_s"], min_change_w=v["power_caps.min_change_w"],
            heartbeat_s=v["power_caps.heartbeat_s"]),
        forecast_stale_s=v["inputs.forecast_stale_s"],
        samples_stale_s=v["inputs.samples_stale_s"], rate_hz=v["control.rate_hz"],
        timeout_s=v["pdu.timeout_s"], retry_s=v["pdu.retry_s"],
        allow_switching=v["pdu.allow_switching"], deadline_s=v["publish.deadline_s"],
        frame_id=v["frame_id"], verify_s=v["pdu.verify_s"], budget=budget, feeds=feeds)


def _check_against_budget(policy: PolicyConfig, components: list[Component],
                          errors: list[str]) -> None:
    """A ceiling above the breaker rating, or floors summing above the budget: the config
    promises power the breaker cannot give."""
    for i, c in enumerate(components):
        if c.ceiling_w > policy.breaker_w:
            errors.append(f"components.ceiling_w[{i}] = {c.ceiling_w!r} ({c.id}): above the "
                          f"breaker rating budget.breaker_a x budget.voltage_v = "
                          f"{policy.breaker_w:g} W")
    floors = math.fsum(c.floor_w for c in components)
    if floors > policy.budget_w:
        errors.append(f"components.floor_w: the floors sum to {floors:g} W, above the budget "
                      f"budget.breaker_a x budget.voltage_v x budget.derating = "
                      f"{policy.budget_w:g} W")


def check_outlets_in_maps(cfg: ActuatorConfig, outlets_per_pdu: Mapping[str, int]) -> None:
    """ConfigError naming every component whose outlet number is beyond its PDU's register
    map (`outlets_per_pdu`: PDU name -> the map's outlet count)."""
    errors = []
    for i, (c, (pdu, outlet)) in enumerate(zip(cfg.components, cfg.outlets)):
        count = outlets_per_pdu.get(pdu)
        if count is not None and outlet > count:
            spec = next(p for p in cfg.pdus if p.name == pdu)
            errors.append(f"components.outlet[{i}] = {outlet} ({c.id}): beyond PDU {pdu}'s "
                          f"register map {spec.register_map!r}, which has outlets 1..{count}")
    if errors:
        raise ConfigError(errors)


def load_actuator_config_yaml(path: str | Path,
                              node_name: str = "pdu_actuator") -> ActuatorConfig:
    return load_config_yaml(path, node_name, actuator_config_from_params)
