"""The `rack_view` node: the rack as RViz markers (visualization_msgs/MarkerArray).

Reads `power_allocation` (reliable, volatile, keep last 1: compatible with the actuator's
publisher whether it is latched or not; the newest one is drawn) and `component_health`
(reliable, transient local, keep last HEALTH_DEPTH, as the health monitor latches it; optional:
without it no health outlines are drawn). Every `publish.period_s` (at most 2 Hz) it draws the
newest allocation with core/rack_view.py and publishes one MarkerArray with every marker on
`rack_markers`, reliable, transient local, keep last 1, so an RViz started later gets the whole
rack at once. An allocation older than `inputs.stale_after_s` (by the time it arrived) is drawn
grey with STALE in the title; before the first allocation nothing is published. The markers'
frame_id is the allocation's header.frame_id (the rack's frame) unless `frame_id` is set.
`/diagnostics`, once a second: OK while drawing fresh allocations, WARN when the allocation is
stale, STALE before the first one, with the allocation's age and what was drawn.
"""
from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import Point
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker as MarkerMsg
from visualization_msgs.msg import MarkerArray

from rackpower.msg import ComponentHealth, PowerAllocation
from rackpower_nodes.core.rack_view import Health, Marker, RackView, snapshot
from rackpower_nodes.core.rack_view_config import (
    RACK_VIEW_PARAMETERS, RackViewConfig, rack_view_config_from_params)
from rackpower_nodes.nodes.common import (
    declare_from_specs, diagnostic_status, latched_qos, publish_diagnostics)
from rackpower_nodes.nodes.main import run_node

#: component_health is latched with one message per component: a late joiner needs a depth of
#: at least the rack's component count to get every component's newest state
HEALTH_DEPTH = 256
_TYPES = {"cube": MarkerMsg.CUBE, "lines": MarkerMsg.LINE_LIST,
          "text": MarkerMsg.TEXT_VIEW_FACING}


def allocation_qos() -> QoSProfile:
    """power_allocation: reliable, volatile, keep last 1 (matches a latched or a volatile
    publisher; the view needs only the newest)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def health_qos() -> QoSProfile:
    """component_health: reliable, transient local, keep last HEALTH_DEPTH."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=HEALTH_DEPTH,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def marker_msg(m: Marker, header) -> MarkerMsg:
    """One visualization_msgs/Marker from a core Marker."""
    msg = MarkerMsg(header=header, ns=m.ns, id=m.id)
    if m.shape == "delete_all":
        msg.action = MarkerMsg.DELETEALL
        return msg
    if m.shape == "delete":
        msg.action = MarkerMsg.DELETE
        return msg
    msg.type, msg.action = _TYPES[m.shape], MarkerMsg.ADD
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = m.position
    msg.pose.orientation.w = 1.0
    msg.scale.x, msg.scale.y, msg.scale.z = m.scale
    msg.color = ColorRGBA(r=m.color[0], g=m.color[1], b=m.color[2], a=m.color[3])
    msg.points = [Point(x=p[0], y=p[1], z=p[2]) for p in m.points]
    msg.text = m.text
    return msg


class RackViewNode(Node):
    """Draws the newest allocation (and health) as a MarkerArray, at most at 2 Hz."""

    def __init__(self, **kwargs):
        super().__init__("rack_view", **kwargs)
        self.config: RackViewConfig = rack_view_config_from_params(
            declare_from_specs(self, RACK_VIEW_PARAMETERS))
        self.view = RackView(self.config.placement, self.config.near_fraction,
                             self.config.held_fraction)
        self._allocation: PowerAllocation | None = None
        self._received = 0.0                         # time.monotonic() of its arrival
        self._health: dict[str, Health] = {}
        self.published = 0
        self._pub = self.create_publisher(MarkerArray, "rack_markers", latched_qos())
        self.create_subscription(PowerAllocation, "power_allocation", self._on_allocation,
                                 allocation_qos())
        self.create_subscription(ComponentHealth, "component_health", self._on_health,
                                 health_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.config.period_s, self._publish)
        self.create_timer(1.0, self._publish_diagnostics)

    def _on_allocation(self, msg: PowerAllocation) -> None:
        self._allocation, self._received = msg, time.monotonic()

    def _on_health(self, msg: ComponentHealth) -> None:
        self._health[msg.component_id] = Health(msg.state, msg.cause, bool(msg.sensor_fault))

    def _publish(self) -> None:
        msg = self._allocation
        if msg is None:
            return
        age = time.monotonic() - self._received
        frame = self.config.frame_id or msg.header.frame_id or "rack"
        snap = snapshot(frame, msg.mode, msg.mode_reason, msg.budget_w, msg.breaker_w,
                        list(msg.channel_ids), msg.measured_w, msg.allocated_w, msg.ceiling_w,
                        stale=age > self.config.stale_after_s, age_s=age)
        header = Header(frame_id=frame, stamp=self.get_clock().now().to_msg())
        self._pub.publish(MarkerArray(
            markers=[marker_msg(m, header) for m in self.view.markers(snap, self._health)]))
        self.published += 1

    def _publish_diagnostics(self) -> None:
        msg = self._allocation
        if msg is None:
            level, text, age = DiagnosticStatus.STALE, "no power_allocation yet", float("nan")
        else:
            age = time.monotonic() - self._received
            stale = age > self.config.stale_after_s
            level = DiagnosticStatus.WARN if stale else DiagnosticStatus.OK
            text = (f"allocation {age:.0f} s old: drawn grey (stale)" if stale
                    else f"drawing {len(msg.channel_ids)} components")
        values = {"allocation_age_s": f"{age:.1f}",
                  "components": len(msg.channel_ids) if msg is not None else 0,
                  "health_known": len(self._health), "marker_arrays_published": self.published}
        publish_diagnostics(self, self._diag_pub, [diagnostic_status(
            level, f"{self.get_fully_qualified_name()}: rack view", text, "rack_view",
            values)])


def main(args=None) -> int:
    return run_node(RackViewNode, "rack_view", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
