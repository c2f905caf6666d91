"""Server power caps end to end: the `pdu_actuator` node in its own process capping servers
through simulated Redfish BMCs while its PDUs only meter (the usual real rack), read back by
curl; refused BMC credentials named while the node keeps trying."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml
from helpers.devices import MONITOR_MAP, PASSWORD, USER, sim_bmc
from helpers.power_caps import _limits
from helpers.rack import NAMES, Rack, expected_static, free_port

from rackpower_nodes.drivers.pdu_link import float32_floor
from rackpower_nodes.sim.pdu import PduModel, SimPduServer
from rackpower_nodes.tools.launch_env import executable, stop_process

NS = "/rack_pc"


# -- the node -----------------------------------------------------------------------------------
def _node_params(pdu_port: int, urls: list[str], map_path: str) -> dict:
    return {
        "mode": "proactive", "autostart": True,
        "budget": {"breaker_a": 5.0, "voltage_v": 230.0, "derating": 0.8},     # 920 W
        "policy": {"quantile": "p99", "lead_s": 1.0, "window_s": 1.0},
        "inputs": {"forecast_stale_s": 0.2, "samples_stale_s": 0.5},
        "components": {"names": NAMES, "pdu": ["pdu-a"] * 4, "outlet": [1, 2, 3, 4],
                       "floor_w": [50.0] * 4, "ceiling_w": [400.0] * 4,
                       "priority": [2, 1, 2, 1], "power_cap_url": urls},
        "pdus": {"names": ["pdu-a"], "urls": [f"tcp://127.0.0.1:{pdu_port}"],
                 "maps": [map_path]},
        "pdu": {"timeout_s": 0.3, "retry_s": 0.5},
        "power_caps": {"username": USER, "timeout_s": 0.5, "min_change_w": 0.0},
    }


def _curl_limit(url: str) -> float:
    """The limit in force, read by curl (an independent HTTP client) from either schema."""
    res = json.loads(subprocess.run(["curl", "-s", "-f", "-u", f"{USER}:{PASSWORD}", url],
                                    capture_output=True, text=True, timeout=20,
                                    check=True).stdout)
    for name, link in (("EnvironmentMetrics", res.get("EnvironmentMetrics")),
                       ("Power", res.get("Power"))):
        if link:
            base = url.split("/redfish/")[0]
            part = json.loads(subprocess.run(
                ["curl", "-s", "-f", "-u", f"{USER}:{PASSWORD}", base + link["@odata.id"]],
                capture_output=True, text=True, timeout=20, check=True).stdout)
            if name == "EnvironmentMetrics":
                return float(part["PowerLimitWatts"]["SetPoint"])
            return float(part["PowerControl"][0]["PowerLimit"]["LimitInWatts"])
    raise AssertionError(f"no power limit resource in {res}")


def _limits_follow(rack, urls: list[str], budget_w: float = 920.0,
                   timeout_s: float = 30.0) -> None:
    """The BMCs come to hold a proactive allocation published while curl read them, and that
    message's held_w says so. The reads (two curl calls per BMC) take longer than a publish
    period, so the limits are compared with every message of the window around the reads,
    not with "the newest" one; the allocation is stable under the test's constant input."""
    end = time.monotonic() + timeout_s
    while True:
        first = max(len(rack.allocations) - 1, 0)       # the message in force at the start
        limits = np.array([_curl_limit(u) for u in urls])
        window = rack.allocations[first:]
        rows = []
        for m in window:
            alloc = np.array(m.allocated_w, dtype=np.float64)
            held = np.array(m.held_w, dtype=np.float64)
            rows.append({"mode": m.mode, "allocated_w": alloc.tolist(),
                         "held_w": held.tolist(),
                         "allocated_sum_within_budget": bool(alloc.sum() <= budget_w),
                         "proactive": m.mode == "proactive",
                         "limits_are_allocation_rounded_down":
                             bool(np.all((alloc - limits >= 0) & (alloc - limits < 1.0))),
                         "held_w_is_limits": bool(np.array_equal(held, limits))})
        report = {"limits_w (curl)": limits.tolist(),
                  "limits_sum_within_budget": bool(limits.sum() <= budget_w),
                  "limits_whole_watts": bool(np.array_equal(limits, np.round(limits))),
                  "messages_in_window": rows}
        assert report["limits_sum_within_budget"] and report["limits_whole_watts"], report
        assert all(r["allocated_sum_within_budget"] for r in rows), report
        if any(r["proactive"] and r["limits_are_allocation_rounded_down"]
               and r["held_w_is_limits"] for r in rows):
            return
        assert time.monotonic() < end, f"no message in the window matches: {report}"
        time.sleep(0.2)


@pytest.mark.ros
def test_actuator_caps_servers_through_their_bmcs(ros_env, tmp_path):
    import rclpy

    pdu = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0)).start()
    bmc_port = free_port()
    bmc = sim_bmc(bmc_port).start()
    map_path = tmp_path / "metering.yaml"
    map_path.write_text(yaml.safe_dump(MONITOR_MAP))
    urls = [bmc.chassis_url(n) for n in NAMES]
    params = _node_params(pdu.port, urls, str(map_path))
    path = tmp_path / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    log = tmp_path / "actuator.err"
    env = {**ros_env, "RACKPOWER_BMC_PASSWORD": PASSWORD}
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [str(executable("pdu_actuator")), "--ros-args", "-r", f"__ns:={NS}",
             "--params-file", str(path)], env=env, stdout=err, stderr=subprocess.STDOUT)
    try:
        with rclpy.init():
            rack = Rack(NS)

            def written(m):
                return m.mode == "proactive" and m.pdu_written

            assert rack.run_until(written, 30.0), "never came up"
            # curl reads back, from both schemas, the published allocations in whole watts
            # (rounded down; changes under a watt are not written)
            _limits_follow(rack, urls)
            np.testing.assert_array_equal(pdu.model.allocation_w[:4], 2300.0)  # metering only

            # the BMC endpoint goes away: safe mode naming a BMC, ERROR in diagnostics
            bmc.stop()
            assert rack.run_until(lambda m: m.mode == "safe" and "bmc:" in m.mode_reason,
                                  30.0), [m.mode_reason for m in rack.allocations[-3:]]
            assert rack.run_until(lambda m: rack.diag.get("bmc:a1", (0, ""))[0] == 2, 30.0)
            # back (limits kept, sessions lost): reconnected, proactive, rewritten
            bmc.start()
            assert rack.run_until(written, 15.0)
            _limits_follow(rack, urls)
            rack.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        static = np.floor(float32_floor(expected_static(params)))
        np.testing.assert_array_equal(_limits(bmc), static)      # Ctrl-C: the static split
    finally:
        if proc.poll() is None:
            stop_process(proc)
        bmc.stop()
        pdu.stop()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "1 PDU(s), 4 BMC power cap(s)" in text
    held = static.sum()
    assert f"shutdown: static split confirmed by read-back: devices hold {held:.0f} W of " \
        "920 W" in text, text


@pytest.mark.ros
def test_refused_bmc_credentials_are_named_and_the_node_keeps_trying(ros_env, tmp_path):
    pdu = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0)).start()
    bmc = sim_bmc().start()
    map_path = tmp_path / "metering.yaml"
    map_path.write_text(yaml.safe_dump(MONITOR_MAP))
    params = _node_params(pdu.port, [bmc.chassis_url(n) for n in NAMES], str(map_path))
    path = tmp_path / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    env = {**ros_env, "RACKPOWER_BMC_PASSWORD": "wrong"}
    log = tmp_path / "actuator.out"
    with open(log, "w") as out_file:
        proc = subprocess.Popen(
            [str(executable("pdu_actuator")), "--ros-args", "--params-file", str(path)],
            env=env, stdout=out_file, stderr=subprocess.STDOUT, text=True)
    try:
        # the refusal is named in the log; then the node tries again (more requests reach the
        # BMC after the refusal was logged) instead of giving up or exiting
        assert _wait(lambda: "credentials" in log.read_text().lower(), 60.0), log.read_text()
        seen = bmc.requests()
        assert _wait(lambda: bmc.requests() > seen, 60.0), (
            f"no new request after the refusal (still {seen})", log.read_text())
        assert proc.poll() is None, log.read_text()             # still running, retrying
        assert all(bmc.limit_w(n) is None for n in NAMES)      # nothing was written
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            stop_process(proc)
        bmc.stop()
        pdu.stop()
    out = log.read_text()
    assert "bmc:a1" in out and "credentials" in out.lower(), out
    assert "Traceback" not in out, out


def _wait(condition, timeout_s: float) -> bool:
    """Poll `condition` every 50 ms until it holds (True) or `timeout_s` passes (False)."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True
