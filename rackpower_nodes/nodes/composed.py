"""The rack's whole graph in one process: `rack_composed`, for small controllers.

    rack_composed [--metrics] [--no-rack-view] --ros-args -r __ns:=/rack_01 \\
        --params-file config/rack.yaml [--params-file overrides.yaml]

The same node classes as the separate executables (current_sensor, host_telemetry, predictor,
pdu_actuator, recorder, health_monitor, retrain_scheduler, and rack_view unless
--no-rack-view; metrics_exporter with --metrics), each under its own name and reading its own
`/**/<node>:` section of the parameter files, all added to one executor. The
actuator stays a lifecycle node (`ros2 lifecycle set /rack_01/pdu_actuator ...` works as with
its own process). Overrides go in a parameter file with per-node sections: a plain
`-p key:=value` reaches every node of the process, and every node that does not declare the
key rejects it.

The executor is chosen as for a node's own executable (:func:`executor_threads`,
:func:`rackpower_nodes.nodes.main.make_executor`): while every node's `THREADS` entry is 1,
as it is for all of them now, the whole process spins on one thread, the main one, with
rclpy's C++ `EventsExecutor`; `RACKPOWER_EXECUTOR=classic` selects rclpy's Python
SingleThreadedExecutor instead, and any other value than `events` or `classic` stops the
process with exit code 2 naming it. Only an entry above 1 would put the nodes on a
MultiThreadedExecutor with the sum of the entries as its threads. On one thread a callback
that blocks holds every node up, so each node keeps its blocking work (network, devices,
fits) on threads of its own, as it does in its own process.

One process saves each node's interpreter, rclpy and DDS participant (memory) and the
messages between them stay in the process. The cost: one GIL for all nodes, and a crash in
any node's callback ends them all (the process exits 1 after the orderly shutdown, where
`ros2 launch` respawns it). SIGINT/SIGTERM shut every node down in order
(:func:`rackpower_nodes.nodes.main.run_nodes`): the actuator first (its safe split is written
while the rest still runs), the recorder's bag closed with its metadata.

The recorder's `storage: sqlite3` is refused here (exit 2); `mcap` (the default) is
accepted. The refusal guards the multi-threaded case: a sqlite3 connection belongs to the
thread that opened it, and a MultiThreadedExecutor would run the recorder's callbacks on a
pool of threads. With the present `THREADS` (all 1) that case does not arise: the recorder
is built, spun and destroyed on the main thread, as in its own process, which accepts
sqlite3. The refusal is kept as it was and is stricter than one thread requires.
"""
from __future__ import annotations

import argparse
import sys

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.nodes.current_sensor import CurrentSensorNode
from rackpower_nodes.nodes.health_monitor import HealthMonitorNode
from rackpower_nodes.nodes.host_telemetry import HostTelemetryNode
from rackpower_nodes.nodes.main import run_nodes
from rackpower_nodes.nodes.pdu_actuator import PduActuatorNode
from rackpower_nodes.nodes.predictor import PredictorNode
from rackpower_nodes.nodes.rack_view import RackViewNode
from rackpower_nodes.nodes.recorder import RecorderNode
from rackpower_nodes.nodes.retrain_scheduler import RetrainSchedulerNode

# the threads each node's own executable spins it with (its main()); all 1 now, so the
# composed process spins on one thread (the events executor); an entry above 1 would give it
# a MultiThreadedExecutor with their sum (executor_threads)
THREADS = {"pdu_actuator": 1, "current_sensor": 1, "host_telemetry": 1, "predictor": 1,
           "health_monitor": 1, "retrain_scheduler": 1, "recorder": 1, "rack_view": 1,
           "metrics_exporter": 1}


def _recorder() -> RecorderNode:
    node = RecorderNode()
    if node.config.storage == "sqlite3":
        node.destroy_node()
        raise ConfigError("recorder storage = 'sqlite3': not in rack_composed (a sqlite3 "
                          "connection is tied to one thread; refused here for the case of a "
                          "multi-threaded composed executor); use 'mcap' or the recorder's "
                          "own process")
    return node


def _metrics_exporter():
    # only with --metrics: prometheus_client and its HTTP server are not loaded otherwise
    from rackpower_nodes.nodes.metrics_exporter import MetricsExporterNode

    return MetricsExporterNode()


def factories(metrics: bool = False, rack_view: bool = True) -> dict[str, object]:
    """Node name -> the callable that builds it, in the order they are built and, at
    shutdown, destroyed: the actuator first, the recorder (which records to the end) last."""
    built = {"pdu_actuator": PduActuatorNode, "current_sensor": CurrentSensorNode,
             "host_telemetry": HostTelemetryNode, "predictor": PredictorNode,
             "health_monitor": HealthMonitorNode, "retrain_scheduler": RetrainSchedulerNode}
    if rack_view:
        built["rack_view"] = RackViewNode
    if metrics:
        built["metrics_exporter"] = _metrics_exporter
    built["recorder"] = _recorder
    return built


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """This executable's own options (before --ros-args) and the ROS arguments."""
    if "--ros-args" in argv:
        cut = argv.index("--ros-args")
        own, ros = argv[:cut], argv[cut:]
    else:
        own, ros = argv, []
    parser = argparse.ArgumentParser(prog="rack_composed", description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", action="store_true",
                        help="also run metrics_exporter (Prometheus /metrics)")
    parser.add_argument("--no-rack-view", action="store_true",
                        help="leave rack_view (RViz markers) out")
    return parser.parse_args(own), ros


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    opts, ros = parse_args(argv)
    built = factories(opts.metrics, not opts.no_rack_view)
    return run_nodes(list(built.values()), "rack_composed", [sys.argv[0], *ros],
                     threads=executor_threads(built))


def executor_threads(built) -> int:
    """1 (one thread for all: the events executor, or the classic one with
    RACKPOWER_EXECUTOR=classic) when every node keeps its blocking work off its callbacks (its
    own executable spins it on one thread), else the sum of their threads, so a node blocked
    in I/O holds no other node up."""
    wanted = [THREADS[name] for name in built]
    return 1 if all(n == 1 for n in wanted) else sum(wanted)


if __name__ == "__main__":
    sys.exit(main())
