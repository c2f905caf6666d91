"""The simulated BMC's Redfish wire format: paths, resource documents and PATCH body checks.

Pure, no I/O and no lock: the server (`rackpower_nodes.sim.bmc.server`) holds the state and
calls these. A chassis' limit is kept in `_Chassis`; `_metrics_reply` and `_power_reply` render
it in the EnvironmentMetrics and the legacy Power schema, `_metrics_change` and
`_power_change` check a PATCH body the way a strict BMC does and return the change to apply.
Every refusal is a `_Refusal` (HTTP status, Redfish MessageId, message) that the server answers
with `_error_doc`. Powers are in watts (W).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

APIS = ("environment_metrics", "power_control", "mixed", "both", "none")

_ROOT = "/redfish/v1"
_SESSIONS = f"{_ROOT}/SessionService/Sessions"
_REGISTRY = "Base.1.8"
_CONTROL_MODES = ("Automatic", "Override", "Manual", "Disabled")
_LIMIT_EXCEPTIONS = ("NoAction", "HardPowerOff", "LogEventOnly", "Oem")
_CHASSIS_PATH = re.compile(rf"{_ROOT}/Chassis/([\w.\-]+)")


class _Refusal(Exception):
    """A request answered with a Redfish error: HTTP status, MessageId and message."""

    def __init__(self, status: int, message_id: str, message: str,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message_id, self.message = status, message_id, message
        self.headers = headers or {}


@dataclass
class _Reply:
    status: int
    doc: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Request:
    headers: Mapping[str, str]
    body: bytes


@dataclass
class _Chassis:
    api: str
    allowable_min_w: float
    allowable_max_w: float
    set_point_w: float | None = None
    enabled: bool = False
    limit_exception: str = "LogEventOnly"
    correction_ms: int = 1000
    version: int = 1                  # bumps with every successful PATCH: the ETag
    #: the chassis' power supplies (each one's rated capacity, W; none: no PowerSupplies)
    #: and their latest meter readings, W (None: not read yet, shown as null)
    psu_capacity_w: tuple[float, ...] = ()
    psu_in_w: tuple[float, ...] | None = None
    psu_out_w: tuple[float, ...] | None = None

    @property
    def limit_w(self) -> float | None:
        return self.set_point_w if self.enabled else None

    def has(self, resource: str) -> bool:
        """Whether the chassis serves `resource` ("EnvironmentMetrics" or "Power")."""
        if resource == "EnvironmentMetrics":
            return self.api != "power_control"
        return self.api in ("power_control", "mixed", "both") or bool(self.psu_capacity_w)

    def limits_in(self, resource: str) -> bool:
        """Whether `resource` carries the power limit."""
        if resource == "EnvironmentMetrics":
            return self.api in ("environment_metrics", "both")
        return self.api in ("power_control", "mixed", "both")


def _error_doc(status: int, message_id: str, message: str) -> dict:
    return {"error": {"code": f"{_REGISTRY}.GeneralError", "message": message,
                      "@Message.ExtendedInfo": [{
                          "@odata.type": "#Message.v1_1_1.Message",
                          "MessageId": f"{_REGISTRY}.{message_id}", "Message": message,
                          "MessageSeverity": "Critical" if status >= 500 else "Warning"}]}}


def _is_watts(value) -> bool:
    """A JSON number that is a finite power >= 0 (bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:
        return False


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _allow(method: str, methods: tuple[str, ...]) -> None:
    if method not in methods:
        raise _Refusal(405, "OperationNotAllowed", f"The HTTP method {method} is not "
                       f"allowed here; allowed: {', '.join(methods)}.",
                       {"Allow": ", ".join(methods)})


def _json(body: bytes) -> dict:
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refusal(400, "MalformedJSON", f"The request body submitted was malformed "
                       f"JSON and could not be parsed: {exc}.") from None
    if not isinstance(doc, dict):
        raise _Refusal(400, "MalformedJSON", "The request body must be a JSON object.")
    return doc


def _unknown(doc: dict, allowed: Sequence[str], where: str,
             read_only: Sequence[str] = ()) -> None:
    """400 for properties of `doc` outside `allowed`, naming them."""
    extra = [k for k in doc if k not in allowed and not k.startswith("@odata.")]
    if not extra:
        return
    names = ", ".join(where + k for k in extra)
    if all(k in read_only for k in extra):
        raise _Refusal(400, "PropertyNotWritable", f"The property {names} is a read only "
                       f"property and cannot be assigned a value.")
    raise _Refusal(400, "PropertyUnknown", f"The property {names} is not in the list of valid "
                   f"properties for the resource (writable here: "
                   f"{', '.join(where + a for a in allowed) or 'none'}).")


# -- documents --------------------------------------------------------------------------------
def _service_root() -> dict:
    return {"@odata.id": f"{_ROOT}/", "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService", "Name": "rackpower simulated BMC",
            "RedfishVersion": "1.17.0", "UUID": "8f5e2c43-7a42-4b1e-9c3a-72706f776572",
            "Chassis": {"@odata.id": f"{_ROOT}/Chassis"},
            "SessionService": {"@odata.id": f"{_ROOT}/SessionService"},
            "Links": {"Sessions": {"@odata.id": _SESSIONS}}}


def _etag(cid: str, ch: _Chassis) -> str:
    return f'"{cid}-{ch.version}"'


def _metrics_reply(cid: str, ch: _Chassis, reading: float | None) -> _Reply:
    base = f"{_ROOT}/Chassis/{cid}"
    doc = {"@odata.id": f"{base}/EnvironmentMetrics",
           "@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
           "Id": "EnvironmentMetrics", "Name": f"Chassis {cid} Environment Metrics",
           "PowerWatts": {"Reading": reading}}
    if ch.limits_in("EnvironmentMetrics"):
        doc["PowerLimitWatts"] = {
            "SetPoint": ch.set_point_w, "AllowableMin": ch.allowable_min_w,
            "AllowableMax": ch.allowable_max_w,
            "ControlMode": "Automatic" if ch.enabled else "Disabled"}
    return _Reply(200, doc, {"ETag": _etag(cid, ch)})


def _power_reply(cid: str, ch: _Chassis, reading: float | None) -> _Reply:
    base = f"{_ROOT}/Chassis/{cid}/Power"
    control = {"@odata.id": f"{base}#/PowerControl/0", "MemberId": "0",
               "Name": "Server Power Control", "PowerConsumedWatts": reading,
               "PowerCapacityWatts": ch.allowable_max_w}
    if ch.limits_in("Power"):
        control["PowerLimit"] = {"LimitInWatts": ch.limit_w,
                                 "LimitException": ch.limit_exception,
                                 "CorrectionInMs": ch.correction_ms}
    doc = {"@odata.id": base, "@odata.type": "#Power.v1_7_1.Power", "Id": "Power",
           "Name": "Power", "PowerControl": [control], "PowerControl@odata.count": 1}
    if ch.psu_capacity_w:
        doc["PowerSupplies"] = _power_supplies(base, ch)
        doc["PowerSupplies@odata.count"] = len(ch.psu_capacity_w)
    return _Reply(200, doc, {"ETag": _etag(cid, ch)})


def _power_supplies(base: str, ch: _Chassis) -> list[dict]:
    """PowerSupplies[] of the legacy Power resource (Power.v1_7_1): each PSU's PMBus input
    and output readings (null before the first), W; LastPowerOutputWatts as older BMCs
    report the output."""
    out = []
    for i, capacity in enumerate(ch.psu_capacity_w):
        p_in = None if ch.psu_in_w is None else ch.psu_in_w[i]
        p_out = None if ch.psu_out_w is None else ch.psu_out_w[i]
        out.append({"@odata.id": f"{base}#/PowerSupplies/{i}", "MemberId": str(i),
                    "Name": f"PSU {i + 1}", "PowerSupplyType": "AC",
                    "PowerCapacityWatts": capacity, "PowerInputWatts": p_in,
                    "PowerOutputWatts": p_out, "LastPowerOutputWatts": p_out,
                    "Status": {"State": "Enabled", "Health": "OK"}})
    return out


# -- PATCH bodies ------------------------------------------------------------------------------
def _metrics_change(ch: _Chassis, doc: dict) -> Callable[[_Chassis], None]:
    """The change a PATCH of EnvironmentMetrics asks for; a `_Refusal` when the body is bad."""
    if not ch.limits_in("EnvironmentMetrics"):
        _unknown(doc, (), "")
    _unknown(doc, ("PowerLimitWatts",), "", read_only=("PowerWatts", "Id", "Name"))
    plw = doc.get("PowerLimitWatts")
    if not isinstance(plw, dict) or not plw:
        raise _Refusal(400, "PropertyValueTypeError", "The value for the property "
                       "PowerLimitWatts must be an object with SetPoint and/or "
                       "ControlMode.")
    _unknown(plw, ("SetPoint", "ControlMode"), "PowerLimitWatts/",
             read_only=("AllowableMin", "AllowableMax", "Reading", "DataSourceUri"))
    set_point = plw.get("SetPoint", ...)
    mode = plw.get("ControlMode", ...)
    if mode is not ... and mode not in _CONTROL_MODES:
        raise _Refusal(400, "PropertyValueNotInList", f"The value {json.dumps(mode)} for "
                       f"the property PowerLimitWatts/ControlMode is not in the list of "
                       f"acceptable values ({', '.join(_CONTROL_MODES)}).")
    if set_point is not ...:
        _check_limit(ch, set_point, "PowerLimitWatts/SetPoint")

    def apply(c: _Chassis) -> None:
        if set_point is not ...:
            c.set_point_w = float(set_point)
        if mode is not ...:
            c.enabled = mode != "Disabled"
        elif set_point is not ...:
            c.enabled = True
    return apply


def _power_change(ch: _Chassis, doc: dict) -> Callable[[_Chassis], None]:
    """The change a PATCH of Power asks for; a `_Refusal` when the body is bad."""
    if not ch.limits_in("Power"):         # PowerSupplies only: nothing writable here
        _unknown(doc, (), "", read_only=("Id", "Name", "PowerControl", "PowerSupplies"))
    _unknown(doc, ("PowerControl",), "",
             read_only=("Id", "Name", "Voltages", "PowerSupplies"))
    controls = doc.get("PowerControl")
    if not isinstance(controls, list) or len(controls) != 1 \
            or not isinstance(controls[0], dict):
        raise _Refusal(400, "PropertyValueTypeError", "The value for the property "
                       "PowerControl must be an array of one object (this chassis has "
                       "one PowerControl member).")
    _unknown(controls[0], ("PowerLimit",), "PowerControl/0/",
             read_only=("MemberId", "Name", "PowerConsumedWatts", "PowerCapacityWatts"))
    limit = controls[0].get("PowerLimit")
    if not isinstance(limit, dict) or not limit:
        raise _Refusal(400, "PropertyValueTypeError", "The value for the property "
                       "PowerControl/0/PowerLimit must be a non-empty object.")
    where = "PowerControl/0/PowerLimit/"
    _unknown(limit, ("LimitInWatts", "LimitException", "CorrectionInMs"), where)
    watts = limit.get("LimitInWatts", ...)
    if watts is not ... and watts is not None:
        _check_limit(ch, watts, where + "LimitInWatts")
    exc = limit.get("LimitException", ...)
    if exc is not ... and exc not in _LIMIT_EXCEPTIONS:
        raise _Refusal(400, "PropertyValueNotInList", f"The value {json.dumps(exc)} for "
                       f"the property {where}LimitException is not in the list of "
                       f"acceptable values ({', '.join(_LIMIT_EXCEPTIONS)}).")
    corr = limit.get("CorrectionInMs", ...)
    if corr is not ... and (isinstance(corr, bool) or not isinstance(corr, int)
                            or corr < 0):
        raise _Refusal(400, "PropertyValueTypeError", f"The value {json.dumps(corr)} for "
                       f"the property {where}CorrectionInMs must be an integer >= 0.")

    def apply(c: _Chassis) -> None:
        if watts is not ...:
            c.enabled = watts is not None
            if watts is not None:
                c.set_point_w = float(watts)
        if exc is not ...:
            c.limit_exception = exc
        if corr is not ...:
            c.correction_ms = corr
    return apply


def _check_limit(ch: _Chassis, value, name: str) -> None:
    if not _is_watts(value):
        raise _Refusal(400, "PropertyValueTypeError", f"The value {json.dumps(value)} for "
                       f"the property {name} is of a different type than the property "
                       f"can accept: expected a finite number >= 0 (W).")
    if not ch.allowable_min_w <= value <= ch.allowable_max_w:
        raise _Refusal(400, "PropertyValueOutOfRange", f"The value {value:g} for the "
                       f"property {name} is not in the supported range of acceptable "
                       f"values ({ch.allowable_min_w:g} to {ch.allowable_max_w:g} W).")
