"""Room coordination messages (msg/RackDemand.msg, msg/RackBudget.msg) to and from the core's
`RackDemand` and `RackGrant` (core/room/types.py), their QoS, and `RoomPort`, the rack's end
of them on its pdu_actuator. The actuator and the power_coordinator share this module (nodes
never import each other)."""
from __future__ import annotations

import math
import time

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from rackpower.msg import RackBudget as RackBudgetMsg
from rackpower.msg import RackDemand as RackDemandMsg
from rackpower_nodes.core.actuator_budget import forecast_totals
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.room.types import RackDemand, RackGrant
from rackpower_nodes.nodes.common import float32_array

__all__ = ["RoomPort", "demand_from_msg", "demand_to_msg", "grant_from_msg", "grant_to_msg",
           "rack_id_of", "room_qos"]


def rack_id_of(namespace: str) -> str:
    """A rack's id from its node's namespace, the last part (/row_1/rack_07 -> rack_07);
    ConfigError at the root namespace (no rack id: coordinator.rack_id must say it)."""
    rack = namespace.rstrip("/").rsplit("/", 1)[-1]
    if not rack:
        raise ConfigError("coordinator.rack_id = '': expected the rack's id in the power tree "
                          "(the node runs in the root namespace, which names no rack)")
    return rack


def room_qos() -> QoSProfile:
    """rack_demand and rack_budget: reliable, keep last 1, volatile (only the newest summary
    or grant matters; both are sent at least every coordinator period, so a late joiner
    needs no history, and a dead coordinator leaves no stale grant behind)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def _stamp(header, t_unix: float) -> None:
    sec = math.floor(t_unix)
    header.stamp.sec, header.stamp.nanosec = int(sec), min(int((t_unix - sec) * 1e9), 999999999)


def _unix(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def demand_to_msg(d: RackDemand) -> RackDemandMsg:
    msg = RackDemandMsg()
    _stamp(msg.header, d.stamp_unix)
    msg.header.frame_id = d.rack
    msg.rack, msg.window_s = d.rack, float(d.window_s)
    names = list(d.total_w)
    msg.quantiles = names
    msg.total_w = float32_array([d.total_w[q] for q in names])
    msg.priority = bytes(min(max(int(p), 0), 255) for p in d.priority)
    msg.floor_w = float32_array(d.floor_w)
    msg.demand_w = float32_array(d.demand_w)
    msg.rating_w, msg.guaranteed_w = float(d.rating_w), float(d.guaranteed_w)
    msg.acked_seq, msg.acked_budget_w = int(d.acked_seq), float(d.acked_budget_w)
    msg.budget_source = d.budget_source
    return msg


def demand_from_msg(msg: RackDemandMsg) -> RackDemand:
    return RackDemand(
        rack=msg.rack, stamp_unix=_unix(msg.header), window_s=float(msg.window_s),
        priority=tuple(int(p) for p in bytes(msg.priority)),
        floor_w=tuple(float(x) for x in msg.floor_w),
        demand_w=tuple(float(x) for x in msg.demand_w),
        rating_w=float(msg.rating_w), guaranteed_w=float(msg.guaranteed_w),
        total_w={q: float(x) for q, x in zip(msg.quantiles, msg.total_w)},
        acked_seq=int(msg.acked_seq), acked_budget_w=float(msg.acked_budget_w),
        budget_source=msg.budget_source)


def grant_to_msg(g: RackGrant, t_unix: float) -> RackBudgetMsg:
    msg = RackBudgetMsg()
    _stamp(msg.header, t_unix)
    msg.header.frame_id = g.coordinator
    msg.rack, msg.coordinator, msg.seq = g.rack, g.coordinator, int(g.seq)
    msg.budget_w, msg.target_w, msg.lease_s = float(g.budget_w), float(g.target_w), \
        float(g.lease_s)
    return msg


def grant_from_msg(msg: RackBudgetMsg) -> RackGrant:
    return RackGrant(rack=msg.rack, seq=int(msg.seq), budget_w=float(msg.budget_w),
                     target_w=float(msg.target_w), lease_s=float(msg.lease_s),
                     coordinator=msg.coordinator)


class RoomPort:
    """A coordinated rack's side of the room on its actuator node: `rack_budget` in (held by
    the `RackBudgetKeeper`), `rack_demand` out, both relative names (the rack's namespace).
    Create it in on_configure (its publisher is a lifecycle one), `destroy` it on cleanup."""

    def __init__(self, node, keeper, controller, callback_group, held_w) -> None:
        from rackpower.msg import RackBudget as Budget, RackDemand as Demand

        self.node, self.keeper, self.controller = node, keeper, controller
        keeper.hold_at_start(held_w, controller.floor_w, controller.ceiling_w)
        self._sub = node.create_subscription(Budget, "rack_budget", self._on_grant, room_qos(),
                                             callback_group=callback_group)
        self._pub = node.create_lifecycle_publisher(Demand, "rack_demand", room_qos())

    def destroy(self) -> None:
        self.node.destroy_subscription(self._sub)
        self.node.destroy_lifecycle_publisher(self._pub)

    def _on_grant(self, msg) -> None:
        try:
            why = self.keeper.on_grant(grant_from_msg(msg), time.monotonic())
        except ValueError as exc:
            why = f"rack_budget ignored: {exc}"
        if why:
            self.node.get_logger().warning(why, throttle_duration_sec=10.0)

    def budget_w(self, now_s: float) -> float:
        """The budget in force now (W); a change of source (coordinator, fallback) is logged."""
        budget = self.keeper.budget_w(now_s)
        if change := self.keeper.source_change(now_s):
            # one call site per severity: rclpy refuses a second severity at one call site
            if self.keeper.source(now_s) == "fallback":
                self.node.get_logger().warning(change)
            else:
                self.node.get_logger().info(change)
        return budget

    def report(self, held_w, demand_w, forecast) -> None:
        """Acknowledge the newest grant if the devices (`held_w`, W) fit it, and publish the
        demand summary of this step's per-component demands (W), with the rack total's
        forecast over the actuation window where `forecast` (a ForecastView or None) is."""
        c, now, t = self.controller, time.monotonic(), time.time()
        self.keeper.acknowledge(held_w, c.ceiling_w)
        totals = forecast_totals(forecast, t, c.cfg)
        self._pub.publish(demand_to_msg(self.keeper.demand(
            t, c.cfg.window_s, c.priority, c.floor_w, demand_w, now, totals)))
