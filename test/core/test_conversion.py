"""Tests of counts → amperes → watts conversion."""

import re

import numpy as np
import pytest

from rackpower_nodes.core.conversion import ChannelConverter
from rackpower_nodes.core.sensor_config import sensor_config_from_params


def make_config(**overrides):
    values = {
        "serial.port": "loop://",
        "board.channels": 4,
        "channels.components": ["srv01", "tor-a"],
        "channels.board_index": [2, 0],
        "channels.scale_a_per_count": [0.01, 0.5],
        "channels.offset_counts": [10.0, -4.0],
        "voltage.nominal_v": [230.0, 48.0],
    }
    values.update(overrides)
    return sensor_config_from_params(values)


def test_currents_select_offset_and_scale_channel_major():
    conv = ChannelConverter(make_config())
    samples = np.array([[1, 99, 110, 7], [-4, 99, 10, 7], [6, 0, -90, 0]], dtype=np.int16)
    amps = conv.currents_a(samples)
    assert amps.dtype == np.float32 and amps.shape == (2, 3)
    np.testing.assert_allclose(amps[0], [1.0, 0.0, -1.0], rtol=1e-6)  # (c - 10) * 0.01
    np.testing.assert_allclose(amps[1], [2.5, 0.0, 5.0], rtol=1e-6)  # (c + 4) * 0.5


@pytest.mark.parametrize("fmt, dtype", [("int16", np.int16), ("int32", np.int32)])
def test_extreme_counts(fmt, dtype):
    conv = ChannelConverter(make_config(**{
        "board.sample_format": fmt, "channels.offset_counts": [0.0],
        "channels.scale_a_per_count": [1e-3]}))
    info = np.iinfo(dtype)
    samples = np.zeros((2, 4), dtype=dtype)
    samples[:, 2] = [info.min, info.max]
    samples[:, 0] = [info.max, info.min]
    amps = conv.currents_a(samples)
    assert np.isfinite(amps).all()
    np.testing.assert_allclose(amps[0], [info.min * 1e-3, info.max * 1e-3], rtol=1e-6)
    np.testing.assert_allclose(amps[1], [info.max * 1e-3, info.min * 1e-3], rtol=1e-6)


def test_int32_offset_keeps_precision():
    """A large count minus a large offset must not lose the small difference."""
    conv = ChannelConverter(make_config(**{
        "channels.offset_counts": [2_000_000_000.0], "channels.scale_a_per_count": [1.0]}))
    samples = np.full((1, 4), 2_000_000_003, dtype=np.int32)
    np.testing.assert_array_equal(conv.currents_a(samples), [[3.0], [3.0]])


def test_empty_block():
    conv = ChannelConverter(make_config())
    assert conv.currents_a(np.zeros((0, 4), dtype=np.int16)).shape == (2, 0)
    assert conv.power_w(np.zeros((2, 0), np.float32), np.ones(2, np.float32)).shape == (2, 0)


@pytest.mark.parametrize("shape", [(3,), (3, 5), (2, 3, 4)])
def test_wrong_sample_shape_names_it(shape):
    conv = ChannelConverter(make_config())
    expected = re.escape(f"samples shape {shape}: expected (n, 4)")
    with pytest.raises(ValueError, match=expected):
        conv.currents_a(np.zeros(shape, dtype=np.int16))
    with pytest.raises(ValueError, match="samples shape"):
        conv.voltages_v(np.zeros(shape, dtype=np.int16))


def test_nominal_voltages():
    conv = ChannelConverter(make_config())
    volts = conv.voltages_v(np.full((3, 4), 1000, dtype=np.int16))
    assert volts.dtype == np.float32 and volts.tolist() == [230.0, 48.0]
    assert conv.voltage_source == "nominal"


def measured_converter(nominal=(230.0,)):
    return ChannelConverter(make_config(**{
        "voltage.mode": "measured", "voltage.board_index": 3, "voltage.scale_v_per_count": 0.1,
        "voltage.nominal_v": list(nominal)}))


def test_measured_voltage_is_block_mean_times_scale():
    conv = measured_converter()
    samples = np.zeros((4, 4), dtype=np.int16)
    samples[:, 3] = [2280, 2290, 2310, 2320]
    volts = conv.voltages_v(samples)
    np.testing.assert_allclose(volts, [230.0, 230.0], rtol=1e-6)
    assert conv.voltage_source == "measured" and conv.measured_voltage_v == pytest.approx(230.0)


@pytest.mark.parametrize("counts", [0, -2300, 4601, 30000])
def test_implausible_measurement_falls_back_to_nominal(counts):
    conv = measured_converter()
    samples = np.full((3, 4), counts, dtype=np.int16)
    assert conv.voltages_v(samples).tolist() == [230.0, 230.0]
    assert conv.voltage_source == "fallback"
    samples[:, 3] = 2400  # plausible again
    np.testing.assert_allclose(conv.voltages_v(samples), [240.0, 240.0], rtol=1e-6)
    assert conv.voltage_source == "measured"


def test_empty_block_falls_back_and_fallback_is_per_component():
    conv = measured_converter()
    assert conv.voltages_v(np.zeros((0, 4), dtype=np.int16)).tolist() == [230.0, 230.0]
    assert conv.voltage_source == "fallback"
    conv = measured_converter(nominal=(230.0, 48.0))
    samples = np.full((2, 4), 2300, dtype=np.int16)  # 230 V: > 2 x 48 V for tor-a
    np.testing.assert_allclose(conv.voltages_v(samples), [230.0, 48.0], rtol=1e-6)
    assert conv.voltage_source == "fallback"


def test_power_is_current_times_voltage():
    currents = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 4.0]], dtype=np.float32)
    power = ChannelConverter.power_w(currents, np.array([230.0, 48.0], dtype=np.float32))
    assert power.dtype == np.float32
    np.testing.assert_allclose(power, [[230.0, -460.0, 115.0], [0.0, 144.0, 192.0]], rtol=1e-6)


def test_end_to_end_block():
    conv = ChannelConverter(make_config())
    samples = np.array([[6, 0, 210, 0], [-4, 0, 110, 0]], dtype=np.int32)
    power = conv.power_w(conv.currents_a(samples), conv.voltages_v(samples))
    np.testing.assert_allclose(power, [[460.0, 230.0], [240.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize("currents_shape, volts_shape", [((2, 3), (3,)), ((3,), (3,)),
                                                         ((2, 3), (2, 1))])
def test_power_shape_mismatch_names_shapes(currents_shape, volts_shape):
    with pytest.raises(ValueError, match=r"currents shape .* voltages shape"):
        ChannelConverter.power_w(np.zeros(currents_shape), np.zeros(volts_shape))
