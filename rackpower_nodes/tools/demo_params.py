"""The parameter files `make demo` (`tools/demo.py`) hands its nodes: the simulator's devices
on the free ports its manifest names, a scratch folder for what they write, and rules a
40-second demo can reach."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from rackpower_nodes.tools.launch_env import share_file

__all__ = ["SIM_BMC_PASSWORD", "SIM_BMC_USER", "actuator_params", "health_params",
           "recorder_params", "retrain_params", "telemetry_params"]

SIM_BMC_USER, SIM_BMC_PASSWORD = "admin", "rackpower"     # rackpower-sim live's defaults


def _pdus(manifest: dict) -> dict:
    """The simulator's PDUs (its manifest's) as a node's `pdus` parameters."""
    pdus = manifest["pdus"]
    return {"names": [p["name"] for p in pdus], "urls": [p["url"] for p in pdus],
            "maps": [p["map"] for p in pdus], "unit_ids": [p["unit_id"] for p in pdus]}


def telemetry_params(tmp: Path, manifest: dict) -> Path:
    params = {"hosts": {"names": manifest["hosts"], "urls": manifest["host_urls"]},
              "schedule": {"file": str(share_file("config", "rack_sim.yaml"))}}
    path = tmp / "telemetry.yaml"
    path.write_text(yaml.safe_dump({"/**/host_telemetry": {"ros__parameters": params}}))
    return path


def _chassis_urls(manifest: dict, config: str, node: str) -> list[str]:
    """Per component that `node`'s section of `config` names, its simulated BMC chassis
    URL (from the manifest) or '' (none)."""
    raw = yaml.safe_load(Path(config).read_text())
    names = raw[f"/**/{node}"]["ros__parameters"]["components"]["names"]
    return [manifest["bmcs"].get(n, "") for n in names]


def actuator_params(tmp: Path, manifest: dict, config: str) -> Path:
    """The simulator's PDUs and BMCs as the pdu_actuator finds them (free ports, from its
    manifest), for the components `config` names."""
    params = {"pdus": _pdus(manifest),
              "components": {"power_cap_url": _chassis_urls(manifest, config, "pdu_actuator")},
              "power_caps": {"username": SIM_BMC_USER}}
    path = tmp / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    return path


def health_params(tmp: Path, manifest: dict, config: str) -> Path:
    """The simulator's PDUs (free ports, from its manifest) as health_monitor's reference
    meters and, for the components `config` names, its BMCs' chassis as the PSU meters read;
    an online-learned model would go to the demo's scratch folder."""
    params = {"reference": {"pdus": _pdus(manifest)},
              "health": {"learn_dir": str(tmp / "health")},
              "psu_meters": {"components": {"url": _chassis_urls(manifest, config,
                                                                 "health_monitor")},
                             "username": SIM_BMC_USER}}
    path = tmp / "health.yaml"
    path.write_text(yaml.safe_dump({"/**/health_monitor": {"ros__parameters": params}}))
    return path


def recorder_params(tmp: Path) -> Path:
    params = {"output": {"folder": str(tmp / "bags"), "prefix": "demo"},
              "rotation": {"max_duration_s": 10.0}}
    path = tmp / "recorder.yaml"
    path.write_text(yaml.safe_dump({"/**/recorder": {"ros__parameters": params}}))
    return path


def retrain_params(tmp: Path, model: Path) -> Path:
    """A registry with the demo model as champion; an off-peak rule a demo can reach."""
    from rackpower_nodes.core.model_registry import ModelRegistry

    registry = ModelRegistry(tmp / "registry")
    champion = tmp / "champion" / model.name
    shutil.copytree(model, champion)
    registry.register(champion, {"sim": "2 simulated hours, seed 11"}, {})
    registry.promote(model.name, "the demo's model")
    params = {"registry": {"root": str(registry.root)},
              "bags": {"folder": str(tmp / "bags")},
              # "quiet" = below 100 % of the budget for 30 s: reached during the demo
              "offpeak": {"load_threshold_frac": 1.0, "load_min_s": 30.0,
                          "min_interval_s": 25.0},
              "policy": {"check_period_s": 2.0},
              "windows": {"stride": 1},
              "training": {"hidden_size": 16, "max_epochs": 2, "max_seconds": 120.0},
              "evaluation": {"holdout_s": 120.0}}
    path = tmp / "retrain.yaml"
    path.write_text(yaml.safe_dump({"/**/retrain_scheduler": {"ros__parameters": params}}))
    return path
