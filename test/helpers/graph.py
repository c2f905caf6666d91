"""Watching a launched graph: NODES, the seven executables of launch/rack.launch.py,
`GraphWatch`, which tells when all of them are up and the recorder writes, `spin_until`,
which spins a test's own node until a condition holds, `drain`, which runs every callback
that comes for a while, `watching`, a test's DDS presence that ends before the graph it
watched is stopped, `leave_graph`, the same for a test's node that a fixture holds, and
`teardown_hangs`, the processes of a launch's output whose rclpy teardown hung after their
own stop."""
from __future__ import annotations

from contextlib import contextmanager

NODES = ("current_sensor", "host_telemetry", "predictor", "pdu_actuator", "recorder",
         "health_monitor", "retrain_scheduler")

__all__ = ["NODES", "GraphWatch", "drain", "leave_graph", "spin_until", "teardown_hangs",
           "watching"]


def spin_until(node, predicate, timeout_s: float, step_s: float = 0.05) -> bool:
    """Spin ``node`` (``step_s`` at most each time) until ``predicate()`` is true: True, or
    False once ``timeout_s`` has passed without it."""
    import time

    import rclpy

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=step_s)
        if predicate():
            return True
    return False


def drain(node, seconds: float) -> None:
    """Spin ``node`` for ``seconds``, running every callback that comes in that time. One
    ``spin_once`` runs one callback: a watch that took one per check fell behind a graph
    publishing tens of messages a second, and its /diagnostics subscription starved behind
    the streams (two racks under two CPU burners: the recorder's counts stayed at those of
    its first second for 240 s while the recorder wrote on)."""
    spin_until(node, lambda: False, seconds, step_s=0.02)


class GraphWatch:
    """A node of the test's own that tells when the launched graph is up: every node is in
    the graph and the recorder reports power_samples and power_allocation written."""

    def __init__(self, rack: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        self.rack = rack
        self.node = rclpy.create_node("launch_shutdown_watch")
        self.written: dict[str, int] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _on_diag(self, msg) -> None:
        from helpers.recorder import recorder_written

        recorder_written(msg, f"/{self.rack}", self.written)

    def up(self, nodes) -> bool:
        """Drain what came (0.1 s); True once every one of `nodes` is in the rack's
        namespace and the recorder has written power samples and allocations."""
        drain(self.node, 0.1)
        present = {f"{ns.rstrip('/')}/{name}"
                   for name, ns in self.node.get_node_names_and_namespaces()}
        return (all(f"/{self.rack}/{n}" in present for n in nodes)
                and self.written.get(f"/{self.rack}/power_samples", 0) > 0
                and self.written.get(f"/{self.rack}/power_allocation", 0) > 0)


def teardown_hangs(graph, out: str) -> dict[str, str]:
    """`dds_teardown_hangs` of the graph's output, each such process's last run ended by its
    own shutdown deadline (exit 0) or by launch's SIGKILL or SIGTERM (checked), printed when
    there are any."""
    from rackpower_nodes.tools.launch_env import dds_teardown_hangs

    hangs = dds_teardown_hangs(out)
    for proc, frame in hangs.items():
        run = next(r for r in graph.runs if r.name == proc)
        assert run.code in (0, -9, -15), f"{proc} hung in {frame} and exited {run.code}"
        by = "its shutdown deadline" if run.code == 0 else "launch"
        print(f"{proc}: rclpy's teardown of the node's DDS entities hung in {frame} after the "
              f"node's own stop; {by} ended it (exit {run.code})")
    return hangs


@contextmanager
def watching(make_watch):
    """rclpy initialised and `make_watch()` (an object with a `node`) for the block; leaving
    it, also on an error, destroys the node and shuts the context down, so this process is
    out of the DDS graph before the test stops the graph it watched. Fast DDS 3.2 can
    deadlock a participant that handles the removal of a remote endpoint (a node of the graph
    shutting down) while its own announcement timer fires: its receive thread holds the PDP
    lock and waits for the timer thread, which waits for that lock (seen with gdb in a test
    process under two CPU burners, the same family as eProsima/Fast-DDS#6502). A node
    destroyed after that waits forever, and so would the test run."""
    import rclpy

    with rclpy.init():
        watch = make_watch()
        try:
            yield watch
        finally:
            watch.node.destroy_node()


def leave_graph(node) -> None:
    """Destroy `node` and shut its context down (this process leaves the DDS graph, as
    `watching` does, before the test stops the process it listened to); a second call, e.g.
    from the fixture that made the node, does nothing. What the node collected stays."""
    import rclpy

    if getattr(node, "left_graph", False):
        return
    context = node.context
    node.destroy_node()
    node.left_graph = True
    rclpy.try_shutdown(context=context)
