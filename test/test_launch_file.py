"""Static checks of launch/rack.launch.py (launch_ros is not installable here, see README).

The file must stay a valid upstream launch file: it compiles, it defines
generate_launch_description, every executable it starts is one this package installs, and the
launch arguments operators use are declared.
"""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "rack.launch.py"


def _tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def _console_scripts() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    return {line.split("=")[0].strip() for line in lines}


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def test_defines_generate_launch_description():
    names = {n.name for n in _tree().body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names


def test_every_node_executable_is_installed_by_the_package():
    scripts = _console_scripts()
    tree = _tree()
    nodes = _calls(tree, "Node") + _calls(tree, "LifecycleNode")
    executables = [kw.value.value for call in nodes for kw in call.keywords
                   if kw.arg == "executable"]
    assert executables, "no Node actions found"
    assert set(executables) <= scripts
    assert {"current_sensor", "host_telemetry", "predictor", "pdu_actuator", "recorder",
            "retrain_scheduler", "health_monitor"} <= set(executables)
    packages = {kw.value.value for call in nodes for kw in call.keywords
                if kw.arg == "package"}
    assert packages == {"rackpower"}
    lib_paths = [c for c in _calls(tree, "PathJoinSubstitution")
                 if isinstance(c.args[0], ast.List) and len(c.args[0].elts) == 4]
    for call in lib_paths:
        assert call.args[0].elts[-1].value in scripts


def test_declares_the_operator_arguments():
    declared = {call.args[0].value for call in _calls(_tree(), "DeclareLaunchArgument")}
    assert {"rack", "config", "serial_port", "use_sim", "mode",
            "data_dir", "metrics", "metrics_port"} <= declared


def test_default_config_is_shipped():
    source = LAUNCH.read_text()
    assert '"config", "rack.yaml"' in source
    assert (REPO / "config" / "rack.yaml").is_file()


def test_every_node_respawns_after_a_crash_but_not_after_a_config_error():
    """Each Node/LifecycleNode is created with respawn=True and a respawn_delay > 0 (the exit
    handler stops a respawn within that delay) and wrapped by tools.launch_actions.respawned,
    whose handler ends the action on exit code 2 or 0 (behaviour: test_launch_shutdown.py,
    test_room_launch.py)."""
    tree = _tree()
    wrapped = [call.args[0] for call in _calls(tree, "respawned")]
    nodes = _calls(tree, "Node") + _calls(tree, "LifecycleNode")
    # metrics_exporter only with metrics:=true, rack_view unless rack_view:=false,
    # rack_composed (all of them in one process) only with composed:=true
    assert len(wrapped) == len(nodes) == 10
    assert all(any(n is w for w in wrapped) for n in nodes)
    for call in nodes:
        kw = {k.arg: k.value for k in call.keywords}
        assert kw["respawn"].value is True
        assert kw["respawn_delay"].value > 0
    source = LAUNCH.read_text()
    assert "from rackpower_nodes.tools.launch_actions import respawned" in source
    shared = (REPO / "rackpower_nodes" / "tools" / "launch_actions.py").read_text()
    assert "from rackpower_nodes.nodes.main import EXIT_BAD_CONFIG" in shared
    assert "ShutdownProcess" in shared
