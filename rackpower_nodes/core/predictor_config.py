"""Parameter schema and validated configuration of the `predictor` node (no rclpy)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, check_ids, load_config_yaml, param, read_parameters)

PREDICTOR_PARAMETERS: tuple[ParamSpec, ...] = (
    param("model.path", "", "string",
          "Versioned model directory to serve ('' = persistence fallback until a model_update)",
          read_only=False),
    param("inference.rate_hz", 10.0, "double", "Forecast rate in Hz", (0.5, 50.0)),
    param("inference.threads", 1, "integer",
          "torch threads for the LSTM's inference on the forecasting thread, or the ONNX "
          "session's threads (its 16 components take about a millisecond on one; more "
          "threads spin on a busy controller)", (1, 64)),
    param("inference.runtime", "auto", "string",
          "How an LSTM is served: 'onnx' (its weights.onnx in onnxruntime, torch not loaded), "
          "'torch' (weights.pt) or 'auto' (onnx when the model has a weights.onnx, else torch; "
          "read at each load)", choices=("auto", "onnx", "torch")),
    param("inputs.stale_after_s", 1.0, "double",
          "Inputs older than this switch a component to the fallback, s", (0.05, 60.0)),
    param("fallback.margin_frac", 0.25, "double",
          "Fallback headroom: p90 = last * (1 + m), p99 = last * (1 + 2 m)", (0.0, 5.0)),
    param("fallback.min_margin_w", 20.0, "double",
          "Smallest fallback headroom in W, added when m * last is smaller", (0.0, 10000.0)),
    param("components.names", [], "string_array", "Component ids to forecast, e.g. srv01"),
    param("components.idle_w", [], "double_array",
          "Idle power per component in W (one per components.names)"),
    param("components.max_w", [], "double_array",
          "Maximum power per component in W (its outlet or PSU limit; scales the model)"),
    param("schedule.file", "", "string",
          "YAML file with a top-level `schedule:` list of known workload jobs ('' = none)"),
    param("events.stale_after_s", 30.0, "double",
          "A workload_events snapshot older than this counts as unknown (no job), s",
          (0.1, 3600.0)),
    param("calibration.enabled", True, "bool",
          "Shift the published quantiles so that their peak over the actuation window is "
          "calibrated (conformal per component class, online from matured peaks)"),
    param("calibration.lead_s", 1.0, "double",
          "Start of the actuation window after now, s (the pdu_actuator's policy.lead_s)",
          (0.0, 600.0)),
    param("calibration.window_s", 1.0, "double",
          "Length of the actuation window, s (the pdu_actuator's policy.window_s)",
          (0.01, 600.0), positive=True),
    param("calibration.unit", "scale", "string",
          "Unit of the calibration scores: 'scale' (max_w) or 'spread' (the forecast's own "
          "p99 - p50 window-peak spread)", choices=("scale", "spread")),
    param("calendar.utc_offset_s", 0, "integer",
          "Offset of the rack's local time from UTC in s", (-50400, 50400)),
    param("publish.deadline_s", 0.5, "double", "QoS deadline of power_forecast in s",
          (0.01, 60.0), positive=True),
    param("frame_id", "rack", "string", "header.frame_id of published messages"),
)


@dataclass(frozen=True)
class PredictorConfig:
    model_path: str
    rate_hz: float
    stale_after_s: float
    margin_frac: float
    min_margin_w: float
    components: tuple[str, ...]
    idle_w: tuple[float, ...]
    max_w: tuple[float, ...]
    schedule_file: str
    utc_offset_s: int
    events_stale_after_s: float
    deadline_s: float
    frame_id: str
    calibration_enabled: bool = True
    calibration_lead_s: float = 1.0
    calibration_window_s: float = 1.0
    calibration_unit: str = "scale"
    inference_threads: int = 1
    inference_runtime: str = "auto"

    def calibration_settings(self):
        """The service's :class:`~.forecast.adaptive.CalibrationSettings` from this config."""
        from rackpower_nodes.core.forecast.adaptive import CalibrationSettings

        return CalibrationSettings(self.calibration_enabled, self.calibration_lead_s,
                                   self.calibration_window_s, self.calibration_unit)


def predictor_config_from_params(values: Mapping[str, Any]) -> PredictorConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(PREDICTOR_PARAMETERS, values, errors, "predictor")
    names = v.get("components.names", ())
    if not names:
        errors.append("components.names = []: expected at least one component id")
    check_ids("components.names", names, errors)
    for key in ("components.idle_w", "components.max_w"):
        arr = v.get(key, ())
        if len(arr) != len(names):
            errors.append(f"{key} = {list(arr)!r}: has {len(arr)} values, expected "
                          f"{len(names)} (one per components.names)")
    for i, (idle, peak) in enumerate(zip(v.get("components.idle_w", ()),
                                         v.get("components.max_w", ()))):
        if not (math.isfinite(idle) and math.isfinite(peak) and 0 <= idle < peak):
            errors.append(f"components.idle_w[{i}] = {idle!r}, components.max_w[{i}] = "
                          f"{peak!r}: expected 0 <= idle < max, finite, in W")
    schedule = v.get("schedule.file", "")
    if schedule and not Path(schedule).is_file():
        errors.append(f"schedule.file = {schedule!r}: no such file")
    if errors:
        raise ConfigError(errors)
    return PredictorConfig(
        model_path=v["model.path"], rate_hz=v["inference.rate_hz"],
        inference_threads=v["inference.threads"], inference_runtime=v["inference.runtime"],
        stale_after_s=v["inputs.stale_after_s"],
        margin_frac=v["fallback.margin_frac"],
        min_margin_w=v["fallback.min_margin_w"], components=tuple(names),
        idle_w=tuple(v["components.idle_w"]), max_w=tuple(v["components.max_w"]),
        schedule_file=schedule, utc_offset_s=v["calendar.utc_offset_s"],
        events_stale_after_s=v["events.stale_after_s"],
        calibration_enabled=v["calibration.enabled"], calibration_lead_s=v["calibration.lead_s"],
        calibration_window_s=v["calibration.window_s"], calibration_unit=v["calibration.unit"],
        deadline_s=v["publish.deadline_s"], frame_id=v["frame_id"])


def load_predictor_config_yaml(path: str | Path, node_name: str = "predictor") -> PredictorConfig:
    return load_config_yaml(path, node_name, predictor_config_from_params)
