"""The held-out day and the rack for ``rackpower-evaluate``: configs, demand, forecasts, PDU.

Shared by the mode comparison (:mod:`.evaluate_cli`) and the trade-off sweep
(:mod:`.evaluate_sweep`): the actuator config of a YAML with ``NAME:=VALUE`` overrides, the
simulated day (a saved run, or one simulated now, optionally from a later hour and of a
preset), its demand in the controller's order, a fresh forecaster fed like the predictor node
(with the run's job log when it has one) and a fresh simulated PDU.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rackpower_nodes.core.actuator_config import actuator_config_from_params
from rackpower_nodes.core.evaluation import EvalSetup, Forecasts
from rackpower_nodes.core.params import ConfigError, load_node_parameters
from rackpower_nodes.core.predictor_config import load_predictor_config_yaml

__all__ = ["CliError", "actuator_config", "demand_columns", "load_day", "make_forecasts",
           "make_pdu"]

_log = logging.getLogger("rackpower_evaluate")


class CliError(Exception):
    """A command-line problem a person can fix; printed without a traceback."""


def _default_config(preset: str | None = None) -> Path:
    here = Path(__file__).resolve()
    name = "rack.yaml" if preset in (None, "office") else f"rack_{preset}.yaml"
    for candidate in (here.parents[2] / "config" / name,
                      Path(sys.prefix) / "share" / "rackpower" / "config" / name):
        if candidate.is_file():
            return candidate
    raise CliError(f"no config/{name} found: pass --config")


def actuator_config(path: Path, overrides: Sequence[str]):
    """The pdu_actuator section of `path` with `NAME:=VALUE` overrides (YAML values)."""
    import yaml

    values = load_node_parameters(path, "pdu_actuator")
    for item in overrides:
        name, sep, text = item.partition(":=")
        if not sep or not name:
            raise CliError(f"-p {item!r}: expected NAME:=VALUE, e.g. policy.quantile:=p90")
        try:
            values[name.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CliError(f"-p {item!r}: value is not YAML: {exc}") from exc
    try:
        return actuator_config_from_params(values)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {e}" for e in exc.errors]) from exc


def load_day(args):
    from rackpower_nodes.sim.rack_sim import SimData, generate

    if args.sim is not None:
        if not (args.sim / "rack_sim.json").is_file():
            raise CliError(f"--sim {args.sim}: no rack_sim.json there (a rackpower-sim fast "
                           "folder expected)")
        return SimData.load(args.sim)
    if not args.hours > 0:
        raise CliError(f"--hours {args.hours}: expected > 0")
    if not args.from_h >= 0:
        raise CliError(f"--from-h {args.from_h}: expected >= 0")
    data = generate(args.from_h + args.hours, seed=args.seed, preset=args.preset)
    return _drop_first(data, args.from_h) if args.from_h > 0 else data


def _drop_first(data, hours: float):
    """``data`` without its first ``hours`` (whole seconds): samples, per-second telemetry and
    the start move; the job log keeps its absolute times."""
    import dataclasses

    seconds = int(round(hours * 3600))
    first = int(round(seconds * data.rate_hz))
    return dataclasses.replace(
        data, power_w=data.power_w[first:], util=data.util[first:],
        start_unix=data.start_unix + seconds,
        telemetry={k: v[seconds:] for k, v in data.telemetry.items()})


def demand_columns(data, names: Sequence[str]) -> np.ndarray:
    missing = [n for n in names if n not in data.names]
    if missing:
        raise CliError(f"components {missing} of the pdu_actuator config are not in the "
                       f"simulated rack ({', '.join(data.names)})")
    return np.ascontiguousarray(
        data.power_w[:, [data.names.index(n) for n in names]], dtype=np.float64)


def make_forecasts(data, names, config_path: Path, model: Path | None, threads: int):
    import torch

    from rackpower_nodes.sim.dataset import from_sim
    from rackpower_nodes.core.forecast.forecaster import ModelLoadError
    from rackpower_nodes.core.forecast.serving import ForecastService
    from rackpower_nodes.core.schedule import WorkloadSchedule

    torch.set_num_threads(max(threads, 1))
    pcfg = load_predictor_config_yaml(config_path)
    spec = dict(zip(pcfg.components, zip(pcfg.idle_w, pcfg.max_w)))
    missing = [n for n in names if n not in spec]
    if missing:
        raise CliError(f"components {missing} have no idle_w/max_w in the predictor config")
    config = data.meta.get("config")
    schedule = WorkloadSchedule.from_config(config) if isinstance(config, dict) else None
    service = ForecastService(names, [spec[n][0] for n in names], [spec[n][1] for n in names],
                              schedule, pcfg.stale_after_s, pcfg.margin_frac, pcfg.min_margin_w,
                              events_stale_after_s=pcfg.events_stale_after_s,
                              calibration=pcfg.calibration_settings())
    if model is not None:
        try:
            service.load(str(model))
        except ModelLoadError as exc:
            raise CliError(str(exc)) from exc
    else:
        _log.warning("no --model: proactive mode runs on the persistence fallback")
    series = {s.component: s for s in from_sim(data)}
    tele = np.stack([series[n].telemetry for n in names])
    return Forecasts(service, names, tele, data.start_unix, data.rate_hz,
                     None if data.events is None else data.events.events_at)


def make_pdu(data, setup: EvalSetup):
    from rackpower_nodes.sim.pdu import PduModel

    ceilings = np.array([c.ceiling_w for c in setup.components])
    return PduModel(ceilings, breaker_w=setup.policy.breaker_w)

