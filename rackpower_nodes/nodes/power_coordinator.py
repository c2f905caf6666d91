"""The `power_coordinator` node: one level of a power tree (a room, a row, a feed) shared
among the racks below it (docs/room.md).

Inputs: `<rack ns>/rack_demand` (rackpower/RackDemand) of every rack below its level,
reliable, keep last 1. Every `period_s` the level's rating is divided in global priority order
and released shrink-first (`core/coordinator.py`), and each rack's grant is published on
`<rack ns>/rack_budget` (rackpower/RackBudget, reliable, keep last 1), valid `lease_s` from
its receipt. A rack that hears nothing for a lease falls back to its guaranteed share by
itself: this node's death is safe by construction, and its restart starts from the
acknowledgements the racks report.

/diagnostics: one status per rack (budget, target, acknowledged, silent or not) and one for
the level (committed, the division's failure as an error, the old budgets kept). Mode changes
(a rack going silent or coming back, the division failing or recovering) are logged once,
not every period.
"""
from __future__ import annotations

import time
from functools import partial

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from rackpower.msg import RackBudget, RackDemand
from rackpower_nodes.core.coordinator import Period, RoomCoordinator
from rackpower_nodes.core.coordinator_config import (
    COORDINATOR_PARAMETERS, coordinator_config_from_params, load_coordinator_tree)
from rackpower_nodes.nodes.common import (
    declare_from_specs, diagnostic_status, publish_diagnostics)
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.room_msgs import demand_from_msg, grant_to_msg, room_qos

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class PowerCoordinatorNode(Node):
    """Divides one power-tree level's rating among its racks and grants their budgets."""

    def __init__(self, **kwargs):
        super().__init__("power_coordinator", **kwargs)
        cfg = self.config = coordinator_config_from_params(
            declare_from_specs(self, COORDINATOR_PARAMETERS))
        tree, level, racks = load_coordinator_tree(cfg)
        self.level = level
        self.core = RoomCoordinator(tree, racks, cfg.frame_id or level, cfg.lease_s,
                                    cfg.demand_stale_s)
        group = MutuallyExclusiveCallbackGroup()     # demands and periods never overlap
        self._pubs = {}
        for rack in racks:
            ns = cfg.namespace(rack).rstrip("/")
            self.create_subscription(RackDemand, f"{ns}/rack_demand",
                                     partial(self._on_demand, rack), room_qos(),
                                     callback_group=group)
            self._pubs[rack] = self.create_publisher(RackBudget, f"{ns}/rack_budget",
                                                     room_qos())
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._last: Period | None = None
        self._said: dict[str, str] = {}
        self.create_timer(cfg.period_s, self._on_period, callback_group=group)
        self.create_timer(1.0, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"coordinating {self.core.name} ({len(racks)} racks: {', '.join(racks)}) every "
            f"{cfg.period_s:g} s, lease {cfg.lease_s:g} s")

    def _on_demand(self, rack: str, msg: RackDemand) -> None:
        if msg.rack != rack:
            self.get_logger().warning(
                f"rack_demand of rack {msg.rack!r} on {rack}'s topic ignored",
                throttle_duration_sec=10.0)
            return
        why = self.core.on_demand(demand_from_msg(msg), time.monotonic())
        if why and self.core.mismatch(rack) == why:
            self.get_logger().error(why, throttle_duration_sec=60.0)
        elif why:
            self.get_logger().warning(why, throttle_duration_sec=10.0)

    def _on_period(self) -> None:
        period = self.core.period(time.monotonic())
        now = time.time()
        for rack, grant in period.grants.items():
            if rack in self._pubs:
                self._pubs[rack].publish(grant_to_msg(grant, now))
        self._last = period
        self._log_changes(period)

    def _log_changes(self, p: Period) -> None:
        """Log what changed since the last period: the division's state, a rack's silence."""
        states = {"division": p.error or "ok"}
        states.update({r: "silent" if r in p.stale else "heard" for r in self.core.racks})
        for key, state in states.items():
            if self._said.get(key) == state:
                continue
            first = key not in self._said
            self._said[key] = state
            if key == "division":
                if state != "ok":
                    self.get_logger().error(state)
                elif not first:
                    self.get_logger().info("division works again")
            elif state == "silent" and not first:
                self.get_logger().warning(f"rack {key} silent: counted at its guaranteed "
                                          f"share {self.core.guaranteed_w(key):.0f} W")
            elif state == "heard":
                self.get_logger().info(f"rack {key} heard")

    def _publish_diagnostics(self) -> None:
        p = self._last
        if p is None:
            return
        name = self.get_fully_qualified_name()
        values = {"level": self.level, "racks": len(self.core.racks),
                  "committed_w": f"{sum(p.committed_w.values()):.1f}",
                  "rating_w": f"{self.core.tree.levels[self.core.tree.top].rating_w:.1f}",
                  "silent": len(p.stale)}
        statuses = [diagnostic_status(ERROR if p.error else OK, f"{name}: {self.core.name}",
                                      p.error or "sharing", self.core.name, values)]
        for rack in self.core.racks:
            grant, stale = p.grants.get(rack), rack in p.stale
            demand, mismatch = self.core.demands.get(rack), self.core.mismatch(rack)
            statuses.append(diagnostic_status(
                ERROR if mismatch else WARN if stale else OK, f"{name}: rack {rack}",
                mismatch or ("silent: counted at its guaranteed share" if stale else "heard"),
                rack,
                {"budget_w": f"{grant.budget_w:.1f}" if grant else "none",
                 "target_w": f"{p.targets.get(rack, float('nan')):.1f}",
                 "seq": grant.seq if grant else 0,
                 "acked_seq": demand.acked_seq if demand else 0,
                 "acked_budget_w": f"{demand.acked_budget_w:.1f}" if demand else "none",
                 "committed_w": f"{p.committed_w.get(rack, float('nan')):.1f}",
                 "guaranteed_w": f"{self.core.guaranteed_w(rack):.1f}",
                 "rack_source": demand.budget_source if demand else "none",
                 "stale": stale}))
        publish_diagnostics(self, self._diag_pub, statuses)


def main(args=None) -> int:
    return run_node(PowerCoordinatorNode, "power_coordinator", args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
