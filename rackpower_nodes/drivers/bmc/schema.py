"""Where a Redfish chassis keeps its power limit: the two DMTF schemas, read from JSON.

Pure functions of the resources' JSON documents: the link to a resource, the part holding the
limit, and the (reading W, limit W or None) a resource shows, in either schema
(EnvironmentMetrics or the legacy Power; see the package docstring).
"""
from __future__ import annotations

import math

APIS = ("environment_metrics", "power_control")


_LIMIT_NAMES = {"environment_metrics": "PowerLimitWatts",
                "power_control": "PowerControl[0].PowerLimit"}


def _link(doc: dict, name: str) -> str | None:
    ref = doc.get(name)
    target = ref.get("@odata.id") if isinstance(ref, dict) else None
    return target if isinstance(target, str) and target else None


def _limit_part(api: str, doc: dict) -> dict | None:
    """PowerLimitWatts or PowerControl[0].PowerLimit of `doc`, None when absent."""
    if api == "environment_metrics":
        part = doc.get("PowerLimitWatts")
    else:
        controls = doc.get("PowerControl")
        first = controls[0] if isinstance(controls, list) and controls else None
        part = first.get("PowerLimit") if isinstance(first, dict) else None
    return part if isinstance(part, dict) else None


def _number(value, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} is {value!r}, expected a number")
    return float(value)


def _state(api: str, doc: dict) -> tuple[float, float | None]:
    """(reading W (NaN when not shown), limit W or None) of a limit resource."""
    part = _limit_part(api, doc)
    if api == "environment_metrics":
        if part is None:
            raise KeyError("no PowerLimitWatts")
        power = doc.get("PowerWatts")
        reading = power.get("Reading") if isinstance(power, dict) else None
        set_point = _number(part.get("SetPoint"), "PowerLimitWatts/SetPoint", math.nan)
        enabled = part.get("ControlMode") != "Disabled" and not math.isnan(set_point)
        return (_number(reading, "PowerWatts/Reading", math.nan),
                set_point if enabled else None)
    if part is None:
        raise KeyError("no PowerControl[0].PowerLimit")
    reading = doc["PowerControl"][0].get("PowerConsumedWatts")
    limit = _number(part.get("LimitInWatts"), "PowerControl[0].PowerLimit.LimitInWatts",
                    math.nan)
    return (_number(reading, "PowerControl[0].PowerConsumedWatts", math.nan),
            None if math.isnan(limit) else limit)


def _state_of(api: str, resp) -> tuple[float, float | None] | None:
    """`_state` of a response's body; None when it does not show the limit."""
    try:
        doc = resp.dict
        return _state(api, doc) if isinstance(doc, dict) else None
    except Exception:  # noqa: BLE001 - invalid JSON or missing properties: not shown
        return None
