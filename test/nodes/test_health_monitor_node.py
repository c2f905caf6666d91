"""The `health_monitor` executable in the live graph: simulated rack -> current_sensor ->
health_monitor, over real DDS.

A fault injected into the live simulator (one server's board channel sticks) reaches
`component_health` (state fault, cause sensor_stuck), `/diagnostics` (ERROR for that
component, OK for a clean one) and the recorder's bag, with the simulated PDUs' outlet
registers read as the reference meter; a subscriber that joins late gets every component at
once (latched); when the samples stop, every component is STALE in `/diagnostics`; a learned
model is served and said so; online learning runs in a child and says how it went; an
unknown `health.*` parameter, or a model learned for other components, stops the node,
named.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml
from helpers.graph import spin_until
from helpers.recorder import bags_in, start_recorder
from helpers.sensor import rack_board_params

from rackpower_nodes.sim.faults.spec import FaultSpec
from rackpower_nodes.sim.live import LiveRack
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

NS = "/rack_hm"
STUCK, CLEAN = "srv03", "srv01"
NAMES = ("srv01", "srv02", "srv03", "srv04", "srv05", "srv06", "srv07", "srv08", "srv09",
         "srv10", "srv11", "srv12", "tor-a", "tor-b", "stor-1", "stor-2")
KINDS = ("server",) * 12 + ("switch",) * 2 + ("storage",) * 2
OK, ERROR, STALE = b"\x00", b"\x02", b"\x03"


def _reference(manifest: dict) -> dict:
    """The simulated PDUs as the health monitor's reference meters (from the manifest)."""
    pdus = manifest["pdus"]
    wired = manifest["pdu_outlets"]
    return {"enabled": True, "period_s": 0.5,
            "pdus": {"names": [p["name"] for p in pdus], "urls": [p["url"] for p in pdus],
                     "maps": [p["map"] for p in pdus]},
            "components": {"pdu": [wired[n][0] for n in NAMES],
                           "outlet": [wired[n][1] for n in NAMES]}}


def _params(tmp_path, board: str, reference: dict | None = None, **health) -> str:
    doc = {
        "/**/current_sensor": {"ros__parameters": rack_board_params(board, NAMES)},
        "/**/health_monitor": {"ros__parameters": {
            "components": {"names": list(NAMES), "kinds": list(KINDS)},
            "inputs": {"stale_after_s": 3.0}, **({"health": health} if health else {}),
            **({"reference": reference} if reference else {})}},
    }
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


class _Listener:
    """component_health (latched) and the health_monitor's /diagnostics, newest per
    component."""

    def __init__(self, name: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import ComponentHealth
        from rackpower_nodes.nodes.health_monitor import health_qos

        self.node = rclpy.create_node(name, namespace=NS)
        self.health: dict[str, object] = {}
        self.count: dict[str, int] = {}
        self.diag: dict[str, object] = {}
        self.node.create_subscription(ComponentHealth, "component_health", self._on_health,
                                      health_qos(len(NAMES)))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 20)

    def _on_health(self, msg) -> None:
        self.health[msg.component_id] = msg
        self.count[msg.component_id] = self.count.get(msg.component_id, 0) + 1

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            if s.name.startswith(f"{NS}/health_monitor: "):
                self.diag[s.name.rsplit(": ", 1)[-1]] = s

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.node, predicate, timeout_s)


def _start_nodes(ros_env, params: str) -> list[subprocess.Popen]:
    """current_sensor and health_monitor in the test's namespace with the params file."""
    args = ["--ros-args", "-r", f"__ns:={NS}", "--params-file", params]
    return [subprocess.Popen([str(executable(name)), *args], env=ros_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name in ("current_sensor", "health_monitor")]


def _level(status) -> bytes:
    return status.level if isinstance(status.level, bytes) else bytes([status.level])


def test_a_stuck_channel_reaches_component_health_and_diagnostics(ros_env, tmp_path):
    import rclpy

    board = str(tmp_path / "board")
    rack = LiveRack(board, board_channels=16, board_rate_hz=500.0, pdu_base_port=0).start()
    params = _params(tmp_path, board, _reference(rack.manifest()))
    procs = _start_nodes(ros_env, params)
    bags = tmp_path / "bags"
    procs.append(start_recorder(ros_env, NS, bags, tmp_path / "recorder.log",
                                topics="[component_health]"))
    try:
        with rclpy.init():
            lis = _Listener("health_listener")
            # every component judged (and OK in /diagnostics) before the fault
            assert lis.spin_until(lambda: set(lis.diag) == set(lis.health) == set(NAMES) and all(
                _level(s) == OK for s in lis.diag.values()), 60), \
                {k: (s.level, s.message) for k, s in lis.diag.items()}
            assert all(m.state == "ok" for m in lis.health.values())
            rack.inject_fault(FaultSpec("sensor_stuck", STUCK, onset_s=rack.sim_time(),
                                        growth_s=0.0, magnitude=0.0, growth="step"))
            assert lis.spin_until(lambda: lis.health[STUCK].state == "fault", 60), \
                lis.health[STUCK]
            msg = lis.health[STUCK]
            assert msg.cause == "sensor_stuck" and msg.sensor_fault
            assert msg.score >= 1.0 and msg.since_unix > 0
            assert lis.spin_until(lambda: _level(lis.diag[STUCK]) == ERROR, 30.0)
            assert "sensor_stuck" in lis.diag[STUCK].message
            assert _level(lis.diag[CLEAN]) == OK and lis.health[CLEAN].state == "ok"
            # the PDUs' outlet registers are read as the reference meter
            reference = {kv.key: kv.value for kv in lis.diag[CLEAN].values}["reference"]
            assert "pdu-a: ok" in reference and "pdu-b: ok" in reference, reference
            # an unchanged verdict is published again every publish.refresh_s (5 s), not at
            # every judged second: over 7 s (seven judged periods) at most two more messages
            # (a busy machine may delay them, never add any), and the refresh does come
            before = lis.count[CLEAN]
            lis.spin_until(lambda: False, 7.0)
            assert lis.count[CLEAN] - before <= 2, lis.count[CLEAN] - before
            assert lis.spin_until(lambda: lis.count[CLEAN] > before, 30)
            assert lis.health[CLEAN].state == "ok"
            # a subscriber that joins now gets every component's newest message at once
            late = _Listener("late_health_listener")
            assert late.spin_until(lambda: set(late.health) == set(NAMES), 30.0), \
                sorted(late.health)
            assert late.health[STUCK].state == "fault"
            # the samples stop: every component goes STALE (the fault stays an ERROR), its
            # verdict no longer refreshed
            stop_process(procs[0])
            assert lis.spin_until(lambda: _level(lis.diag[CLEAN]) == STALE, 15), \
                lis.diag[CLEAN].message
            assert "stale: no power sample for" in lis.diag[CLEAN].message
            assert _level(lis.diag[STUCK]) == ERROR and "stale" in lis.diag[STUCK].message
            assert procs[1].poll() is None
            late.node.destroy_node()
            lis.node.destroy_node()
    finally:
        for proc in procs:
            stop_process(proc)
        rack.stop()
    # the recorder wrote component_health into its bag, the fault included
    recorded = _recorded_health(bags)
    assert {m.component_id for m in recorded} == set(NAMES)
    assert any(m.component_id == STUCK and m.state == "fault" and m.cause == "sensor_stuck"
               for m in recorded)


def _recorded_health(folder) -> list:
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message

    from rackpower.msg import ComponentHealth

    out = []
    for bag in bags_in(folder):
        for path in bag.glob("*.mcap"):
            with path.open("rb") as fh:
                for _, channel, message in make_reader(fh).iter_messages():
                    if channel.topic.endswith("/component_health"):
                        out.append(deserialize_message(message.data, ComponentHealth))
    return out


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A HealthModel learned on half an hour of the simulated rack (training seed), small."""
    from rackpower_nodes.core.health import FRAME_FIELDS, HealthFrame
    from rackpower_nodes.core.health.config import HealthConfig
    from rackpower_nodes.core.health.monitor import HealthModel
    from rackpower_nodes.sim.faults.frames import health_frame
    from rackpower_nodes.sim.rack_sim import generate

    frame = health_frame(generate(0.5, seed=100))
    assert frame.names == NAMES
    four = HealthFrame(frame.t_unix, NAMES[:4], KINDS[:4],
                       *(getattr(frame, f)[:, :4] for f in FRAME_FIELDS))
    root = tmp_path_factory.mktemp("health_model")
    cfg = HealthConfig(trees=20)
    return {"rack": HealthModel.fit(frame, cfg).save(root / "rack"),
            "four": HealthModel.fit(four, cfg).save(root / "four")}


def test_a_learned_model_is_served_and_said(ros_env, tmp_path, learned):
    import rclpy

    board = str(tmp_path / "board")
    rack = LiveRack(board, board_channels=16, board_rate_hz=500.0, pdu_base_port=None).start()
    params = _params(tmp_path, board, model_path=str(learned["rack"]))
    procs = _start_nodes(ros_env, params)
    try:
        with rclpy.init():
            lis = _Listener("learned_listener")
            assert lis.spin_until(lambda: set(lis.health) == set(lis.diag) == set(NAMES), 60)
            assert all(m.baseline_learned for m in lis.health.values())
            values = {kv.key: kv.value for kv in lis.diag[CLEAN].values}
            assert values["model"] == f"loaded from {learned['rack']}"
            assert values["baseline_learned"] == "True"
            lis.node.destroy_node()
    finally:
        for proc in procs:
            stop_process(proc)
        rack.stop()


def test_online_learning_runs_in_a_child_and_says_how_it_went(ros_env, tmp_path):
    """health.learn_s: the node collects clean seconds and fits in a child process; 8 s are
    too few minutes for a model, so the fit fails, is said, and the checks carry on."""
    import rclpy

    board = str(tmp_path / "board")
    rack = LiveRack(board, board_channels=16, board_rate_hz=500.0, pdu_base_port=None).start()
    params = _params(tmp_path, board, learn_s=8.0, learn_dir=str(tmp_path / "learned"))
    procs = _start_nodes(ros_env, params)

    def model() -> str:
        return {kv.key: kv.value for kv in lis.diag[CLEAN].values}["model"] \
            if CLEAN in lis.diag else ""

    try:
        with rclpy.init():
            lis = _Listener("learning_listener")
            assert lis.spin_until(lambda: model().startswith("collecting clean seconds"), 60)
            assert lis.spin_until(lambda: model().startswith("learning failed"), 90), model()
            assert "minutes of data" in model()
            assert lis.spin_until(lambda: _level(lis.diag[CLEAN]) == OK, 30.0)
            assert not lis.health[CLEAN].baseline_learned
            assert procs[1].poll() is None
            lis.node.destroy_node()
    finally:
        for proc in procs:
            stop_process(proc)
        rack.stop()


def test_an_unknown_health_parameter_stops_the_node_naming_it(ros_env, tmp_path):
    params = _params(tmp_path, str(tmp_path / "board"), cusum_kk=0.7)
    out = subprocess.run([str(executable("health_monitor")), "--ros-args", "-r",
                          f"__ns:={NS}", "--params-file", params], env=ros_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert ("health.cusum_kk: not a parameter of health_monitor; did you mean "
            "'health.cusum_k'?") in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_a_model_learned_for_other_components_stops_the_node(ros_env, tmp_path, learned):
    params = _params(tmp_path, str(tmp_path / "board"), model_path=str(learned["four"]))
    out = subprocess.run([str(executable("health_monitor")), "--ros-args", "-r",
                          f"__ns:={NS}", "--params-file", params], env=ros_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"health.model_path = '{learned['four']}': cannot use the health model" \
        in out.stderr, out.stderr
    assert "srv05" in out.stderr and "Traceback" not in out.stderr
