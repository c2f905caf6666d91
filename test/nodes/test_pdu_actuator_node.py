"""The `pdu_actuator` lifecycle node in its own process, driving two simulated PDUs (Modbus).

One run walks through what an operator meets: the node starts before its PDUs answer (it
keeps retrying), comes up, writes allocations that Debian's `mbpoll` reads back from the PDUs,
survives a PDU killed and restarted (safe mode, reported, reconnected, rewritten), falls back
when the forecast stream stops and returns when it resumes, leaves the static split behind on
deactivate, and on Ctrl-C, with no exception.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
import yaml
from helpers.rack import (
    MEASURED, NS, Rack, actuator_params, expected_static, free_port, pdu_server,
    running_actuator, stamp)

from rackpower_nodes.core.pdu_map import load_register_map
from rackpower_nodes.tools.launch_env import executable

pytestmark = pytest.mark.ros

MBPOLL = shutil.which("mbpoll") or "/usr/bin/mbpoll"


def _mbpoll_allocations(port: int, count: int = 2) -> np.ndarray:
    """Outlets 1..count's allocation registers, read by mbpoll (an independent client)."""
    point = load_register_map("rackpower_sim").point("outlet_allocation_w")
    out = subprocess.run(
        [MBPOLL, "-m", "tcp", "-p", str(port), "-a", "1", "-t", "4:float", "-B", "-0",
         "-r", str(point.address), "-c", str(count), "-1", "-o", "2", "127.0.0.1"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    values = {int(a): float(v) for a, v in re.findall(r"^\[(\d+)\]:\s+(\S+)", out.stdout, re.M)}
    return np.array([values[point.address + point.stride * i] for i in range(count)])


def test_actuator_drives_the_pdus_and_survives_faults(ros_env, tmp_path):
    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    ports = [free_port(), free_port()]
    params = actuator_params(ports)
    servers = [pdu_server(p) for p in ports]
    with running_actuator(tmp_path, params, ros_env, servers) as proc:
        with rclpy.init():
            rack = Rack()
            # the PDUs answer only after the node started: it must keep trying
            assert not rack.run_until(lambda m: True, 1.5)
            for s in servers:
                s.start()

            def proactive_and_written(m):
                return m.mode == "proactive" and m.pdu_written

            assert rack.run_until(proactive_and_written, 30.0), "never came up"
            assert rack.run_until(lambda m: False, 1.0) is False   # settle on constant input
            last = rack.allocations[-1]
            alloc = np.array(last.allocated_w, dtype=np.float64)
            assert alloc.sum() <= last.budget_w == pytest.approx(920.0)
            assert np.all(alloc >= MEASURED)             # it covers what is drawn
            # an independent Modbus client reads back what was published (mbpoll prints six
            # significant digits); the PDUs hold exactly the published float32 values
            np.testing.assert_allclose(_mbpoll_allocations(ports[0]), alloc[:2], rtol=1e-5)
            np.testing.assert_allclose(_mbpoll_allocations(ports[1]), alloc[2:], rtol=1e-5)
            np.testing.assert_array_equal(servers[0].model.allocation_w[:2], alloc[:2])
            np.testing.assert_array_equal(servers[1].model.allocation_w[:2], alloc[2:])

            # a PDU killed mid-run: safe mode, reported with the PDU's name
            servers[1].stop()
            assert rack.run_until(lambda m: m.mode == "safe" and "pdu-b" in m.mode_reason,
                                  30.0), [m.mode_reason for m in rack.allocations[-3:]]
            assert rack.run_until(lambda m: rack.diag.get("PDU pdu-b", (0, ""))[0] == 2, 30.0)
            assert "not answering" in rack.diag["PDU pdu-b"][1]
            # ... restarted with its defaults (every outlet at its 2300 W rating): the node
            # reconnects, leaves safe mode and writes the allocations again
            servers[1] = pdu_server(ports[1]).start()
            assert rack.run_until(proactive_and_written, 15.0)
            assert rack.run_until(lambda m: False, 1.0) is False
            alloc = np.array(rack.allocations[-1].allocated_w, dtype=np.float64)
            np.testing.assert_allclose(_mbpoll_allocations(ports[1]), alloc[2:], rtol=1e-5)
            np.testing.assert_array_equal(servers[1].model.allocation_w[:2], alloc[2:])

            # the forecast stream stops: safe mode, saying why (how fast:
            # benchmarks/bench_fallback.py, target 300 ms)
            rack.forecasting = False
            time.sleep(0.15)                 # a forecast being published may still land
            stopped = rack.last_forecast_t
            assert rack.run_until(lambda m: m.mode == "safe", 30.0)
            first_safe = next(m for m in rack.allocations if m.mode == "safe"
                              and stamp(m) > stopped)
            delay = stamp(first_safe) - stopped
            print(f"forecast stream stopped -> safe mode after {delay * 1e3:.0f} ms "
                  f"({first_safe.mode_reason})")
            assert "no forecast received" in first_safe.mode_reason
            rack.forecasting = True
            assert rack.run_until(lambda m: m.mode == "proactive", 30.0)

            # a component drawing above its allocation is corrected and reported
            rack.measured = MEASURED * np.array([1.0, 1.0, 1.6, 1.0])
            assert rack.run_until(lambda m: any(e.channel_id == "b1" for e in rack.errors),
                                  30.0)
            err = next(e for e in rack.errors if e.channel_id == "b1")
            assert err.actual_w == pytest.approx(160.0) and err.action != ""
            rack.measured = MEASURED.copy()

            # deactivate: the static split stays in the PDUs
            cli = rack.node.create_client(ChangeState, f"{NS}/pdu_actuator/change_state")
            assert cli.wait_for_service(timeout_sec=30.0)
            fut = cli.call_async(ChangeState.Request(
                transition=Transition(id=Transition.TRANSITION_DEACTIVATE)))
            end = time.monotonic() + 30.0
            while not fut.done() and time.monotonic() < end:
                time.sleep(0.02)
            assert fut.result() is not None and fut.result().success
            static = expected_static(params).astype(np.float32).astype(np.float64)
            np.testing.assert_allclose(_mbpoll_allocations(ports[0]), static[:2], rtol=1e-5)
            np.testing.assert_allclose(_mbpoll_allocations(ports[1]), static[2:], rtol=1e-5)
            assert static.sum() <= 920.0

            # active again: allocations follow the forecasts, then Ctrl-C leaves the static
            # split behind too
            fut = cli.call_async(ChangeState.Request(
                transition=Transition(id=Transition.TRANSITION_ACTIVATE)))
            end = time.monotonic() + 30.0
            while not fut.done() and time.monotonic() < end:
                time.sleep(0.02)
            assert fut.result() is not None and fut.result().success
            assert rack.run_until(lambda m: m.mode == "proactive"
                                  and not np.allclose(servers[0].model.allocation_w[:2],
                                                      static[:2]), 30.0)
            rack.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        np.testing.assert_allclose(servers[0].model.allocation_w[:2], static[:2], rtol=1e-6)
        np.testing.assert_allclose(servers[1].model.allocation_w[:2], static[2:], rtol=1e-6)


def test_bad_configuration_exits_2_naming_the_key(ros_env, tmp_path):
    params = actuator_params([free_port(), free_port()])
    params["components"]["outlet"] = [1, 1, 1, 2]           # a1 and a2 on one outlet
    params["pdus"]["maps"] = ["rackpower_sim", "no_such_map"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    out = subprocess.run([str(executable("pdu_actuator")), "--ros-args", "--params-file",
                          str(path)], env=ros_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "components.outlet[1]" in out.stderr and "already feeds a1" in out.stderr
    params["components"]["outlet"] = [1, 2, 1, 2]
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    out = subprocess.run([str(executable("pdu_actuator")), "--ros-args", "--params-file",
                          str(path)], env=ros_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "no_such_map" in out.stderr
