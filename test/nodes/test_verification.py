"""Verification from the hardware, end to end: the `pdu_actuator` node in its own process over
real DDS, one simulated Modbus PDU with allocation registers (a1, a2) and one metering PDU
whose servers (b1, b2) are capped through a simulated Redfish BMC.

In every mode (proactive, reactive, static, safe) a foreign client writes an allocation
register (pymodbus, as anyone on the management network can) and a BMC limit (curl): the node
finds each by read-back, corrects it, and names it in /diagnostics (device, outlet, expected,
found). A PDU restarted with its defaults (4600 W on two outlets, budget 920 W) is corrected
too. While a slow device delays the correction, the published held_w shows the foreign value.
Deactivate and Ctrl-C confirm the static split by read-back and say what the devices hold.

The times from a foreign write to the device holding the corrected value again are printed
(`pytest -s`), never asserted; benchmarks/bench_verification.py measures them over many
writes.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml
from helpers.devices import MONITOR_MAP, PASSWORD, USER, curl_patch, foreign_write, sim_bmc
from helpers.rack import NAMES, Rack, expected_static, free_port

from rackpower_nodes.drivers.pdu_link import float32_floor
from rackpower_nodes.tools.launch_env import executable, stop_process
from rackpower_nodes.sim.pdu import PduModel, SimPduServer

pytestmark = pytest.mark.ros

NS = "/rack_vf"
BUDGET_W = 920.0
FOREIGN_PDU_W = 2300.0          # a1's register: ten times its allocation
FOREIGN_BMC_W = 500.0           # b1's limit: the BMC's allowable maximum


class _VRack(Rack):
    """The test rack, also keeping every diagnostics value of the actuator's devices."""

    def __init__(self, namespace: str):
        self.values: dict[str, dict[str, str]] = {}
        super().__init__(namespace)

    def _on_diag(self, msg) -> None:
        super()._on_diag(msg)
        for s in msg.status:
            if "pdu_actuator" in s.name:
                self.values[s.name.rsplit(": ", 1)[-1]] = {kv.key: kv.value for kv in s.values}

    def set_mode(self, mode: str) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        cli = self.node.create_client(SetParameters, f"{NS}/pdu_actuator/set_parameters")
        assert cli.wait_for_service(timeout_sec=30.0)
        fut = cli.call_async(SetParameters.Request(
            parameters=[Parameter("mode", value=mode).to_parameter_msg()]))
        assert _wait(fut.done, 30.0) and fut.result().results[0].successful
        self.node.destroy_client(cli)

    def transition(self, transition_id: int) -> None:
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        cli = self.node.create_client(ChangeState, f"{NS}/pdu_actuator/change_state")
        assert cli.wait_for_service(timeout_sec=30.0)
        fut = cli.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert _wait(fut.done, 20.0) and fut.result().success
        self.node.destroy_client(cli)


def _wait(condition, timeout_s: float = 20.0, poll_s: float = 0.001) -> bool:
    """Poll `condition` until true; the timeout guards against hanging, it is not a figure."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(poll_s)
    return True


def _bmc_write(bmc, chassis: str, watts: float) -> None:
    """A foreign PATCH of a BMC limit by curl (b1 has EnvironmentMetrics, b2 the legacy
    Power resource)."""
    if chassis == "b1":
        url, body = "EnvironmentMetrics", {"PowerLimitWatts": {"SetPoint": watts}}
    else:
        url, body = "Power", {"PowerControl": [{"PowerLimit": {"LimitInWatts": watts}}]}
    status, text = curl_patch(f"{bmc.chassis_url(chassis)}/{url}", body)
    assert status == 200, text


def _params(pdu_a: int, pdu_b: int, bmc, map_path: str) -> dict:
    return {
        "mode": "proactive", "autostart": True,
        "budget": {"breaker_a": 5.0, "voltage_v": 230.0, "derating": 0.8},     # 920 W
        "policy": {"quantile": "p99", "lead_s": 1.0, "window_s": 1.0},
        "inputs": {"forecast_stale_s": 0.5, "samples_stale_s": 0.5},
        "control": {"rate_hz": 10.0},
        "components": {"names": NAMES, "pdu": ["pdu-a", "pdu-a", "pdu-b", "pdu-b"],
                       "outlet": [1, 2, 1, 2], "floor_w": [50.0] * 4,
                       "ceiling_w": [400.0] * 4, "priority": [2, 1, 2, 1],
                       "power_cap_url": ["", "", bmc.chassis_url("b1"),
                                         bmc.chassis_url("b2")]},
        "pdus": {"names": ["pdu-a", "pdu-b"],
                 "urls": [f"tcp://127.0.0.1:{pdu_a}", f"tcp://127.0.0.1:{pdu_b}"],
                 "maps": ["rackpower_sim", map_path]},
        "pdu": {"timeout_s": 1.5, "retry_s": 0.5},          # pdu.verify_s: its default
        "power_caps": {"username": USER, "timeout_s": 1.5, "min_change_w": 0.0},
    }


def _devices(pdu, bmc) -> np.ndarray:
    """What the devices hold for a1, a2, b1, b2 (read here, not from the node), W."""
    b = [bmc.limit_w(c) for c in ("b1", "b2")]
    return np.array([*pdu.model.allocation_w[:2], *(np.inf if v is None else v for v in b)])


def _settled(rack, pdu, bmc, mode: str) -> np.ndarray:
    """Wait until the node publishes `mode` and the devices hold that allocation; returns
    it as the devices hold it."""
    def holds() -> bool:
        m = rack.allocations[-1] if rack.allocations else None
        if m is None or m.mode != mode or not m.pdu_written:
            return False
        alloc = float32_floor(np.array(m.allocated_w, dtype=np.float64))
        alloc[2:] = np.floor(alloc[2:])                      # BMCs: whole watts
        return bool(np.array_equal(_devices(pdu, bmc), alloc))
    assert _wait(holds, 20.0, 0.01), (mode, [(m.mode, m.mode_reason) for m in
                                             rack.allocations[-3:]], _devices(pdu, bmc))
    return _devices(pdu, bmc)


def _corrected_after(read, foreign: float, write) -> float:
    """`write()` a foreign value, then time until `read()` no longer shows it, s."""
    write()
    t0 = time.perf_counter()
    assert _wait(lambda: read() != foreign, 20.0), f"{foreign} W never corrected"
    return time.perf_counter() - t0


def _named(rack, device: str, text: str) -> bool:
    v = rack.values.get(device, {})
    return text in v.get("last_foreign_value", "")


@pytest.fixture
def rig(ros_env, tmp_path):
    """The devices, the node in its own process and the test's side of the graph."""
    import rclpy

    pdu_a = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0)).start()
    pdu_b = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0)).start()
    bmc = sim_bmc(free_port()).start()
    map_path = tmp_path / "metering.yaml"
    map_path.write_text(yaml.safe_dump(MONITOR_MAP))
    params = _params(pdu_a.port, pdu_b.port, bmc, str(map_path))
    path = tmp_path / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    log = tmp_path / "actuator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(executable("pdu_actuator")), "--ros-args", "-r", f"__ns:={NS}",
             "--params-file", str(path)], env={**ros_env, "RACKPOWER_BMC_PASSWORD": PASSWORD},
            stdout=out, stderr=subprocess.STDOUT)
    try:
        with rclpy.init():
            rack = _VRack(NS)
            try:
                yield {"rack": rack, "pdu": pdu_a, "bmc": bmc, "proc": proc, "log": log,
                       "params": params}
            finally:
                rack.close()
    finally:
        if proc.poll() is None:
            stop_process(proc)
        for device in (bmc, pdu_b, pdu_a):
            device.stop()


def test_foreign_writes_are_found_named_and_corrected_in_every_mode(rig):
    rack, pdu, bmc = rig["rack"], rig["pdu"], rig["bmc"]
    figures: dict[str, tuple[float, float]] = {}
    for n, mode in enumerate(("proactive", "reactive", "static", "safe"), start=1):
        if mode != "proactive":
            rack.set_mode(mode)
        before = _settled(rack, pdu, bmc, mode)
        t_pdu = _corrected_after(lambda: pdu.model.allocation_w[0], FOREIGN_PDU_W,
                                 lambda: foreign_write(pdu, 1, FOREIGN_PDU_W))
        t_bmc = _corrected_after(lambda: bmc.limit_w("b1"), FOREIGN_BMC_W,
                                 lambda: _bmc_write(bmc, "b1", FOREIGN_BMC_W))
        figures[mode] = (t_pdu, t_bmc)
        after = _settled(rack, pdu, bmc, mode)
        assert after.sum() <= BUDGET_W and np.array_equal(after, before), (mode, before, after)
        # named in /diagnostics: device, outlet, expected, found
        assert _wait(lambda: _named(rack, "PDU pdu-a", f"PDU pdu-a outlet 1: expected "
                                    f"{before[0]:g} W, found 2300 W"), 30.0, 0.05), \
            (mode, rack.values.get("PDU pdu-a"))
        assert _wait(lambda: _named(rack, "bmc:b1", f"BMC bmc:b1 outlet 1: expected "
                                    f"{before[2]:g} W, found 500 W"), 30.0, 0.05), \
            (mode, rack.values.get("bmc:b1"))
        assert _wait(lambda: rack.values["PDU pdu-a"].get("corrections") == str(n)
                     and rack.values["bmc:b1"].get("corrections") == str(n), 30.0, 0.05), \
            (mode, rack.values["PDU pdu-a"], rack.values["bmc:b1"])
        for device in ("PDU pdu-a", "bmc:b1"):          # WARN for a while after, saying so
            level, text = rack.diag[device]
            assert level == 1 and text.startswith("foreign value corrected: "), (device, text)
    print("\nforeign write -> device corrected, s (PDU register, BMC limit): "
          + json.dumps({m: [round(t, 3) for t in v] for m, v in figures.items()}))
    assert "PDU pdu-a outlet 1: expected" in rig["log"].read_text()      # and in the log


def test_a_pdu_restarted_with_its_defaults_above_the_budget_is_corrected(rig):
    rack, pdu, bmc = rig["rack"], rig["pdu"], rig["bmc"]
    rack.set_mode("static")
    before = _settled(rack, pdu, bmc, "static")
    t0 = time.perf_counter()
    pdu.reboot()                          # a1, a2 back to 2300 W each: 4600 W > 920 W
    assert _wait(lambda: np.array_equal(_devices(pdu, bmc), before), 20.0)
    took = time.perf_counter() - t0
    print(f"\nPDU rebooted with defaults above the budget -> corrected after {took:.3f} s")
    assert _wait(lambda: rack.values.get("PDU pdu-a", {}).get("reboots") == "1", 30.0, 0.05)
    v = rack.values["PDU pdu-a"]
    assert v["last_reboot"] == "PDU pdu-a restarted (boot_count 1 -> 2)", v
    assert "found 2300 W (after connecting)" in v["last_foreign_value"], v


def test_held_w_shows_the_foreign_value_until_corrected(rig):
    """A slow PDU and a slow BMC keep the correction in flight long enough for the published
    held_w to show what the device reported: the foreign value, then the corrected one."""
    rack, pdu, bmc = rig["rack"], rig["pdu"], rig["bmc"]
    rack.set_mode("static")
    before = _settled(rack, pdu, bmc, "static")
    pdu.set_delay(write_s=0.6)
    foreign_write(pdu, 1, FOREIGN_PDU_W)
    assert rack.run_until(lambda m: m.held_w[0] == FOREIGN_PDU_W, 30.0), \
        [list(m.held_w) for m in rack.allocations[-5:]]
    assert rack.run_until(lambda m: m.held_w[0] == np.float32(before[0]), 30.0)
    assert pdu.model.allocation_w[0] == before[0]
    pdu.set_delay()
    bmc.set_delay(0.4)
    _bmc_write(bmc, "b1", FOREIGN_BMC_W)
    assert rack.run_until(lambda m: m.held_w[2] == FOREIGN_BMC_W, 30.0), \
        [list(m.held_w) for m in rack.allocations[-5:]]
    assert rack.run_until(lambda m: m.held_w[2] == before[2], 30.0)
    bmc.set_delay(0.0)
    assert bmc.limit_w("b1") == before[2]


def test_deactivate_and_shutdown_confirm_the_static_split_by_read_back(rig):
    from lifecycle_msgs.msg import Transition

    rack, pdu, bmc = rig["rack"], rig["pdu"], rig["bmc"]
    _settled(rack, pdu, bmc, "proactive")
    static = float32_floor(expected_static(rig["params"]))
    static[2:] = np.floor(static[2:])
    # a foreign raise just before the node leaves: the static split still lands whole
    foreign_write(pdu, 2, FOREIGN_PDU_W)
    rack.transition(Transition.TRANSITION_DEACTIVATE)
    np.testing.assert_array_equal(_devices(pdu, bmc), static)
    held = f"{static.sum():.0f} W of {BUDGET_W:.0f} W"
    assert _wait(lambda: f"deactivate: static split confirmed by read-back: devices hold "
                 f"{held}" in rig["log"].read_text(), 30.0, 0.05), rig["log"].read_text()
    rack.transition(Transition.TRANSITION_ACTIVATE)
    _settled(rack, pdu, bmc, "proactive")
    _bmc_write(bmc, "b2", FOREIGN_BMC_W)
    rig["proc"].send_signal(signal.SIGINT)
    assert rig["proc"].wait(timeout=20) == 0
    np.testing.assert_array_equal(_devices(pdu, bmc), static)
    text = rig["log"].read_text()
    assert f"shutdown: static split confirmed by read-back: devices hold {held}" in text, text
    assert "Traceback" not in text, text
