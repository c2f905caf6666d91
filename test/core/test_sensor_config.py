"""Tests of the current_sensor parameter schema and config validation."""

import array
import re

import numpy as np
import pytest

from rackpower_nodes.core.sensor_config import (
    SENSOR_PARAMETERS, ConfigError, SensorConfig, flatten_parameters, load_sensor_config_yaml,
    sensor_config_from_params)

ROS_TYPES = {"string", "integer", "double", "bool", "string_array", "integer_array",
             "double_array"}


def valid(**overrides):
    values = {
        "serial.port": "/dev/ttyACM0",
        "channels.components": ["srv01", "srv02", "tor-a"],
        "channels.board_index": [0, 5, 63],
        "channels.scale_a_per_count": [0.01],
    }
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return values


def errors_of(values) -> str:
    with pytest.raises(ConfigError) as info:
        sensor_config_from_params(values)
    return str(info.value)


def test_schema_is_consistent():
    names = [spec.name for spec in SENSOR_PARAMETERS]
    assert len(names) == len(set(names))
    for spec in SENSOR_PARAMETERS:
        assert spec.type in ROS_TYPES, spec.name
        assert spec.description, spec.name
        if spec.type.endswith("_array"):
            assert isinstance(spec.default, list), spec.name
        if spec.range is not None:
            assert spec.range[0] <= spec.default <= spec.range[1], spec.name


def test_minimal_config_takes_defaults_and_broadcasts():
    cfg = sensor_config_from_params(valid())
    assert isinstance(cfg, SensorConfig)
    assert cfg.components == ("srv01", "srv02", "tor-a")
    assert [c.board_index for c in cfg.channels] == [0, 5, 63]
    assert all(c.scale_a_per_count == 0.01 for c in cfg.channels)
    assert all(c.offset_counts == 0.0 and c.nominal_voltage_v == 230.0 for c in cfg.channels)
    assert (cfg.baudrate, cfg.board_channels, cfg.sample_format) == (3000000, 64, "int16")
    assert (cfg.voltage_mode, cfg.publish_rate_hz, cfg.buffer_seconds) == ("nominal", 20.0, 10.0)
    assert cfg.cpu_affinity == () and cfg.lock_memory is False and cfg.frame_id == "rack"
    with pytest.raises(AttributeError):
        cfg.port = "x"


def test_unknown_keys_and_placeholders_are_errors_naming_them():
    text = errors_of(valid(serial__baud_rate=115200, unknown__key=42))
    assert "serial.baud_rate: not a parameter of current_sensor; did you mean " \
        "'serial.baudrate'?" in text
    assert "unknown.key: not a parameter of current_sensor" in text
    assert "use_sim_time" not in text            # rclpy's own parameters are accepted
    sensor_config_from_params(valid(use_sim_time=False))
    text = errors_of(valid(serial__port="FILL_ME: /dev/serial/by-id/..."))
    assert "serial.port = 'FILL_ME: /dev/serial/by-id/...': placeholder not filled in" in text


def test_per_component_arrays_and_ros_array_types():
    cfg = sensor_config_from_params(valid(
        channels__scale_a_per_count=array.array("d", [0.01, 0.02, -0.03]),
        channels__offset_counts=np.array([1.0, 2.0, 3.0]),
        voltage__nominal_v=[230, 120.0, 48.0],
        realtime__cpu_affinity=array.array("q", [2, 3])))
    assert [c.scale_a_per_count for c in cfg.channels] == [0.01, 0.02, -0.03]
    assert [c.offset_counts for c in cfg.channels] == [1.0, 2.0, 3.0]
    assert [c.nominal_voltage_v for c in cfg.channels] == [230.0, 120.0, 48.0]
    assert isinstance(cfg.channels[0].nominal_voltage_v, float)
    assert cfg.cpu_affinity == (2, 3)


def test_missing_port_message():
    msg = errors_of(valid(serial__port=""))
    assert "serial.port: missing; expected a device path (/dev/ttyACM0)" in msg
    assert "socket://host:port, loop://" in msg


def test_board_index_out_of_range_names_index_value_and_range():
    msg = errors_of(valid(channels__board_index=[0, 5, 70]))
    assert "channels.board_index[2] = 70: board.channels is 64, expected 0..63" in msg


@pytest.mark.parametrize("key, value, fragment", [
    ("publish.rate_hz", "fast", "publish.rate_hz = 'fast': expected a number"),
    ("board.channels", 64.0, "board.channels = 64.0: expected an integer"),
    ("realtime.lock_memory", 1, "realtime.lock_memory = 1: expected a bool"),
    ("channels.components", "srv01", "channels.components = 'srv01': expected a list"),
    ("channels.board_index", [0, "5", 63], "channels.board_index[1] = '5': expected an integer"),
    ("serial.baudrate", 0, "serial.baudrate = 0: expected 1.."),
    ("serial.read_timeout_s", 0.0, "serial.read_timeout_s = 0.0: expected > 0"),
    ("serial.read_timeout_s", 1.5, "serial.read_timeout_s = 1.5: expected 0.0..1.0"),
    ("board.channels", 1025, "board.channels = 1025: expected 1..1024"),
    ("board.sample_format", "int8", "board.sample_format = 'int8': expected one of int16, int32"),
    ("voltage.mode", "guess", "voltage.mode = 'guess': expected one of nominal, measured"),
    ("publish.rate_hz", 500.0, "publish.rate_hz = 500.0: expected 1.0..200.0"),
    ("publish.deadline_s", -1.0, "publish.deadline_s = -1.0: expected > 0"),
    ("buffer.seconds", 0.01, "buffer.seconds = 0.01: expected 0.1..600.0"),
    ("buffer.seconds", float("nan"), "buffer.seconds = nan: expected a finite number"),
    ("realtime.sched_priority", 100, "realtime.sched_priority = 100: expected 0..99"),
    ("realtime.cpu_affinity", [1, -2], "realtime.cpu_affinity[1] = -2: expected a CPU id >= 0"),
    ("voltage.scale_v_per_count", 0.0, "voltage.scale_v_per_count = 0.0: expected > 0"),
    ("reconnect.initial_backoff_s", 2.0, "reconnect.initial_backoff_s = 2.0: expected <= "
     "reconnect.max_backoff_s (1.0)"),
    ("reconnect.max_backoff_s", 61.0, "reconnect.max_backoff_s = 61.0: expected 0.0..60.0"),
])
def test_scalar_errors_name_key_value_and_expectation(key, value, fragment):
    assert fragment in errors_of(valid(**{key.replace(".", "__"): value}))


@pytest.mark.parametrize("overrides, fragment", [
    ({"channels__components": []}, "channels.components = []: expected at least one"),
    ({"channels__components": ["a", "b b", "c"]},
     "channels.components[1] = 'b b': expected [A-Za-z0-9_.-]+"),
    ({"channels__components": ["a", "b", "a"]}, "channels.components[2] = 'a': duplicate"),
    ({"channels__board_index": [0, 5]}, "channels.board_index = [0, 5]: has 2 values, expected 3"),
    ({"channels__board_index": [0, 5, 5]}, "channels.board_index[2] = 5: duplicate"),
    ({"channels__board_index": [0, -1, 5]}, "channels.board_index[1] = -1: board.channels is 64"),
    ({"channels__scale_a_per_count": [0.01, 0.02]},
     "channels.scale_a_per_count = [0.01, 0.02]: has 2 values, expected 1 or 3"),
    ({"channels__scale_a_per_count": []}, "channels.scale_a_per_count = []: has 0 values"),
    ({"channels__scale_a_per_count": [0.0]},
     "channels.scale_a_per_count[0] = 0.0: expected a finite, non-zero A/count"),
    ({"channels__offset_counts": [1.0, 2.0]}, "expected 0 or 1 or 3"),
    ({"channels__offset_counts": [float("inf")]}, "channels.offset_counts[0] = inf"),
    ({"voltage__nominal_v": [230.0, 0.0, 230.0]}, "voltage.nominal_v[1] = 0.0: expected 0 < V"),
    ({"voltage__nominal_v": [1000.5]}, "voltage.nominal_v[0] = 1000.5"),
    ({"board__channels": 8}, "channels.board_index[2] = 63: board.channels is 8, expected 0..7"),
])
def test_channel_errors(overrides, fragment):
    assert fragment in errors_of(valid(**overrides))


def test_measured_voltage_requires_a_free_valid_channel():
    msg = errors_of(valid(voltage__mode="measured"))
    assert "voltage.board_index = -1: voltage.mode is measured" in msg
    assert "expected 0..63" in msg
    msg = errors_of(valid(voltage__mode="measured", voltage__board_index=5))
    assert "voltage.board_index = 5: also a current channel" in msg
    cfg = sensor_config_from_params(valid(voltage__mode="measured", voltage__board_index=7))
    assert (cfg.voltage_mode, cfg.voltage_board_index) == ("measured", 7)
    # The index is only checked against channels in measured mode.
    assert sensor_config_from_params(valid()).voltage_board_index == -1


def test_all_errors_are_collected():
    with pytest.raises(ConfigError) as info:
        sensor_config_from_params(valid(serial__port="", publish__rate_hz=0.0, frame_id=3))
    keys = {re.split(r"[ :\[]", e)[0] for e in info.value.errors}
    assert keys == {"serial.port", "publish.rate_hz", "frame_id"}
    assert str(info.value) == "; ".join(info.value.errors)
    assert isinstance(info.value, ValueError)


def test_flatten_parameters():
    tree = {"serial": {"port": "loop://", "baudrate": 9600}, "frame_id": "r",
            "channels": {"components": ["a"]}, "publish.rate_hz": 5.0}
    assert flatten_parameters(tree) == {
        "serial.port": "loop://", "serial.baudrate": 9600, "frame_id": "r",
        "channels.components": ["a"], "publish.rate_hz": 5.0}
    assert flatten_parameters({"a": {"b": {"c": 1}}}, "x") == {"x.a.b.c": 1}
    with pytest.raises(ConfigError, match="expected a mapping"):
        flatten_parameters([1, 2])


RACK_YAML = """\
/**:
  ros__parameters:
    frame_id: rack_a
    publish:
      rate_hz: 10.0
/rack/current_sensor:
  ros__parameters:
    serial:
      port: /dev/ttyACM0
      baudrate: 3000000
    board:
      channels: 16
      sample_format: int32
    channels:
      components: [srv01, srv02, tor-a]
      board_index: [0, 1, 15]
      scale_a_per_count: [0.005, 0.005, 0.002]
      offset_counts: [2048]
    voltage:
      mode: measured
      board_index: 14
      scale_v_per_count: 0.05
    publish.rate_hz: 25.0
    realtime:
      sched_priority: 80
      cpu_affinity: [3]
      lock_memory: true
"""


def test_load_yaml_with_namespace_wildcard_and_mixed_nesting(tmp_path):
    path = tmp_path / "current_sensor.yaml"
    path.write_text(RACK_YAML)
    cfg = load_sensor_config_yaml(path)
    assert cfg.port == "/dev/ttyACM0" and cfg.board_channels == 16
    assert cfg.sample_format == "int32" and cfg.components == ("srv01", "srv02", "tor-a")
    assert [c.scale_a_per_count for c in cfg.channels] == [0.005, 0.005, 0.002]
    assert all(c.offset_counts == 2048.0 for c in cfg.channels)
    assert (cfg.voltage_mode, cfg.voltage_board_index) == ("measured", 14)
    assert cfg.frame_id == "rack_a"  # from /**
    assert cfg.publish_rate_hz == 25.0  # node section overrides /**
    assert (cfg.sched_priority, cfg.cpu_affinity, cfg.lock_memory) == (80, (3,), True)


def test_load_yaml_by_plain_node_name(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("sensor_b:\n  ros__parameters:\n    serial.port: loop://\n    channels: "
                    "{components: [x], board_index: [2], scale_a_per_count: [1.0]}\n")
    assert load_sensor_config_yaml(path, node_name="sensor_b").components == ("x",)
    with pytest.raises(ConfigError, match=r"p\.yaml: no section for node 'current_sensor'"):
        load_sensor_config_yaml(path)


@pytest.mark.parametrize("text, fragment", [
    ("current_sensor: [1, 2\n", "invalid YAML"),
    ("- a\n- b\n", "top level is list, expected a mapping"),
    ("current_sensor:\n  params: {}\n", "has no ros__parameters mapping"),
    ("current_sensor:\n  ros__parameters: 3\n", "has no ros__parameters mapping"),
    ("current_sensor:\n  ros__parameters:\n    serial: {port: ''}\n", "serial.port: missing"),
])
def test_load_yaml_errors_name_file_and_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_sensor_config_yaml(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_sensor_config_yaml(tmp_path / "absent.yaml")
