"""Strict configuration: every node refuses what it does not understand, and the actuator
refuses a rack it cannot keep safe.

Node cases run the real executable with a params file and/or `-p` overrides: it must exit 2
before it touches any hardware, its stderr naming the key (and, for a typo, the key it
probably meant). Core cases are plain pytest.
"""
from __future__ import annotations

import copy
import subprocess

import pytest
import yaml
from helpers import REPO
from helpers.rack import actuator_params

from rackpower_nodes.core.actuator_config import (
    ACTUATOR_PARAMETERS, actuator_config_from_params, check_outlets_in_maps)
from rackpower_nodes.core.params import ConfigError, flatten_parameters, unknown_key_errors
from rackpower_nodes.tools.launch_env import executable, stop_process

RACK = REPO / "config" / "rack.yaml"
PORTS = [5020, 5021]      # never connected to: every case fails before on_configure


def _run(node: str, env: dict, *ros_args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(executable(node)), "--ros-args", *ros_args], env=env,
                          capture_output=True, text=True, timeout=120)


def _actuator_file(tmp_path, params: dict, name: str = "actuator.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    return str(path)


# ---------------------------------------------------------------- unknown keys, every node

@pytest.mark.ros
@pytest.mark.parametrize("node, typo, meant", [
    ("current_sensor", "serial.prot", "serial.port"),
    ("host_telemetry", "poll.rate", "poll.rate_hz"),
    ("predictor", "inference.rate", "inference.rate_hz"),
    ("pdu_actuator", "budget.breaker_amps", "budget.breaker_a"),
    ("recorder", "flush.interval", "flush.interval_s"),
    ("retrain_scheduler", "training.thread", "training.threads"),
    ("health_monitor", "inputs.stale_after", "inputs.stale_after_s"),
])
def test_every_node_rejects_an_undeclared_override_naming_the_close_key(ros_env, node, typo,
                                                                        meant):
    out = _run(node, ros_env, "--params-file", str(RACK), "-p", f"{typo}:=16")
    assert out.returncode == 2, out.stderr
    assert f"{typo}: not a parameter of {node}; did you mean '{meant}'?" in out.stderr, \
        out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.ros
def test_a_typo_in_the_params_file_is_refused_not_defaulted(ros_env, tmp_path):
    """The issue's case: budget.breaker_amps: 16 used to run on the 20 A default."""
    params = actuator_params(PORTS)
    params["budget"] = {"breaker_amps": 16.0, "voltage_v": 230.0, "derating": 0.8}
    out = _run("pdu_actuator", ros_env, "--params-file", _actuator_file(tmp_path, params))
    assert out.returncode == 2, out.stderr
    assert "budget.breaker_amps: not a parameter of pdu_actuator; did you mean " \
        "'budget.breaker_a'?" in out.stderr
    assert "budget.breaker_a: missing" in out.stderr


@pytest.mark.ros
def test_a_wildcard_section_reaches_every_node_so_it_is_checked_by_every_node(ros_env,
                                                                             tmp_path):
    wild = tmp_path / "wild.yaml"
    wild.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"frame_idd": "rack_07"}}}))
    out = _run("recorder", ros_env, "--params-file", str(RACK), "--params-file", str(wild))
    assert out.returncode == 2 and "frame_idd: not a parameter of recorder" in out.stderr, \
        out.stderr


# ---------------------------------------------------------------- the actuator's rack

def _missing(key: str):
    def edit(p):
        *parents, leaf = key.split(".")
        tree = p
        for part in parents:
            tree = tree[part]
        del tree[leaf]
    return edit


CASES = {
    "missing breaker": (_missing("budget.breaker_a"), ["budget.breaker_a: missing"]),
    "missing voltage": (_missing("budget.voltage_v"), ["budget.voltage_v: missing"]),
    "missing derating": (_missing("budget.derating"), ["budget.derating: missing"]),
    "missing outlet map": (_missing("components.outlet"), ["components.outlet: missing"]),
    "missing pdu map": (_missing("pdus.maps"), ["pdus.maps: missing"]),
    "ceiling above the breaker": (
        lambda p: p["components"].update(ceiling_w=[400.0, 1200.0, 400.0, 400.0]),
        ["components.ceiling_w[1] = 1200.0 (a2): above the breaker rating", "1150 W"]),
    "floors above the budget": (
        lambda p: p["components"].update(floor_w=[250.0] * 4),
        ["components.floor_w: the floors sum to 1000 W, above the budget", "920 W"]),
    "outlet beyond the map": (
        lambda p: p["components"].update(outlet=[1, 2, 1, 25]),
        ["components.outlet[3] = 25 (b2): beyond PDU pdu-b's register map 'rackpower_sim'",
         "outlets 1..24"]),
    "two components on one outlet": (
        lambda p: p["components"].update(pdu=["pdu-a"] * 4, outlet=[1, 2, 3, 2]),
        ["components.outlet[3] = 2 (b2): outlet already feeds a2 on pdu-a"]),
}


@pytest.mark.ros
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_actuator_exits_2_naming_what_is_unsafe(ros_env, tmp_path, case):
    edit, words = CASES[case]
    params = copy.deepcopy(actuator_params(PORTS))
    edit(params)
    out = _run("pdu_actuator", ros_env, "--params-file", _actuator_file(tmp_path, params))
    assert out.returncode == 2, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


@pytest.mark.parametrize("case", sorted(c for c in CASES if c != "outlet beyond the map"))
def test_the_core_config_names_the_same_keys(case):
    edit, words = CASES[case]
    params = copy.deepcopy(actuator_params(PORTS))
    edit(params)
    with pytest.raises(ConfigError) as info:
        actuator_config_from_params(flatten_parameters(params))
    for w in words:
        assert w in str(info.value)


def test_outlets_are_checked_against_each_pdus_map():
    params = actuator_params(PORTS)
    params["components"]["outlet"] = [1, 6, 7, 2]
    cfg = actuator_config_from_params(flatten_parameters(params))
    check_outlets_in_maps(cfg, {"pdu-a": 6, "pdu-b": 8})
    with pytest.raises(ConfigError, match=r"components.outlet\[1\] = 6 \(a2\): beyond PDU "
                                          r"pdu-a's .* outlets 1..5"):
        check_outlets_in_maps(cfg, {"pdu-a": 5, "pdu-b": 8})


def test_safety_critical_values_have_no_default_and_descriptors_say_so():
    required = {s.name for s in ACTUATOR_PARAMETERS if s.required}
    assert required >= {"budget.breaker_a", "budget.voltage_v", "budget.derating",
                        "components.pdu", "components.outlet", "pdus.names", "pdus.urls",
                        "pdus.maps"}
    assert all(s.default is None for s in ACTUATOR_PARAMETERS if s.required)
    mode = next(s for s in ACTUATOR_PARAMETERS if s.name == "mode")
    assert mode.constraints() == "one of: proactive, reactive, static, safe"


def test_unknown_keys_name_a_close_match_only_when_one_is_close():
    assert unknown_key_errors(["budget.breaker_amps", "zzz", "use_sim_time"],
                              ["budget.breaker_a", "budget.voltage_v"], "n") == [
        "budget.breaker_amps: not a parameter of n; did you mean 'budget.breaker_a'?",
        "zzz: not a parameter of n"]


# ---------------------------------------------------------------- in-process: what ROS sees

@pytest.mark.ros
def test_nodes_built_in_process_get_the_check_and_describe_their_constraints(ros_env, tmp_path):
    """rack.yaml holds every node's section; a node receives only its own (and `/**`), so
    the other nodes' keys are not errors, nor is rclpy's own use_sim_time."""
    import rclpy
    from rclpy.context import Context

    from rackpower_nodes.nodes.pdu_actuator import PduActuatorNode

    wild = tmp_path / "wild.yaml"
    wild.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"use_sim_time": False}}}))
    base = ["--ros-args", "--params-file", str(RACK), "--params-file", str(wild),
            "-p", "autostart:=false"]
    ctx = Context()
    rclpy.init(args=base, context=ctx)
    try:
        node = PduActuatorNode(context=ctx)
        try:
            (mode,) = node.describe_parameters(["mode"])
            assert mode.additional_constraints == "one of: proactive, reactive, static, safe"
            assert "one of: proactive, reactive, static, safe" in mode.description
            (breaker,) = node.describe_parameters(["budget.breaker_a"])
            assert "required" in breaker.additional_constraints
            assert breaker.floating_point_range[0].to_value == 10000.0
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    ctx = Context()
    rclpy.init(args=base + ["-p", "modee:=static"], context=ctx)
    try:
        with pytest.raises(ConfigError, match="modee: not a parameter of pdu_actuator; did "
                                              "you mean 'mode'?"):
            PduActuatorNode(context=ctx)
    finally:
        rclpy.shutdown(context=ctx)


@pytest.mark.ros
def test_ros2_param_describe_shows_choices_ranges_and_required(ros_env, tmp_path):
    """What an operator sees with the real `ros2 param describe` (ros2cli from
    ../shared/ros2-tools, installed by make setup)."""
    import sys
    from pathlib import Path

    ros2 = Path(sys.prefix) / "bin" / "ros2"
    if not ros2.exists():
        pytest.skip(f"{ros2} is absent (ros2cli comes from ../shared/ros2-tools via make setup)")
    env = dict(ros_env, PATH=f"{ros2.parent}:{ros_env.get('PATH', '')}")
    node = subprocess.Popen([str(executable("pdu_actuator")), "--ros-args", "-r",
                             "__ns:=/rack_describe", "--params-file", str(RACK), "-p",
                             "autostart:=false"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        out = None
        for _ in range(30):          # until the node is discovered (each try waits for it)
            out = subprocess.run([str(ros2), "param", "describe", "/rack_describe/pdu_actuator",
                                  "mode", "budget.breaker_a"], env=env, capture_output=True,
                                 text=True, timeout=60)
            if out.returncode == 0 and "Parameter name: budget.breaker_a" in out.stdout:
                break
            assert node.poll() is None, "pdu_actuator exited"
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Additional constraints: one of: proactive, reactive, static, safe" in out.stdout
        assert "Additional constraints: required: no default" in out.stdout
        assert "Min value: 0.1" in out.stdout and "Max value: 10000.0" in out.stdout
    finally:
        stop_process(node)
