"""The `pdu_actuator`'s health as its /diagnostics says it, with no rclpy.

Each status is a level (:data:`OK`, :data:`WARN`, :data:`ERROR`: the bytes that
``diagnostic_msgs/DiagnosticStatus.level`` holds), a message and, for the allocation, its key
values: :func:`allocation_status` for the controller (lifecycle state, mode, counters, the
write latency of the PDU link) and :func:`device_status` for one PDU or BMC from the link's
status. The node wraps them into DiagnosticStatus messages.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.allocation import Decision

__all__ = ["ERROR", "FOREIGN_WARN_S", "OK", "WARN", "ActuatorCounts", "allocation_status",
           "device_status"]

OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"     # diagnostic_msgs/DiagnosticStatus levels
FOREIGN_WARN_S = 10.0     # a foreign value found this recently keeps a device at WARN


@dataclass
class ActuatorCounts:
    """What the node counts for /diagnostics."""

    steps: int = 0
    corrections: int = 0
    failures: int = 0             # control steps that raised (the static split was written)
    safe_entries: int = 0
    last_mode_change: str = ""


def allocation_status(state: str, requested_mode: str, d: Decision | None, budget_w: float,
                      counts: ActuatorCounts,
                      latency_ms: Sequence[float]) -> tuple[bytes, str, dict[str, object]]:
    """Level, message and values of the allocation in lifecycle `state`, `d` being the newest
    decision and `latency_ms` the link's times from a batch's callback to its allocation
    written to every PDU (link-wide)."""
    values = {"lifecycle_state": state, "requested_mode": requested_mode,
              "mode": d.mode if d else "-", "mode_reason": d.mode_reason if d else "",
              "steps": counts.steps, "corrections": counts.corrections,
              "step_failures": counts.failures, "safe_entries": counts.safe_entries,
              "budget_w": f"{budget_w:.0f}",
              "allocated_w": f"{d.allocated_w.sum():.0f}" if d else "-",
              "last_mode_change": counts.last_mode_change}
    if state != "active":
        level, text = WARN, f"{state}: not allocating"
    elif d is not None and d.mode == "safe":
        level, text = WARN, f"safe mode: {d.mode_reason}"
    else:
        level, text = OK, f"{d.mode if d else 'starting'}"
    if latency_ms:
        lat = np.array(latency_ms)
        values["write_latency_ms_p50"] = f"{np.percentile(lat, 50):.2f}"
        values["write_latency_ms_p99"] = f"{np.percentile(lat, 99):.2f}"
    return level, text, values


def device_status(p: dict) -> tuple[bytes, str]:
    """Level and message of one PDU's or BMC's diagnostics from its link status: ERROR when
    it does not answer, WARN while a value found on it differs from the one written (or did
    within FOREIGN_WARN_S), naming the device, outlet, expected and found values."""
    if not p["connected"]:
        return ERROR, f"not answering: {p['last_error']}"
    age = p["last_foreign_age_s"]
    if p["uncorrected"]:
        return WARN, f"foreign value, correcting: {p['last_foreign_value']}"
    if age is not None and age < FOREIGN_WARN_S:
        return WARN, f"foreign value corrected: {p['last_foreign_value']}"
    return OK, "connected"
