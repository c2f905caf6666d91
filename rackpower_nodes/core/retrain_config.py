"""Parameter schema and validated configuration of the `retrain_scheduler` node (no rclpy)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.params import ConfigError, ParamSpec, load_config_yaml, param, \
    read_parameters
from rackpower_nodes.core.retrain.policy import OffPeakPolicy, RetrainError, parse_window

RETRAIN_PARAMETERS: tuple[ParamSpec, ...] = (
    param("registry.root", "", "string",
          "Model registry folder (registry.json + model versions); created if missing"),
    param("registry.keep_rejected", 10, "integer",
          "Model folders of rejected challengers kept (newest first); older ones are deleted, "
          "their registry entries kept", (0, 100000)),
    param("bags.folder", "", "string", "Folder of recorded rosbag2 bags (folders or .mcap)"),
    param("bags.namespace", "", "string",
          "Rack namespace of the topics inside the bags ('' = the only rack recorded)"),
    param("bags.max_span_s", 86400.0, "double",
          "Train on the newest bags covering at most this span, s", (60.0, 3.2e7)),
    param("bags.max_bytes", 2 << 30, "integer",
          "Train on the newest bags up to this many bytes in all", (1, 1 << 50)),
    param("offpeak.windows", ["01:00-05:00"], "string_array",
          "Local-time windows 'HH:MM-HH:MM' (end before start crosses midnight)"),
    param("offpeak.utc_offset_s", 0, "integer", "Local time minus UTC, s", (-50400, 50400)),
    param("offpeak.load_threshold_frac", 0.0, "double",
          "Load rule: rack load below this fraction of offpeak.budget_w (0 = off)", (0.0, 1.0)),
    param("offpeak.budget_w", 0.0, "double", "Rack power budget for the load rule, W",
          (0.0, 1e7)),
    param("offpeak.load_min_s", 600.0, "double",
          "Load rule: the load must stay low this long, s", (0.0, 86400.0)),
    param("offpeak.combine", "any", "string",
          "'any': a window or the load rule; 'all': every configured rule",
          choices=("any", "all")),
    param("offpeak.min_interval_s", 21600.0, "double",
          "Least time between two automatic retrains (attempts included), s", (0.0, 3.2e7)),
    param("policy.check_period_s", 10.0, "double", "How often the policy is checked, s",
          (0.1, 3600.0)),
    param("windows.step_s", 0.1, "double", "Model step for a first model, s (a champion's "
          "window spec wins)", (0.001, 3600.0)),
    param("windows.history_steps", 50, "integer", "Input steps for a first model", (1, 10000)),
    param("windows.horizon_steps", 50, "integer", "Forecast steps for a first model",
          (1, 10000)),
    param("windows.coarse", [10, 100], "integer_array",
          "Coarse resolutions in steps (each >= 2) for a first model"),
    param("windows.stride", 20, "integer", "Steps between training windows", (1, 10000)),
    param("training.model", "auto", "string",
          "The challenger: 'lstm'; 'served', the served forecaster (persistence, EWMA, "
          "LightGBM and the LSTM, each component class served the one that earns it); "
          "'auto': the kind of the model in service (an LSTM when there is none)",
          choices=("auto", "lstm", "served")),
    param("training.threads", 1, "integer", "torch (and LightGBM) threads of the training job",
          (1, 64)),
    param("training.nice", 19, "integer", "Niceness added to the training job", (0, 19)),
    param("training.max_seconds", 1800.0, "double",
          "The job is killed after this wall time, s", (10.0, 86400.0)),
    param("training.max_rss_mb", 2048.0, "double",
          "The job is killed above this resident memory, MB", (100.0, 1e6)),
    param("training.hidden_size", 64, "integer", "LSTM hidden units", (1, 4096)),
    param("training.max_epochs", 20, "integer", "LSTM epochs at most", (1, 10000)),
    param("training.samples_per_epoch", 0, "integer",
          "Training windows drawn per epoch (0 = all)", (0, 1 << 40)),
    param("training.max_windows", 200000, "integer",
          "Windows built from the data at most (random sample)", (100, 1 << 40)),
    param("training.seed", 0, "integer", "Seed for sampling and training", (0, 1 << 31)),
    param("evaluation.holdout_s", 600.0, "double",
          "The newest data held out for champion vs challenger, s", (10.0, 86400.0)),
    param("evaluation.metric", "mae", "string", "Promotion metric", choices=("mae", "pinball")),
    param("evaluation.margin_frac", 0.02, "double",
          "The challenger must be better by this fraction", (0.0, 0.9)),
    param("weighting.max_weight", 4.0, "double",
          "Weight of a window next to an error of error_ref_w or more", (1.0, 100.0)),
    param("weighting.error_ref_w", 50.0, "double", "Error that earns the full weight, W",
          (0.001, 1e6)),
    param("weighting.radius_s", 5.0, "double",
          "Errors this close to a window's forecast span count for it, s", (0.0, 3600.0)),
    param("weighting.keep_errors", 20000, "integer",
          "Newest AllocationErrors kept for the next retrain", (0, 10_000_000)),
    param("health.margin_s", 900.0, "double",
          "Data of a component this long before its fault's since_unix (the evidence starts "
          "before the alarm) is left out of retraining too, s", (0.0, 86400.0)),
    param("health.max_intervals", 64, "integer",
          "Flagged fault intervals kept per component (newest), besides the span rule "
          "(those that ended over bags.max_span_s ago are dropped)", (1, 100000)),
)


@dataclass(frozen=True)
class RetrainConfig:
    registry_root: str
    policy: OffPeakPolicy
    check_period_s: float
    keep_errors: int
    settings: dict      # RetrainPipeline settings (bag folder, limits, the job's request part)
    flag_keep_s: float = 86400.0    # fault intervals that ended longer ago are dropped, s
    max_flags: int = 64             # fault intervals kept per component


def retrain_config_from_params(values: Mapping[str, Any]) -> RetrainConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(RETRAIN_PARAMETERS, values, errors, "retrain_scheduler")
    for key in ("registry.root", "bags.folder"):
        if key in v and not v[key]:
            errors.append(f"{key} = '': expected a folder path")
    for i, text in enumerate(v.get("offpeak.windows", ())):
        try:
            parse_window(text)
        except RetrainError as exc:
            errors.append(f"offpeak.windows[{i}] = {text!r}: {exc}")
    coarse = v.get("windows.coarse", ())
    if any(k < 2 for k in coarse):
        errors.append(f"windows.coarse = {list(coarse)!r}: expected integers >= 2")
    if errors:
        raise ConfigError(errors)
    try:
        policy = OffPeakPolicy(
            windows=v["offpeak.windows"], utc_offset_s=float(v["offpeak.utc_offset_s"]),
            load_threshold_frac=v["offpeak.load_threshold_frac"],
            budget_w=v["offpeak.budget_w"], load_min_s=v["offpeak.load_min_s"],
            combine=v["offpeak.combine"], min_interval_s=v["offpeak.min_interval_s"])
    except RetrainError as exc:
        raise ConfigError(f"offpeak.*: {exc}") from exc
    return RetrainConfig(registry_root=v["registry.root"], policy=policy,
                         check_period_s=v["policy.check_period_s"],
                         keep_errors=v["weighting.keep_errors"], settings=_settings(v),
                         flag_keep_s=v["bags.max_span_s"], max_flags=v["health.max_intervals"])


def _settings(v: dict) -> dict:
    job = {
        "spec": {"step_s": v["windows.step_s"], "history_steps": v["windows.history_steps"],
                 "horizon_steps": v["windows.horizon_steps"],
                 "coarse": list(v["windows.coarse"]), "stride": v["windows.stride"]},
        "lstm": {"hidden_size": v["training.hidden_size"],
                 "max_epochs": v["training.max_epochs"],
                 "samples_per_epoch": v["training.samples_per_epoch"],
                 "max_train_s": 0.8 * v["training.max_seconds"]},
        "model": v["training.model"],
        "threads": v["training.threads"], "nice": v["training.nice"],
        "max_windows": v["training.max_windows"], "seed": v["training.seed"],
        "holdout_s": v["evaluation.holdout_s"],
        "weighting": {"max_weight": v["weighting.max_weight"],
                      "error_ref_w": v["weighting.error_ref_w"],
                      "radius_s": v["weighting.radius_s"]},
        "exclusion": {"margin_s": v["health.margin_s"]},
    }
    return {"bag_folder": v["bags.folder"], "namespace": v["bags.namespace"] or None,
            "max_span_s": v["bags.max_span_s"], "max_bytes": v["bags.max_bytes"],
            "metric": v["evaluation.metric"], "margin_frac": v["evaluation.margin_frac"],
            "max_seconds": v["training.max_seconds"],
            "max_rss_mb": v["training.max_rss_mb"], "job": job,
            "keep_rejected": v["registry.keep_rejected"]}


def load_retrain_config_yaml(path: str | Path,
                             node_name: str = "retrain_scheduler") -> RetrainConfig:
    return load_config_yaml(path, node_name, retrain_config_from_params)
