"""The `rack_view` executable over DDS: a PowerAllocation (and a ComponentHealth) published by
this test's own node comes back as a MarkerArray on rack_markers with the rack drawn (boxes by
rack unit, colours, text, gauge), a subscriber that joins later still gets the whole rack
(transient local), and a bad parameter stops the node with exit code 2, named."""
from __future__ import annotations

import math
import subprocess

import pytest
import yaml
from helpers.graph import spin_until

from rackpower_nodes.core.rack_layout import U_M
from rackpower_nodes.core.rack_view import GREEN, GREY, RED
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

NS = "/rack_view_test"
IDS = ["srv01", "srv02", "tor-a"]


def _launch(ros_env, tmp_path, **params) -> subprocess.Popen:
    path = tmp_path / "rack_view.yaml"
    path.write_text(yaml.safe_dump({"/**/rack_view": {"ros__parameters": params}}))
    return subprocess.Popen([str(executable("rack_view")), "--ros-args", "-r",
                             f"__ns:={NS}", "--params-file", str(path)], env=ros_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _latched():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=8,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


class _Viewer:
    """A subscriber of rack_markers as RViz makes it (reliable, transient local)."""

    def __init__(self, name: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from visualization_msgs.msg import MarkerArray

        self.node = rclpy.create_node(name, namespace=NS)
        self.arrays = []
        self.node.create_subscription(MarkerArray, "rack_markers", self.arrays.append,
                                      _latched())
        self.diag: dict[str, str] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name == f"{NS}/rack_view: rack view":
                self.diag = {"message": s.message, **{kv.key: kv.value for kv in s.values}}

    def markers(self, ns: str) -> dict:
        return {m.id: m for m in self.arrays[-1].markers if m.ns == ns}


def _allocation():
    from rackpower.msg import PowerAllocation

    msg = PowerAllocation(mode="proactive", budget_w=3680.0, breaker_w=4600.0, window_s=2.0,
                          channel_ids=IDS)
    msg.header.frame_id = "rack_07"
    msg.allocated_w = [250.0, 250.0, 300.0]
    msg.measured_w = [100.0, 249.0, math.nan]
    msg.ceiling_w = [500.0, 500.0, 400.0]
    msg.floor_w = [60.0, 60.0, 150.0]
    msg.forecast_w = msg.held_w = [math.nan] * 3
    msg.priority = [1, 1, 2]
    return msg


def test_allocation_comes_back_as_the_rack_drawn_and_a_late_viewer_gets_it(ros_env,
                                                                            tmp_path):
    import rclpy
    from visualization_msgs.msg import Marker

    from rackpower.msg import ComponentHealth, PowerAllocation

    proc = _launch(ros_env, tmp_path, **{"publish.period_s": 0.5, "rack.units": 12,
                                         "inputs.stale_after_s": 1.0,
                                         "components.names": ["tor-a"],
                                         "components.rack_u": [12]})
    try:
        with rclpy.init():
            viewer = _Viewer("rviz_early")
            pub = viewer.node.create_publisher(PowerAllocation, "power_allocation", _latched())
            health = viewer.node.create_publisher(ComponentHealth, "component_health",
                                                  _latched())
            health.publish(ComponentHealth(component_id="srv02", state="fault",
                                           cause="psu_efficiency", score=2.0))

            def drawn() -> bool:
                pub.publish(_allocation())            # again until the node hears it
                return bool(viewer.arrays) and bool(viewer.markers("health")) and \
                    viewer.markers("health")[1].action == Marker.ADD
            assert spin_until(viewer.node, drawn, 60.0), \
                f"no MarkerArray with the fault drawn; node alive: {proc.poll() is None}"
            array = viewer.arrays[-1]
            assert {m.header.frame_id for m in array.markers} == {"rack_07"}
            shells = viewer.markers("shell")
            # tor-a configured at U12; srv01, srv02 stacked from the top down below it
            assert [round(shells[i].pose.position.z / U_M - 0.5) for i in range(3)] == \
                [10, 9, 11]
            assert all(s.type == Marker.CUBE for s in shells.values())
            fills = viewer.markers("fill")
            assert (fills[0].color.r, fills[0].color.g) == pytest.approx(GREEN[:2])
            assert (fills[1].color.r, fills[1].color.g) == pytest.approx(RED[:2])
            labels = viewer.markers("label")
            assert labels[0].text == "srv01 100 W / 250 W"
            assert labels[1].text == "srv02 249 W / 250 W  FAULT psu_efficiency"
            assert labels[2].text == "tor-a ? W / 300 W"
            assert labels[0].type == Marker.TEXT_VIEW_FACING
            assert viewer.markers("gauge")[4].text.splitlines()[:3] == [
                "budget 3680 W (breaker 4600 W)", "allocated 800 W", "measured 349 W"]

            def said() -> bool:                  # a status from after the fault was heard
                pub.publish(_allocation())
                return (viewer.diag.get("message"), viewer.diag.get("health_known")) == (
                    "drawing 3 components", "1")
            assert spin_until(viewer.node, said, 30.0), viewer.diag
            viewer.node.destroy_node()

            late = _Viewer("rviz_late")              # RViz started after the rack was drawn
            assert spin_until(late.node, lambda: bool(late.arrays), 30.0), \
                "a late subscriber got no MarkerArray"
            assert sorted(late.markers("shell")) == [0, 1, 2]
            assert late.markers("label")[0].text == "srv01 100 W / 250 W"
            # no allocation since: after inputs.stale_after_s the rack is drawn grey
            assert spin_until(late.node, lambda: "STALE" in late.markers("rack")[1].text,
                              30.0), late.markers("rack")[1].text
            fills = late.markers("fill")
            assert [(f.color.r, f.color.g, f.color.b) for f in fills.values()] == \
                [pytest.approx(GREY[:3])] * 3
            late.node.destroy_node()
    finally:
        code = stop_process(proc, timeout_s=15)
    stderr = proc.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_a_bad_parameter_stops_the_node_naming_it(ros_env, tmp_path):
    proc = _launch(ros_env, tmp_path, **{"rack.unit": 48,
                                         "components.names": ["srv01", "srv02"],
                                         "components.rack_u": [4, 4]})
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    assert "rack.unit: not a parameter of rack_view; did you mean 'rack.units'?" in stderr
    assert "srv02 and srv01 both occupy U4" in stderr
    assert "Traceback" not in stderr


def test_the_view_loads_no_model_or_plotting_library():
    """A view for every rack controller: no torch, lightgbm or matplotlib in its process."""
    import sys

    code = ("import sys, rackpower_nodes.nodes.rack_view\n"
            "print(sorted({'torch', 'lightgbm', 'matplotlib'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]", out
