"""The `current_sensor` executable against the sensor-board emulator on a real pty, over DDS.

The emulator runs in this process (so the test can pull its cable), the node runs as its own
process from `lib/rackpower/current_sensor`, and this process subscribes like any consumer.
"""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from helpers.graph import spin_until
from helpers.sensor import BOARD_INDEX, CHANNELS, COMPONENTS, SCALE, sensor_params_file

from rackpower_nodes.core.frame_codec import FrameLayout
from rackpower_nodes.nodes.current_sensor import read_interval_s
from rackpower_nodes.tools.launch_env import executable, stop_process
from rackpower_nodes.sim.sensor_board import SensorBoardEmulator, constant_source

pytestmark = pytest.mark.ros

CURRENTS_A = np.round(np.linspace(0.5, 8.0, CHANNELS), 3)


class _Collector:
    def __init__(self, namespace: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import PowerSamples
        from rackpower_nodes.nodes.current_sensor import samples_qos

        self.node = rclpy.create_node("test_collector", namespace=namespace)
        self.samples: list = []
        self.diagnostics: list = []
        self.node.create_subscription(PowerSamples, "power_samples",
                                      lambda m: self.samples.append((time.monotonic(), m)),
                                      samples_qos(0.25))
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda m: self.diagnostics.append((time.monotonic(), m)), 10)

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.node, predicate, timeout_s)

    def last_diag(self) -> dict[str, str]:
        _, msg = self.diagnostics[-1]
        status = msg.status[0]
        values = {kv.key: kv.value for kv in status.values}
        values["_level"] = int.from_bytes(status.level, "little")
        return values


@pytest.fixture
def board(tmp_path):
    emu = SensorBoardEmulator(FrameLayout(CHANNELS), 1000.0, constant_source(CURRENTS_A),
                              scale_a_per_count=SCALE, link_path=str(tmp_path / "board"),
                              board_clock="wall")
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def sensor_node(ros_env, tmp_path, board):
    log = open(tmp_path / "current_sensor.log", "w")
    proc = subprocess.Popen(
        [str(executable("current_sensor")), "--ros-args", "-r", "__ns:=/rack_t",
         "--params-file", sensor_params_file(tmp_path, board.port_path)],
        env=ros_env, stdout=log, stderr=subprocess.STDOUT)
    yield proc
    stop_process(proc)
    log.close()


@pytest.fixture
def collector(ros_env):
    import rclpy

    with rclpy.init():
        col = _Collector("/rack_t")
        yield col
        col.node.destroy_node()


def test_publishes_the_board_currents_as_amperes_and_watts(board, sensor_node, collector):
    assert collector.spin_until(lambda: len(collector.samples) >= 40, 30), "no batches arrived"
    msgs = [m for _, m in collector.samples[5:]]
    expected_a = CURRENTS_A[BOARD_INDEX]
    for msg in msgs:
        assert list(msg.channel_ids) == COMPONENTS
        assert msg.sample_count == 50
        assert msg.sample_period_s == pytest.approx(0.001, rel=1e-3)
        current = np.asarray(msg.current_a).reshape(len(COMPONENTS), msg.sample_count)
        np.testing.assert_allclose(current, np.repeat(expected_a[:, None], 50, 1), atol=SCALE)
        np.testing.assert_allclose(msg.mean_power_w, expected_a * 230.0, atol=SCALE * 230.0)
        assert msg.total_power_w == pytest.approx(float(np.sum(msg.mean_power_w)), rel=1e-5)
        assert msg.frames_lost == 0
    starts = [m.first_sequence for m in msgs]
    assert all(b - a == 50 for a, b in zip(starts, starts[1:])), "batches do not join up"
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in msgs]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert abs(stamps[-1] - time.time()) < 5.0   # board time mapped onto the ROS clock


def test_survives_unplug_and_resumes_after_replug(board, sensor_node, collector):
    assert collector.spin_until(lambda: len(collector.samples) >= 10, 30)
    board.unplug()
    t_unplug = time.monotonic()
    assert collector.spin_until(
        lambda: collector.diagnostics and collector.diagnostics[-1][0] > t_unplug + 0.2
        and collector.last_diag()["port_state"] == "disconnected", 30.0), "outage not reported"
    down = collector.last_diag()
    assert down["_level"] == 2      # ERROR
    time.sleep(1.0)
    board.replug()
    wall_replug = time.time()
    resumed = collector.spin_until(
        lambda: collector.samples[-1][1].first_board_time_us > wall_replug * 1e6, 30.0)
    assert resumed, "no batch after the port came back"
    assert sensor_node.poll() is None, "node died"
    assert collector.spin_until(lambda: collector.last_diag()["port_state"] == "open"
                                and int(collector.last_diag()["reconnects"]) >= 1, 30.0)
    assert int(collector.last_diag()["frames_lost"]) >= board.stats.frames_lost_unplugged * 0.9
    assert sum(m.frames_lost for _, m in collector.samples) > 0, "loss not reported in batches"


@pytest.mark.parametrize("override, key", [
    ({"serial__port": ""}, "serial.port"),
    ({"channels__board_index": [3, 0, 70]}, "channels.board_index[2]"),
    ({"channels__scale_a_per_count": [0.0]}, "channels.scale_a_per_count"),
    ({"board__sample_format": "float"}, "board.sample_format"),
])
def test_malformed_config_fails_at_start_naming_the_key(ros_env, tmp_path, override, key):
    params = sensor_params_file(tmp_path, "/dev/does-not-matter", **override)
    result = subprocess.run(
        [str(executable("current_sensor")), "--ros-args", "--params-file", params],
        env=ros_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert key in result.stderr, result.stderr


def test_shipped_config_applies_in_any_rack_namespace(ros_env, tmp_path):
    import rclpy

    from rackpower_nodes.core.sensor_config import load_sensor_config_yaml
    from rackpower_nodes.tools.launch_env import share_file

    shipped = share_file("config", "rack.yaml")
    expected = load_sensor_config_yaml(shipped)
    assert len(expected.channels) == 16
    missing_port = str(tmp_path / "no-board-here")
    proc = subprocess.Popen(
        [str(executable("current_sensor")), "--ros-args", "-r", "__ns:=/rack_07",
         "--params-file", str(shipped), "-p", f"serial.port:={missing_port}"],
        env=ros_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with rclpy.init():
            col = _Collector("/rack_07")
            assert col.spin_until(lambda: bool(col.diagnostics), 20), "no diagnostics"
            status = col.diagnostics[-1][1].status[0]
            values = col.last_diag()
            col.node.destroy_node()
    finally:
        stop_process(proc)
    assert status.name == "/rack_07/current_sensor: sensor board"
    assert values["port"] == missing_port
    assert values["port_state"] == "disconnected" and values["_level"] == 2
    assert float(values["expected_frame_rate_hz"]) == expected.frame_rate_hz


def test_reads_are_paced_by_a_fifth_of_the_batch_period_at_most_20_ms():
    assert read_interval_s(10.0) == pytest.approx(0.020)    # the rack's 10 Hz batches
    assert read_interval_s(20.0) == pytest.approx(0.010)
    assert read_interval_s(200.0) == pytest.approx(0.001)
    assert read_interval_s(1.0) == pytest.approx(0.020)
