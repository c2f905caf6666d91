"""The pdu_actuator's outgoing messages built from one control step: `PowerAllocation` (the
decision, what the devices hold and the budget in force) and an `AllocationError` per
correction; the last `PowerAllocation` when it stops maintaining one (:func:`inactive_msg`);
and its /diagnostics statuses."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from rackpower.msg import AllocationError, PowerAllocation
from rackpower_nodes.core.actuator_config import ActuatorConfig
from rackpower_nodes.core.actuator_health import allocation_status, device_status
from rackpower_nodes.core.allocation import Decision, ForecastView
from rackpower_nodes.drivers.pdu_link import float32_floor
from rackpower_nodes.nodes.common import diagnostic_status, float32_array as _f32

__all__ = ["INACTIVE", "actuator_statuses", "allocation_msg", "error_msgs",
           "forecast_gap_named", "inactive_msg", "mode_change"]

# the mode of the last allocation published before the actuator stops maintaining one
INACTIVE = "inactive"


def allocation_msg(cfg: ActuatorConfig, d: Decision, measured: np.ndarray,
                   forecast: ForecastView | None, held_w: np.ndarray, written: bool,
                   budget_w: float, stamp) -> PowerAllocation:
    """The PowerAllocation of decision `d`; `budget_w`: the budget in force (W), `stamp`: a
    builtin_interfaces Time."""
    msg = PowerAllocation()
    msg.header.stamp = stamp
    msg.header.frame_id = cfg.frame_id
    msg.mode, msg.mode_reason = d.mode, d.mode_reason
    msg.budget_w, msg.breaker_w = float(budget_w), cfg.policy.breaker_w
    msg.window_s = cfg.policy.window_s
    msg.channel_ids = list(cfg.names)
    msg.allocated_w = _f32(float32_floor(d.allocated_w))
    msg.forecast_w = _f32(d.forecast_w)
    msg.measured_w = _f32(measured)
    msg.floor_w = _f32([c.floor_w for c in cfg.components])
    msg.ceiling_w = _f32([c.ceiling_w for c in cfg.components])
    msg.held_w = _f32(held_w)
    msg.priority = bytes(min(max(c.priority, 0), 255) for c in cfg.components)
    msg.total_allocated_w = float(d.allocated_w.sum())
    msg.total_measured_w = float(np.nansum(measured))
    msg.slack_w = float(budget_w - d.allocated_w.sum())
    msg.forecast_model = forecast.model if forecast is not None else ""
    msg.pdu_written = bool(written)
    return msg


def inactive_msg(cfg: ActuatorConfig, controller, link, left: str, confirmed: bool,
                 measured: np.ndarray, stamp) -> PowerAllocation:
    """The last PowerAllocation before the node stops maintaining one (deactivate, shutdown,
    error): mode `inactive`, the `controller`'s static split (W) it left in the devices as
    the allocation, what the devices of `link` confirmed holding (`confirmed`: the read-back
    matched) and `left` (what the devices were left at, the node's log line) in the reason.
    Latched, it tells a late subscriber the truth: nothing adjusts these values any more,
    since `stamp` (a builtin_interfaces Time)."""
    nan = np.full(len(cfg.names), np.nan)
    d = Decision(0.0, INACTIVE, f"pdu_actuator inactive, allocation not maintained ({left})",
                 controller.static_allocation(), nan, nan, ())
    return allocation_msg(cfg, d, measured, None, link.held_w(), confirmed,
                          controller.budget_w, stamp)


def forecast_gap_named(d: Decision, age_s: float) -> Decision:
    """`d` with its reason's "forecast missing" saying how long none arrived (`age_s`, s),
    for a forecast stream that stopped."""
    if "forecast missing" not in d.mode_reason:
        return d
    return replace(d, mode_reason=d.mode_reason.replace(
        "forecast missing", f"no forecast received for {age_s:.2f} s"))


def mode_change(before: str | None, d: Decision) -> str:
    """The log line for a step from mode `before` (None: the first step) to `d`'s; '' when
    the mode stayed."""
    if d.mode == before:
        return ""
    step = f"mode {before} -> {d.mode}" if before is not None else f"first mode {d.mode}"
    return step + (f" ({d.mode_reason})" if d.mode_reason else "")


def error_msgs(d: Decision, alloc: PowerAllocation) -> list[AllocationError]:
    """One AllocationError per correction of `d`, with `alloc`'s header and model."""
    out = []
    for c in d.corrections:
        err = AllocationError()
        err.header = alloc.header
        err.channel_id, err.mode = c.component, d.mode
        err.predicted_w, err.actual_w = float(c.predicted_w), float(c.actual_w)
        err.allocated_w, err.new_allocated_w = float(c.allocated_w), float(c.new_allocated_w)
        err.error_w = float(c.actual_w - c.predicted_w)
        err.action = c.action
        err.model_version = alloc.forecast_model
        out.append(err)
    return out


def actuator_statuses(name: str, state: str, controller, decision: Decision | None, counts,
                      link) -> list:
    """The actuator's /diagnostics: its allocation (mode, budget in force, counters), then
    one status per PDU or BMC of `link` (None: not configured)."""
    level, text, values = allocation_status(
        state, controller.mode, decision, controller.budget_w, counts,
        link.latency_ms if link is not None else [])
    statuses = [diagnostic_status(level, f"{name}: allocation", text, "pdu_actuator", values)]
    if link is not None:
        for p in link.status().pdus:
            level, text = device_status(p)
            label = f"PDU {p['name']}" if p["kind"] == "pdu" else p["name"]
            statuses.append(diagnostic_status(level, f"{name}: {label}", text, p["name"],
                                              dict(p)))
    return statuses
