"""Stale power_samples end in safe mode, with the reason, and fresh ones bring the requested
mode back.

The actuator and `current_sensor` run as their own processes, the sensor board is the emulator
on a real pty, the PDUs are simulated Modbus TCP servers, and this process plays the predictor
(forecasts only) and listens. Cases: `current_sensor` killed and restarted, the board stalled
(port open, nothing arrives), and, with this process publishing the samples instead, a board
clock that stops advancing and a stream of NaN.
"""
from __future__ import annotations

import re
import subprocess
import time

import numpy as np
import pytest
from helpers.rack import (
    NAMES, Rack, actuator_params, expected_static, free_port, pdu_server, stamp)
from helpers.sensor import CHANNELS, SCALE, sensor_params_file

from rackpower_nodes.core.frame_codec import FrameLayout
from rackpower_nodes.tools.launch_env import executable, stop_process
from rackpower_nodes.sim.sensor_board import SensorBoardEmulator, constant_source

pytestmark = pytest.mark.ros

NS = "/rack_ss"
CURRENTS_A = np.array([0.6, 0.5, 0.45, 0.35] + [0.0] * (CHANNELS - 4))   # 138 .. 80.5 W
SAMPLES_STALE_S = 0.5


class _StandIn(Rack):
    """The predictor's stand-in; also the sensor's when `sampling`, with a board clock that
    can stop (`frozen_ns`) and values that can all be NaN."""

    def __init__(self, sampling: bool):
        self.sampling, self.frozen_ns, self.nan = sampling, None, False
        super().__init__(NS)
        self.measured = CURRENTS_A[:4] * 230.0

    def _publish_samples(self) -> None:
        from rackpower.msg import PowerSamples
        from rackpower_nodes.nodes.common import float32_array

        if not self.sampling:
            return
        values = np.full(len(NAMES), np.nan) if self.nan else self.measured
        msg = PowerSamples(channel_ids=NAMES, sample_count=1, sample_period_s=0.05,
                           mean_power_w=float32_array(values),
                           peak_power_w=float32_array(values))
        ns = time.time_ns() if self.frozen_ns is None else self.frozen_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, 10**9)
        self.samples_pub.publish(msg)

    def first_safe_after(self, t_unix: float, words: str):
        """The first allocation stamped after `t_unix` in safe mode whose reason has `words`."""
        ok = self.run_until(lambda m: m.mode == "safe" and words in m.mode_reason, 15.0)
        assert ok, [(m.mode, m.mode_reason) for m in self.allocations[-3:]]
        return next(m for m in list(self.allocations)
                    if m.mode == "safe" and words in m.mode_reason and stamp(m) > t_unix)


def _start(node: str, tmp_path, env, *args: str) -> subprocess.Popen:
    log = open(tmp_path / f"{node}.log", "a")
    try:
        return subprocess.Popen([str(executable(node)), "--ros-args", "-r", f"__ns:={NS}",
                                 *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _actuator(tmp_path, env, ports) -> tuple[subprocess.Popen, dict]:
    import yaml

    params = actuator_params(ports, forecast_stale_s=1.0)
    params["inputs"]["samples_stale_s"] = SAMPLES_STALE_S
    path = tmp_path / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    return _start("pdu_actuator", tmp_path, env, "--params-file", str(path)), params


def _proactive_and_written(m) -> bool:
    return m.mode == "proactive" and m.pdu_written


def _age(reason: str) -> float:
    return float(re.search(r"power_samples stale: .* for ([0-9.]+) s", reason).group(1))


def _check_blind_allocation(msg, params) -> None:
    """Safe without measurements: the static split, nothing measured, within the budget."""
    static = expected_static(params).astype(np.float32)
    np.testing.assert_allclose(np.array(msg.allocated_w), static, rtol=1e-6)
    assert np.isnan(np.array(msg.measured_w)).all()
    assert float(np.sum(msg.allocated_w)) <= msg.budget_w


def test_killed_or_stalled_sensor_sends_the_actuator_to_safe_and_back(ros_env, tmp_path):
    import rclpy

    ports = [free_port(), free_port()]
    servers = [pdu_server(p).start() for p in ports]
    board = SensorBoardEmulator(FrameLayout(CHANNELS), 1000.0, constant_source(CURRENTS_A),
                                scale_a_per_count=SCALE, link_path=str(tmp_path / "board"),
                                board_clock="wall")
    board.start()
    sensor_file = sensor_params_file(tmp_path, board.port_path, channels__components=NAMES,
                                     channels__board_index=[0, 1, 2, 3])
    procs = []
    try:
        sensor = _start("current_sensor", tmp_path, ros_env, "--params-file", sensor_file)
        actuator, params = _actuator(tmp_path, ros_env, ports)
        procs += [sensor, actuator]
        with rclpy.init():
            rack = _StandIn(sampling=False)
            try:
                assert rack.run_until(_proactive_and_written, 40.0), "never came up"
                # current_sensor killed: no batch arrives any more
                sensor.kill()
                sensor.wait(timeout=10)
                killed = time.time()
                first = rack.first_safe_after(killed, "power_samples stale: no batch received")
                print(f"current_sensor killed -> safe after {(stamp(first) - killed) * 1e3:.0f}"
                      f" ms ({first.mode_reason}; deadline {SAMPLES_STALE_S} s)")
                assert _age(first.mode_reason) >= SAMPLES_STALE_S - 0.005   # not before it
                _check_blind_allocation(first, params)
                # ... restarted: back in the requested mode
                sensor = _start("current_sensor", tmp_path, ros_env, "--params-file",
                                sensor_file)
                procs.append(sensor)
                assert rack.run_until(_proactive_and_written, 40.0), \
                    [(m.mode, m.mode_reason) for m in rack.allocations[-3:]]
                # the board hangs with the port open: the same, and back when it resumes
                stalled = time.time()
                board.stall(3.0)
                first = rack.first_safe_after(stalled, "power_samples stale")
                print(f"board stalled -> safe after {(stamp(first) - stalled) * 1e3:.0f} ms "
                      f"({first.mode_reason})")
                assert rack.run_until(_proactive_and_written, 40.0)
            finally:
                rack.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_process(proc)
        board.stop()
        for s in servers:
            s.stop()
    log = (tmp_path / "pdu_actuator.log").read_text()
    assert "Traceback" not in log, log


def test_a_stuck_board_clock_or_all_nan_samples_count_as_stale(ros_env, tmp_path):
    import rclpy

    ports = [free_port(), free_port()]
    servers = [pdu_server(p).start() for p in ports]
    actuator = None
    try:
        actuator, params = _actuator(tmp_path, ros_env, ports)
        with rclpy.init():
            rack = _StandIn(sampling=True)
            try:
                assert rack.run_until(_proactive_and_written, 40.0), "never came up"
                # messages keep arriving, but header.stamp stops advancing
                stuck = time.time()
                rack.frozen_ns = time.time_ns()
                first = rack.first_safe_after(stuck, "header.stamp not advancing")
                assert _age(first.mode_reason) >= SAMPLES_STALE_S - 0.005
                _check_blind_allocation(first, params)
                rack.frozen_ns = None
                assert rack.run_until(lambda m: m.mode == "proactive", 15.0)
                # messages with advancing stamps, but nothing measured in them
                nan = time.time()
                rack.nan = True
                first = rack.first_safe_after(nan, "every value NaN")
                _check_blind_allocation(first, params)
                rack.nan = False
                assert rack.run_until(lambda m: m.mode == "proactive", 15.0)
                assert "power_samples" not in rack.allocations[-1].mode_reason
            finally:
                rack.close()
    finally:
        if actuator is not None and actuator.poll() is None:
            stop_process(actuator)
        for s in servers:
            s.stop()
