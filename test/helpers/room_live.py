"""The live room of test_power_coordinator_live: three racks r1..r3 under one room, each with
its simulated PDU and its pdu_actuator in their own processes, one power_coordinator, and the
test's side (`RoomWatch`: each rack's power_samples out, allocations and grants in, and a
poller reading every PDU's allocation registers over Modbus).

Each rack: four components c1..c4 on outlets 1..4 of its PDU, floors 50 W, ceilings 600 W,
priorities 2, 2, 1, 1; its own budget 10 A x 230 V x 0.8 = 1840 W; guaranteed 700 W. The room
is rated 3000 W (three racks busy at once would want 5520 W), and the guaranteed shares sum
to 2100 W.
"""
from __future__ import annotations

import subprocess
import threading
import time

import numpy as np

RACKS = ("r1", "r2", "r3")
ROOM_W = 3000.0
RACK_W = 1840.0
GUARANTEED_W = 700.0
PERIOD_S = 0.5
LEASE_S = 2.0
RATE_HZ = 10.0
NAMES = ["c1", "c2", "c3", "c4"]
BUSY = np.full(4, 500.0)          # W per component: asks 550 each, 2200 W, above the rating
IDLE = np.full(4, 60.0)           # asks 70 each, 280 W
MEDIUM = np.full(4, 200.0)        # asks 220 each, 880 W

__all__ = ["BUSY", "GUARANTEED_W", "IDLE", "LEASE_S", "MEDIUM", "PERIOD_S", "RACKS",
           "RACK_W", "RATE_HZ", "ROOM_W", "PduPoller", "RoomWatch", "actuator_params",
           "coordinator_params", "start_discovery_server", "start_pdu", "tree_doc"]


def tree_doc() -> dict:
    return {"power_tree": {"name": "room", "rating_w": ROOM_W, "children": [
        {"rack": r, "rating_w": RACK_W, "guaranteed_w": GUARANTEED_W} for r in RACKS]}}


def coordinator_params(tree_path: str) -> dict:
    return {"power_tree": tree_path, "period_s": PERIOD_S, "lease_s": LEASE_S}


def actuator_params(port: int) -> dict:
    """A rack's actuator: reactive (no forecaster here), budget from the coordinator."""
    return {
        "mode": "reactive", "autostart": True,
        "budget": {"breaker_a": 10.0, "voltage_v": 230.0, "derating": 0.8,
                   "source": "coordinator", "guaranteed_w": GUARANTEED_W},
        "inputs": {"samples_stale_s": 0.5},
        "control": {"rate_hz": RATE_HZ},
        "components": {"names": NAMES, "pdu": ["pdu"] * 4, "outlet": [1, 2, 3, 4],
                       "floor_w": [50.0] * 4, "ceiling_w": [600.0] * 4,
                       "priority": [2, 2, 1, 1]},
        "pdus": {"names": ["pdu"], "urls": [f"tcp://127.0.0.1:{port}"],
                 "maps": ["rackpower_sim"], "unit_ids": [1]},
        "pdu": {"timeout_s": 0.5, "retry_s": 0.5},
    }


def start_pdu(python: str, port: int, env: dict, log) -> subprocess.Popen:
    """A simulated PDU in its own process, every outlet at 100 W from power-on (so the room
    fits its rating before any actuator writes); returns once it listens."""
    proc = subprocess.Popen([python, "-m", "rackpower_nodes.sim.pdu_process", "--port",
                             str(port), "--defaults-w", "100"], env=env,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        proc.kill()
        raise RuntimeError(f"simulated PDU on port {port} did not start: {line!r}")
    return proc


def start_discovery_server(port: int, env: dict, log) -> subprocess.Popen | None:
    """A Fast DDS discovery server on 127.0.0.1:`port` (what `fastdds discovery -l 127.0.0.1
    -p <port>` runs; that wrapper needs psutil, which the venv lacks), or None where the
    binary is absent. Returns once it says it runs."""
    import os
    import sys
    from pathlib import Path

    prefix = Path(sys.prefix)
    binary = prefix / "bin" / "fast-discovery-server"
    if not binary.exists():
        return None
    libs = [prefix / "lib", *sorted(prefix.glob("lib/python3*/site-packages/ros_fastdds.libs"))]
    env = dict(env, LD_LIBRARY_PATH=os.pathsep.join(map(str, libs)))
    proc = subprocess.Popen([str(binary), "42", "-l", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    for line in proc.stdout:
        if "Server started" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()   # drain it
            return proc
    raise RuntimeError(f"the discovery server on port {port} did not start "
                       f"(exit {proc.wait()})")


class RoomWatch:
    """The test's node: each rack's power_samples (20 Hz, `measured[rack]` W per component),
    its allocations (stamp, budget_w, source) and the grants it is sent (receipt time)."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import PowerAllocation, PowerSamples, RackBudget
        from rackpower_nodes.nodes.common import latched_qos, samples_qos
        from rackpower_nodes.nodes.room_msgs import room_qos

        self.node = rclpy.create_node("room_watch")
        self.measured = {r: MEDIUM.copy() for r in RACKS}
        self.allocations: dict[str, list] = {r: [] for r in RACKS}
        self.grants: dict[str, list[tuple[float, float, int]]] = {r: [] for r in RACKS}
        self.coordinator_diag: dict[str, dict[str, str]] = {}     # rack -> its values
        self.lock = threading.Lock()
        self._pubs = {r: self.node.create_publisher(PowerSamples, f"/{r}/power_samples",
                                                    samples_qos(0.25)) for r in RACKS}
        for r in RACKS:
            self.node.create_subscription(PowerAllocation, f"/{r}/power_allocation",
                                          lambda m, r=r: self._on_alloc(r, m), latched_qos())
            self.node.create_subscription(RackBudget, f"/{r}/rack_budget",
                                          lambda m, r=r: self._on_grant(r, m), room_qos())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)
        self._msg = PowerSamples
        self.node.create_timer(0.05, self._publish)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:     # the context ended first (a failed assert)
            pass

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()

    def _publish(self) -> None:
        from rackpower_nodes.nodes.common import float32_array

        for r, pub in self._pubs.items():
            values = float32_array(self.measured[r])
            msg = self._msg(channel_ids=NAMES, sample_count=1, sample_period_s=0.05,
                            mean_power_w=values, peak_power_w=values)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            pub.publish(msg)

    def _on_alloc(self, rack: str, m) -> None:
        t = m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
        with self.lock:
            self.allocations[rack].append((t, float(m.budget_w), m.mode, bool(m.pdu_written)))

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.startswith("/power_coordinator: rack "):
                with self.lock:
                    self.coordinator_diag[st.name.rsplit(" ", 1)[-1]] = {
                        kv.key: kv.value for kv in st.values}

    def _on_grant(self, rack: str, m) -> None:
        with self.lock:
            self.grants[rack].append((time.time(), float(m.budget_w), int(m.seq)))

    def budget(self, rack: str) -> float:
        """The budget in force in the rack's newest allocation, W (NaN before any)."""
        with self.lock:
            return self.allocations[rack][-1][1] if self.allocations[rack] else float("nan")

    def wait(self, predicate, timeout_s: float, poll_s: float = 0.05) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(poll_s)
        return False


class PduPoller:
    """Reads outlets 1..4's allocation registers of every rack's PDU, one pass after the other
    (a pass reads the three PDUs in turn, a few ms apart), and keeps each pass's room sum."""

    def __init__(self, ports: dict[str, int]):
        from rackpower_nodes.drivers.pdu import open_pdu

        self.clients = {r: open_pdu(f"tcp://127.0.0.1:{p}", "rackpower_sim", timeout_s=1.0)
                        for r, p in ports.items()}
        self.passes: list[tuple[float, float, float, dict[str, float]]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> PduPoller:
        for c in self.clients.values():
            c.connect()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for c in self.clients.values():
            c.close()

    def _run(self) -> None:
        from rackpower_nodes.drivers.pdu import PduError

        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                held = {r: float(np.sum(c.read_allocations([1, 2, 3, 4])))
                        for r, c in self.clients.items()}
            except PduError as exc:
                self.failures.append(str(exc))
                time.sleep(0.1)
                continue
            self.passes.append((time.time(), time.monotonic() - t0, sum(held.values()), held))
            self._stop.wait(0.02)

    def max_room_w(self) -> float:
        return max(p[2] for p in self.passes)
