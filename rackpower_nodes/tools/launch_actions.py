"""What the project's launch files (launch/rack.launch.py, launch/room.launch.py) share: a node
restarted when it crashes and only then. Imported by the launch files alone (it needs `launch`,
which a ROS 2 install brings and `make setup` installs from ../shared/ros2-tools)."""
from __future__ import annotations

from launch.actions import EmitEvent, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import matches_action
from launch.events.process import ShutdownProcess
from launch.logging import get_logger

from rackpower_nodes.nodes.main import EXIT_BAD_CONFIG

__all__ = ["EXIT_BAD_CONFIG", "respawned"]


def respawned(node, label: str = "") -> list:
    """`node` (created with respawn=True and a respawn_delay > 0) is restarted after a crash
    but never after a configuration error, nor after it stopped cleanly (exit 0: it was sent
    SIGINT or SIGTERM, or shut down through its lifecycle): launch waits respawn_delay before
    it restarts a process, and in that time this exit handler ends the action (a
    ShutdownProcess event for it), so launch does not start it again. The clean case also
    ends the graph when launch itself missed a Ctrl-C that its processes got (launch can lose
    a SIGINT that arrives while it handles a process's output): every node stops, nothing is
    restarted, and launch exits as idle. `label` names the node in launch's log (default: its
    node name)."""

    def on_exit(event, context):
        if context.is_shutdown or event.returncode not in (0, EXIT_BAD_CONFIG):
            return None
        name = label or event.action.node_name
        if event.returncode == 0:
            get_logger("launch").info(f"{name} stopped cleanly (exit 0): not restarting it")
        else:
            get_logger("launch").error(
                f"{name} exited with a configuration error (exit {EXIT_BAD_CONFIG}): not "
                "restarting it, since a restart cannot fix a parameter; its log above names "
                "the key")
        return [EmitEvent(event=ShutdownProcess(process_matcher=matches_action(event.action)))]

    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))]
