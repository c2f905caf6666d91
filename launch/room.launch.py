"""Launch a power_coordinator for one level of a room's power tree (docs/room.md).

    ros2 launch rackpower room.launch.py tree:=/etc/rackpower/room.yaml
    ros2 launch rackpower room.launch.py tree:=/etc/rackpower/room.yaml level:=row_2 lease_s:=5.0

Arguments:
    tree       the power tree YAML (config/room.example.yaml shows the shape); required
    level      the tree level this coordinator divides (its racks are the ones below it);
               empty = the top of the tree
    period_s   how often budgets are divided and granted, s
    lease_s    how long a grant holds at the rack, s (at least 3 x period_s)
    config     optional parameter YAML with a `/**/power_coordinator: ros__parameters:` section
               (racks.namespaces, demand_stale_s, ...); the arguments above win over it

Each rack's pdu_actuator must run with `budget.source: coordinator` and its guaranteed share
(`budget.guaranteed_w`, the tree's value) in the rack's namespace (`/<rack id>` unless
`racks.namespaces` says otherwise): e.g. `ros2 launch rackpower rack.launch.py rack:=rack_01`
with such a config. The coordinator is restarted when it crashes, not after a configuration
error (exit 2) nor after it stopped cleanly (exit 0: a SIGINT or SIGTERM sent to it); while
it is down every rack falls back to its guaranteed share within a lease.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from rackpower_nodes.tools.launch_actions import respawned


def _launch_setup(context):
    tree = LaunchConfiguration("tree").perform(context)
    overrides = {"power_tree": tree, "level": LaunchConfiguration("level").perform(context)}
    for key in ("period_s", "lease_s"):
        text = LaunchConfiguration(key).perform(context).strip()
        if text:
            try:
                overrides[key] = float(text)
            except ValueError:
                overrides[key] = text         # the node names it and exits 2
    config = LaunchConfiguration("config").perform(context)
    node = Node(package="rackpower", executable="power_coordinator", name="power_coordinator",
                parameters=([config] if config else []) + [overrides], output="screen",
                respawn=True, respawn_delay=2.0)
    return respawned(node, label="power_coordinator")


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("tree", description="Power tree YAML (required)"),
        DeclareLaunchArgument("level", default_value="",
                              description="Tree level to divide (empty: the top)"),
        DeclareLaunchArgument("period_s", default_value="",
                              description="Grant period, s (empty: the node's default, 1.0)"),
        DeclareLaunchArgument("lease_s", default_value="",
                              description="Lease of a grant, s (empty: the node's default, "
                                          "5.0)"),
        DeclareLaunchArgument("config", default_value="",
                              description="Optional parameter YAML for power_coordinator"),
        OpaqueFunction(function=_launch_setup),
    ])
