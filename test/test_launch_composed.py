"""rack.launch.py with composed:=true under the real `ros2 launch`: every node in one
rack_composed process, with the same overrides as the separate processes (the rack's
frame_id, <data_dir>/<rack> folders, mode:=), ended cleanly by Ctrl-C with the actuator's
safe write and a readable bag. The composed executable itself: test/nodes/test_composed.py."""
from __future__ import annotations

import pytest
from helpers.graph import NODES, GraphWatch, spin_until, watching

from rackpower_nodes.tools.launch_env import LaunchedGraph

pytestmark = pytest.mark.ros

UP_TIMEOUT_S = 240.0
#: launch escalates 5 s (SIGTERM) and 15 s (SIGKILL) after its SIGINT; a process it had to
#: SIGKILL (judged by its shutdown report: teardown_hangs) leaves launch alone, and
#: LaunchedGraph.wait_ended gives launch 18 s more before calling it hung. Under 15 + 18 s
#: the wait ended in a bare timeout instead of that judgement (a full run under two burners)
END_TIMEOUT_S = 60.0


def test_composed_launch_runs_the_rack_in_one_process_with_the_launch_overrides(
        ros2, ros_env, tmp_path):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from helpers import REPO

    from rackpower.msg import PowerAllocation

    rack = "rack_comp"
    seen: list = []
    graph = None
    try:
        with watching(lambda: GraphWatch(rack)) as watch:
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
            watch.node.create_subscription(PowerAllocation, f"/{rack}/power_allocation",
                                           seen.append, qos)
            graph = LaunchedGraph([str(REPO / "launch" / "rack.launch.py"), "use_sim:=true",
                                   f"rack:={rack}", f"data_dir:={tmp_path / 'data'}",
                                   "composed:=true", "mode:=reactive"], ros_env,
                                  tmp_path / "launch.log")
            graph.wait_until(lambda: watch.up(NODES), UP_TIMEOUT_S, "composed graph up")
            assert spin_until(watch.node, lambda: any(m.mode == "reactive" for m in seen),
                              60.0), [m.mode for m in seen[-5:]]
            assert {m.header.frame_id for m in seen} == {rack}
        runs = graph.started("rack_composed")
        assert len(runs) == 1 and runs[0].exited_at is None, graph.output[-3000:]
        # one process: no node of the rack runs as an executable of its own
        assert not any(graph.started(n) for n in NODES), graph.output[-3000:]
        graph.interrupt()                 # out of the DDS graph first (helpers.graph.watching)
        code = graph.wait_ended(END_TIMEOUT_S)
    finally:
        if graph is not None:
            graph.close()
    out = graph.output
    assert code in (0, None), out[-4000:]          # None: launch's own hang after, killed
    assert [r.code for r in graph.started("rack_composed")] == [0], out[-4000:]
    assert "Traceback" not in out
    assert "shutdown: static split" in out, out[-4000:]
    bags = sorted(p for p in (tmp_path / "data" / rack / "bags").iterdir() if p.is_dir())
    assert bags and all(b.name.startswith(f"{rack}_") for b in bags), bags
    assert all((b / "metadata.yaml").is_file() for b in bags), bags
