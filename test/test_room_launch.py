"""launch/room.launch.py under the real `ros2 launch`: the coordinator comes up with the
tree, level and lease given as arguments and ends cleanly on Ctrl-C; a bad argument ends it
with exit 2, named, and it is not restarted; nor is a coordinator that stopped cleanly (the
SIGINT of a Ctrl-C that launch itself missed, seen once in CI: launch restarted it and ran on).
"""
from __future__ import annotations

import os
import signal

import pytest
from helpers import REPO

from rackpower_nodes.tools.launch_env import LaunchedGraph, without_launch_interrupts

pytestmark = pytest.mark.ros

ROOM = REPO / "launch" / "room.launch.py"
TREE = REPO / "config" / "room.example.yaml"


def test_room_launch_starts_the_coordinator_for_a_level_and_ends_on_ctrl_c(ros2, ros_env,
                                                                          tmp_path):
    graph = LaunchedGraph([str(ROOM), f"tree:={TREE}", "level:=row_2", "period_s:=0.5",
                           "lease_s:=2.0"], ros_env, tmp_path / "launch.log")
    try:
        graph.wait_until(lambda: "coordinating row_2 (3 racks: rack_04, rack_05, rack_06) "
                         "every 0.5 s, lease 2 s" in graph.output, 60.0, "coordinator up")
    finally:
        graph.interrupt()
        graph.wait_ended(30.0)
    runs = graph.started("power_coordinator")
    assert len(runs) == 1 and runs[0].code == 0, graph.output[-3000:]
    assert "Traceback" not in without_launch_interrupts(graph.output)[0], graph.output[-3000:]


def test_room_launch_does_not_restart_a_coordinator_with_a_config_error(ros2, ros_env,
                                                                        tmp_path):
    graph = LaunchedGraph([str(ROOM), f"tree:={TREE}", "lease_s:=0.5"], ros_env,
                          tmp_path / "launch.log")
    try:
        graph.wait_until(lambda: "not restarting it" in graph.output, 60.0, "the refusal")
    finally:
        graph.wait_ended(30.0)
    assert "lease_s = 0.5: expected at least 3 x period_s = 3 s" in graph.output
    runs = graph.started("power_coordinator")
    assert len(runs) == 1 and runs[0].code == 2, graph.output[-3000:]


def test_room_launch_does_not_restart_a_coordinator_that_stopped_cleanly(ros2, ros_env,
                                                                         tmp_path):
    """SIGINT to the coordinator alone, as when launch loses the Ctrl-C its processes got:
    the coordinator ends with exit 0, launch does not start it again and, with nothing left
    to run, exits by itself."""
    graph = LaunchedGraph([str(ROOM), f"tree:={TREE}", "level:=row_2", "period_s:=0.5",
                           "lease_s:=2.0"], ros_env, tmp_path / "launch.log")
    try:
        graph.wait_until(lambda: "coordinating row_2" in graph.output, 60.0, "coordinator up")
        os.kill(graph.started("power_coordinator")[0].pid, signal.SIGINT)
        code = graph.wait_ended(60.0)
    finally:
        graph.kill()
    assert "power_coordinator stopped cleanly (exit 0): not restarting it" in graph.output
    runs = graph.started("power_coordinator")
    assert [r.code for r in runs] == [0], graph.output[-3000:]
    assert code in (0, None), graph.output[-3000:]     # None: launch's own hang, killed
    assert "user interrupted" not in graph.output
