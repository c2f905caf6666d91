"""health_monitor reads the PSUs' own meters from the BMCs, live, over real DDS: simulated rack
(its BMC serving Power.PowerSupplies[]) -> current_sensor -> health_monitor with a learned
baseline. A psu_efficiency fault injected in the live simulator reaches `component_health` as
a fault with cause psu_efficiency, carried by the PSU detector (its evidence comes only from
the BMC readings: without them the same fault is named fan_wear, the PSUs said to be fine),
and `/diagnostics` says ERROR for it and OK for the BMC."""
from __future__ import annotations

import subprocess

import pytest
import yaml
from helpers.graph import spin_until
from helpers.sensor import rack_board_params

from rackpower_nodes.sim.faults.spec import FaultSpec
from rackpower_nodes.sim.live import LiveRack
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

NS = "/rack_psu"
FAULTY = "srv03"
NAMES = ("srv01", "srv02", "srv03", "srv04", "srv05", "srv06", "srv07", "srv08", "srv09",
         "srv10", "srv11", "srv12", "tor-a", "tor-b", "stor-1", "stor-2")
KINDS = ("server",) * 12 + ("switch",) * 2 + ("storage",) * 2
OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"
TRAIN_SEED = 100


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A HealthModel learned on half an hour of the simulated rack (its PSU meters included,
    as fast mode makes them) and that half hour's start."""
    from rackpower_nodes.core.health.config import HealthConfig
    from rackpower_nodes.core.health.monitor import HealthModel
    from rackpower_nodes.sim.faults.frames import health_frame
    from rackpower_nodes.sim.rack_sim import generate

    data = generate(0.5, seed=TRAIN_SEED)
    model = HealthModel.fit(health_frame(data), HealthConfig(trees=20))
    assert model.names == NAMES
    return model.save(tmp_path_factory.mktemp("psu_model") / "rack"), data.start_unix


def _params(tmp_path, board: str, model: str, bmcs: dict) -> str:
    doc = {
        "/**/current_sensor": {"ros__parameters": rack_board_params(board, NAMES)},
        "/**/health_monitor": {"ros__parameters": {
            "components": {"names": list(NAMES), "kinds": list(KINDS)},
            # a learned fault waits health.name_after_min (20 min) before it is raised, so
            # that its cause is named from minutes after the change (tested in the core);
            # this test's step fault is judged at once
            "health": {"model_path": model, "name_after_min": 0},
            "psu_meters": {"enabled": True, "username": "admin",
                           "components": {"url": [bmcs.get(n, "") for n in NAMES]}}}},
    }
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _level(status) -> bytes:
    return status.level if isinstance(status.level, bytes) else bytes([status.level])


def test_a_psu_losing_efficiency_is_found_from_the_bmcs_psu_meters(ros_env, tmp_path,
                                                                    learned):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray

    from rackpower.msg import ComponentHealth
    from rackpower_nodes.nodes.health_monitor import health_qos

    model, start_unix = learned
    board = str(tmp_path / "board")
    # the training half hour's time of day: the servers' loads within what the curves saw
    rack = LiveRack(board, board_channels=16, board_rate_hz=500.0, pdu_base_port=0,
                    bmc_port=0, seed=TRAIN_SEED, start_unix=start_unix).start()
    bmcs = rack.manifest()["bmcs"]
    env = {**ros_env, "RACKPOWER_BMC_PASSWORD": "rackpower"}
    args = ["--ros-args", "-r", f"__ns:={NS}", "--params-file",
            _params(tmp_path, board, str(model), bmcs)]
    procs = [subprocess.Popen([str(executable(name)), *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name in ("current_sensor", "health_monitor")]
    try:
        with rclpy.init():
            node = rclpy.create_node("psu_listener", namespace=NS)
            health, diag = {}, {}
            node.create_subscription(ComponentHealth, "component_health",
                                     lambda m: health.__setitem__(m.component_id, m),
                                     health_qos(len(NAMES)))

            def on_diag(msg) -> None:
                for s in msg.status:
                    if s.name.startswith(f"{NS}/health_monitor: "):
                        diag[s.name.split(": ", 1)[1]] = s

            node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 20)
            psu_status = f"PSU meters {rack.bmc.url}"
            # the BMC is read (one status for it, OK) and the faulty-to-be server is fine
            assert spin_until(node, lambda: psu_status in diag and _level(
                diag[psu_status]) == OK and FAULTY in health, 90), \
                {k: (s.level, s.message) for k, s in diag.items() if "PSU" in k}
            assert health[FAULTY].state == "ok" and health[FAULTY].baseline_learned
            assert diag[psu_status].message.startswith("ok: 12 chassis read")
            values = {kv.key: kv.value for kv in diag[FAULTY].values}
            assert values["psu_meter"].startswith("ok (")
            rack.inject_fault(FaultSpec("psu_efficiency", FAULTY, rack.sim_time(), 0, 0.3,
                                        growth="step"))
            # the PSU detector works per minute: two faulty minutes at most, with the BMC's
            # 10 s refresh and the node's 10 s poll before the first reading shows it
            assert spin_until(node, lambda: health[FAULTY].state == "fault", 240), \
                health[FAULTY]
            msg = health[FAULTY]
            evidence = dict(zip(msg.evidence_names, msg.evidence_values))
            assert msg.cause == "psu_efficiency" and not msg.sensor_fault, (msg.cause, evidence)
            assert evidence["score_psu"] >= 1.0
            assert evidence["psu_extra_frac"] > 0.15      # the PSUs' own in / out says so
            assert spin_until(node, lambda: _level(diag[FAULTY]) == ERROR, 30.0)
            assert "psu_efficiency" in diag[FAULTY].message
            assert _level(diag[psu_status]) == OK
            node.destroy_node()
    finally:
        for proc in procs:
            stop_process(proc)
        rack.stop()


def test_bad_psu_meter_settings_stop_the_node_naming_them(ros_env, tmp_path):
    doc = {"/**/health_monitor": {"ros__parameters": {
        "components": {"names": list(NAMES), "kinds": list(KINDS)},
        "psu_meters": {"enabled": True, "perod_s": 5.0,
                       "components": {"url": ["http://bmc/redfish/v1/Chassis/1/Power"]
                                      + [""] * (len(NAMES) - 1)}}}}}
    params = tmp_path / "bad.yaml"
    params.write_text(yaml.safe_dump(doc))
    out = subprocess.run([str(executable("health_monitor")), "--ros-args", "-r",
                          f"__ns:={NS}", "--params-file", str(params)], env=ros_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "psu_meters.perod_s: not a parameter of health_monitor; did you mean " \
        "'psu_meters.period_s'?" in out.stderr, out.stderr
    assert "psu_meters.components.url[0] = 'http://bmc/redfish/v1/Chassis/1/Power' (srv01)" \
        in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
