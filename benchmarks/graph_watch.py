"""Starting the rack's graph for bench_graph_resources.py, and what it said meanwhile.

`start_launch` runs `ros2 launch launch/rack.launch.py use_sim:=true` (a node per process);
`start_composed` runs the simulator and `rack_composed` (test/helpers/composed.py). Both
return an object with `wait_until`, `pids()` (process name -> pid, the simulator as
`rack_sim`), `close()` (Ctrl-C, then the exit codes in `ending`). `GraphReport` collects
power_allocation modes and /diagnostics levels while it is started.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from helpers.composed import ComposedRack


class LaunchStarted:
    def __init__(self, tree: Path, rack: str, env: dict, tmp: Path, model: str = ""):
        from rackpower_nodes.tools.launch_env import LaunchedGraph

        self.graph = LaunchedGraph([str(tree / "launch" / "rack.launch.py"), "use_sim:=true",
                                    f"rack:={rack}", f"data_dir:={tmp / 'data'}",
                                    f"config:={tree / 'config' / 'rack.yaml'}",
                                    *([f"model:={model}"] if model else [])], env,
                                   tmp / "launch.log")
        self.ending = "not stopped"

    def wait_until(self, condition, timeout_s: float, what: str) -> None:
        self.graph.wait_until(condition, timeout_s, what)

    def pids(self) -> dict[str, int]:
        return {r.name.rsplit("-", 1)[0]: r.pid for r in self.graph.runs if r.code is None}

    def close(self) -> None:
        try:
            if self.graph.proc.poll() is None:
                self.graph.interrupt(True)
                code = self.graph.wait_ended(60.0)
                codes = {r.name.rsplit("-", 1)[0]: r.code for r in self.graph.runs}
                self.ending = f"launch exit {code}, processes {codes}"
        finally:
            self.graph.close()


def start_launch(tree: Path, rack: str, env: dict, tmp: Path, model: str = "") -> LaunchStarted:
    return LaunchStarted(tree, rack, env, tmp, model)


class ComposedStarted(ComposedRack):
    @property
    def ending(self) -> str:
        return f"exit codes {self.codes}"


def start_composed(tree: Path, rack: str, env: dict, tmp: Path,
                   model: str = "") -> ComposedStarted:
    return ComposedStarted(tree, rack, env, tmp, model=model)


class GraphReport:
    """Subscribes (on `node`) to the rack's power_allocation and to /diagnostics; between
    start() and stop() counts the allocation modes and each status's levels."""

    NOTABLE = ("frames_lost", "frame_rate_hz", "fallback_components", "fallback_reason",
               "load_state", "inference_ms_max", "state", "mode", "lifecycle")

    def __init__(self, node, rack: str):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from rackpower.msg import PowerAllocation

        self.rack = rack
        self.active = False
        self.modes: list[tuple[str, str]] = []
        self.levels: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.last: dict[str, dict] = {}
        self.worst: dict[str, int] = defaultdict(int)      # highest level seen per status
        self.sensor: list[dict] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(PowerAllocation, f"/{rack}/power_allocation",
                                 self._on_alloc, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def _on_alloc(self, msg) -> None:
        if self.active:
            self.modes.append((msg.mode, msg.mode_reason))

    def _on_diag(self, msg) -> None:
        if not self.active:
            return
        for s in msg.status:
            if not s.name.startswith(f"/{self.rack}/"):
                continue
            level = s.level[0] if isinstance(s.level, bytes) else int(s.level)
            self.levels[s.name][min(level, 3)] += 1
            self.worst[s.name] = max(self.worst[s.name], min(level, 3))
            values = {kv.key: kv.value for kv in s.values}
            self.last[s.name] = {"message": s.message, "values": values}
            if "frames_lost" in values and "frames" in values:
                self.sensor.append(values)

    def frames_lost_delta(self) -> tuple[int, int] | None:
        """(frames read, frames lost) between the first and last sensor status seen."""
        if len(self.sensor) < 2:
            return None
        a, b = self.sensor[0], self.sensor[-1]
        return (int(b["frames"]) - int(a["frames"]),
                int(b["frames_lost"]) - int(a["frames_lost"]))

