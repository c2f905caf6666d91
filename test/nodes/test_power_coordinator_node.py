"""The power_coordinator refuses a configuration it cannot serve: the real executable exits 2
before it grants anything, its stderr naming the key (and for a typo the key it meant); and
its parameters without ROS (plain pytest)."""
from __future__ import annotations

import subprocess

import pytest
import yaml
from helpers.room_live import tree_doc

from rackpower_nodes.core.coordinator_config import (
    coordinator_config_from_params, load_coordinator_tree)
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.tools.launch_env import executable


def _tree(tmp_path, doc=None) -> str:
    path = tmp_path / "room.yaml"
    path.write_text(yaml.safe_dump(doc if doc is not None else tree_doc()))
    return str(path)


def _run(env: dict, tmp_path, params: dict, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "coordinator.yaml"
    path.write_text(yaml.safe_dump({"/**/power_coordinator": {"ros__parameters": params}}))
    return subprocess.run([str(executable("power_coordinator")), "--ros-args", "--params-file",
                           str(path), *extra], env=env, capture_output=True, text=True,
                          timeout=120)


def _bad_tree() -> dict:
    doc = tree_doc()
    for rack in doc["power_tree"]["children"]:
        rack["guaranteed_w"] = 1500.0          # 4500 W of fallback under a 3000 W room
    return doc


@pytest.mark.ros
@pytest.mark.parametrize("case, expected", [
    ("missing tree", "power_tree: missing"),
    ("short lease", "lease_s = 1.0: expected at least 3 x period_s = 1.5 s"),
    ("unknown level", "level = 'row_9': not a level of the power tree"),
    ("typo", "lease: not a parameter of power_coordinator; did you mean 'lease_s'?"),
    ("unsafe tree", "sum to 4500 W > its rating_w 3000 W"),
    ("bad namespace", "racks.namespaces[0] = 'r1:/x'"),
])
def test_a_bad_configuration_ends_the_node_with_exit_2_naming_the_key(ros_env, tmp_path, case,
                                                                      expected):
    params = {"power_tree": _tree(tmp_path), "period_s": 0.5, "lease_s": 2.0}
    if case == "missing tree":
        del params["power_tree"]
    elif case == "short lease":
        params["lease_s"] = 1.0
    elif case == "unknown level":
        params["level"] = "row_9"
    elif case == "typo":
        params["lease"] = 2.0
    elif case == "unsafe tree":
        params["power_tree"] = _tree(tmp_path, _bad_tree())
    elif case == "bad namespace":
        params["racks"] = {"namespaces": ["r1:/x"]}
    out = _run(ros_env, tmp_path, params)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_the_config_defaults_and_namespaces(tmp_path):
    cfg = coordinator_config_from_params({"power_tree": _tree(tmp_path),
                                          "racks.namespaces": ["r2=/row_1/r2"]})
    assert (cfg.period_s, cfg.lease_s, cfg.demand_stale_s) == (1.0, 5.0, 2.5)
    assert cfg.namespace("r1") == "/r1" and cfg.namespace("r2") == "/row_1/r2"
    tree, level, racks = load_coordinator_tree(cfg)
    assert level == "room" and racks == ("r1", "r2", "r3")


def test_a_namespace_for_a_rack_not_served_is_refused(tmp_path):
    cfg = coordinator_config_from_params({"power_tree": _tree(tmp_path),
                                          "racks.namespaces": ["r9=/r9"]})
    with pytest.raises(ConfigError, match="racks.namespaces: r9: not a rack below level"):
        load_coordinator_tree(cfg)
