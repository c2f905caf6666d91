"""Parameter schema and validated configuration of the ``current_sensor`` node.

Plain data, no rclpy: the node declares one ROS parameter per :data:`SENSOR_PARAMETERS` entry
and passes the values to :func:`sensor_config_from_params`. Validation collects *all* problems
and raises one :class:`ConfigError` whose message joins them with ``"; "``; each part names the
key, the offending value and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, check_ids, flatten_parameters, load_config_yaml, read_parameters)

__all__ = [
    "ChannelSpec", "ConfigError", "ParamSpec", "SENSOR_PARAMETERS", "SensorConfig",
    "flatten_parameters", "load_sensor_config_yaml", "sensor_config_from_params",
]

PORT_MISSING = ("serial.port: missing; expected a device path (/dev/ttyACM0) or a pyserial URL "
                "(socket://host:port, loop://)")


_CHOICES = {"board.sample_format": ("int16", "int32"), "voltage.mode": ("nominal", "measured")}
_POSITIVE = frozenset({"serial.read_timeout_s", "voltage.scale_v_per_count", "publish.deadline_s",
                       "reconnect.initial_backoff_s", "reconnect.max_backoff_s"})


def _p(name, default, type_, description, range_=None, read_only=True) -> ParamSpec:
    return ParamSpec(name, default, type_, description, read_only, range_,
                     positive=name in _POSITIVE, choices=_CHOICES.get(name))


SENSOR_PARAMETERS: tuple[ParamSpec, ...] = (
    _p("serial.port", "", "string",
       "Serial device path (/dev/ttyACM0) or pyserial URL (socket://host:port, loop://); "
       "required"),
    _p("serial.baudrate", 3000000, "integer",
       "UART baud rate in bit/s (ignored by USB CDC and pty devices)", (1, 2**31 - 1)),
    _p("serial.read_timeout_s", 0.005, "double", "Serial read timeout in s, 0 < x <= 1",
       (0.0, 1.0)),
    _p("board.channels", 64, "integer", "Number of ADC channels per board frame", (1, 1024)),
    _p("board.sample_format", "int16", "string", "Sample encoding in a frame: int16 or int32"),
    _p("board.frame_rate_hz", 1000.0, "double", "Expected board frame rate in Hz",
       (1.0, 100000.0)),
    _p("channels.components", [], "string_array",
       "Component id per mapped channel (e.g. srv01, tor-a); unique, [A-Za-z0-9_.-]+"),
    _p("channels.board_index", [], "integer_array",
       "Board channel (0..board.channels-1) per component; unique"),
    _p("channels.scale_a_per_count", [], "double_array",
       "Current scale in A per ADC count; one value for all or one per component; non-zero"),
    _p("channels.offset_counts", [], "double_array",
       "Zero offset in ADC counts; empty (all 0), one value for all, or one per component"),
    _p("voltage.mode", "nominal", "string",
       "Bus voltage source: nominal (voltage.nominal_v) or measured (voltage.board_index)"),
    _p("voltage.nominal_v", [230.0], "double_array",
       "Nominal bus voltage in V, one for all or one per component, 0 < V <= 1000; "
       "fallback in measured mode"),
    _p("voltage.board_index", -1, "integer",
       "Board channel carrying the bus voltage in measured mode (-1 = none)", (-1, 1023)),
    _p("voltage.scale_v_per_count", 0.1, "double", "Bus voltage scale in V per ADC count, > 0"),
    _p("publish.rate_hz", 20.0, "double", "Batch publish rate in Hz", (1.0, 200.0)),
    _p("publish.deadline_s", 0.25, "double", "QoS deadline of the samples topic in s, > 0"),
    _p("buffer.seconds", 10.0, "double", "Ring buffer length in s", (0.1, 600.0)),
    _p("reconnect.initial_backoff_s", 0.05, "double",
       "First reconnect delay in s, 0 < x <= reconnect.max_backoff_s", (0.0, 60.0)),
    _p("reconnect.max_backoff_s", 1.0, "double", "Largest reconnect delay in s, <= 60",
       (0.0, 60.0)),
    _p("realtime.sched_priority", 0, "integer",
       "SCHED_FIFO priority of the reader thread, 1..99; 0 = normal scheduling", (0, 99)),
    _p("realtime.cpu_affinity", [], "integer_array",
       "CPU ids the reader thread is pinned to, each >= 0; empty = unchanged"),
    _p("realtime.lock_memory", False, "bool", "Lock process memory with mlockall"),
    _p("frame_id", "rack", "string", "header.frame_id of published messages"),
)



@dataclass(frozen=True)
class ChannelSpec:
    """One mapped component: board channel, A/count scale, offset in counts, nominal V."""

    component: str
    board_index: int
    scale_a_per_count: float
    offset_counts: float
    nominal_voltage_v: float


@dataclass(frozen=True)
class SensorConfig:
    """Validated ``current_sensor`` configuration (times in s, rates in Hz)."""

    port: str
    baudrate: int
    read_timeout_s: float
    board_channels: int
    sample_format: str
    frame_rate_hz: float
    channels: tuple[ChannelSpec, ...]
    voltage_mode: str
    voltage_board_index: int
    voltage_scale_v_per_count: float
    publish_rate_hz: float
    deadline_s: float
    buffer_seconds: float
    reconnect_initial_s: float
    reconnect_max_s: float
    sched_priority: int
    cpu_affinity: tuple[int, ...]
    lock_memory: bool
    frame_id: str

    @property
    def components(self) -> tuple[str, ...]:
        """Component ids in channel order."""
        return tuple(ch.component for ch in self.channels)


def _per_component(v: dict[str, Any], key: str, n: int, allowed: tuple[int, ...],
                   errors: list[str]) -> tuple[float, ...] | None:
    """Broadcast a length-1 (or empty, if allowed) array to ``n`` components."""
    arr = v.get(key)
    if arr is None:
        return None
    lengths = sorted({*allowed, n})
    if len(arr) not in lengths:
        errors.append(f"{key} = {list(arr)!r}: has {len(arr)} values, expected "
                      f"{' or '.join(map(str, lengths))} (channels.components has {n})")
        return None
    if len(arr) == 0:
        return (0.0,) * n
    return tuple(arr) * n if len(arr) == 1 else tuple(arr)


def _check_components(comps: tuple[str, ...], errors: list[str]) -> None:
    if not comps:
        errors.append("channels.components = []: expected at least one component id")
    check_ids("channels.components", comps, errors)


def _check_board_index(idx: tuple[int, ...], n: int, nch: int | None, errors: list[str]) -> None:
    if len(idx) != n:
        errors.append(f"channels.board_index = {list(idx)!r}: has {len(idx)} values, "
                      f"expected {n} (one per channels.components)")
    seen: set[int] = set()
    for i, b in enumerate(idx):
        if nch is not None and not 0 <= b < nch:
            errors.append(f"channels.board_index[{i}] = {b}: board.channels is {nch}, "
                          f"expected 0..{nch - 1}")
        elif b in seen:
            errors.append(f"channels.board_index[{i}] = {b}: duplicate, expected unique channels")
        seen.add(b)


def _check_elements(key: str, arr: tuple[float, ...] | None, ok, expected: str,
                    errors: list[str]) -> None:
    for i, x in enumerate(arr or ()):
        if not (math.isfinite(x) and ok(x)):
            errors.append(f"{key}[{i}] = {x!r}: expected {expected}")


def _check_voltage(v: dict[str, Any], errors: list[str]) -> None:
    if v.get("voltage.mode") != "measured" or "voltage.board_index" not in v:
        return
    vb, nch = v["voltage.board_index"], v.get("board.channels")
    if nch is not None and not 0 <= vb < nch:
        errors.append(f"voltage.board_index = {vb}: voltage.mode is measured and board.channels "
                      f"is {nch}, expected 0..{nch - 1}")
    elif vb in v.get("channels.board_index", ()):
        errors.append(f"voltage.board_index = {vb}: also a current channel in "
                      f"channels.board_index, expected a different board channel")


def _check_cross(v: dict[str, Any], errors: list[str]) -> None:
    if v.get("serial.port") == "":
        errors.append(PORT_MISSING)
    init, most = v.get("reconnect.initial_backoff_s"), v.get("reconnect.max_backoff_s")
    if init is not None and most is not None and init > most:
        errors.append(f"reconnect.initial_backoff_s = {init!r}: expected <= "
                      f"reconnect.max_backoff_s ({most!r})")
    _check_elements("realtime.cpu_affinity", v.get("realtime.cpu_affinity"),
                    lambda x: x >= 0, "a CPU id >= 0", errors)
    _check_voltage(v, errors)


def _build_channels(v: dict[str, Any], errors: list[str]) -> tuple[ChannelSpec, ...]:
    comps = v.get("channels.components", ())
    n = len(comps)
    _check_components(comps, errors)
    if "channels.board_index" in v:
        _check_board_index(v["channels.board_index"], n, v.get("board.channels"), errors)
    scale = _per_component(v, "channels.scale_a_per_count", n, (1,), errors)
    offset = _per_component(v, "channels.offset_counts", n, (0, 1), errors)
    nominal = _per_component(v, "voltage.nominal_v", n, (1,), errors)
    _check_elements("channels.scale_a_per_count", v.get("channels.scale_a_per_count"),
                    lambda x: x != 0.0, "a finite, non-zero A/count", errors)
    _check_elements("channels.offset_counts", v.get("channels.offset_counts"),
                    lambda x: True, "a finite count", errors)
    _check_elements("voltage.nominal_v", v.get("voltage.nominal_v"),
                    lambda x: 0.0 < x <= 1000.0, "0 < V <= 1000", errors)
    if errors or scale is None or offset is None or nominal is None:
        return ()
    return tuple(ChannelSpec(c, b, s, o, u) for c, b, s, o, u in
                 zip(comps, v["channels.board_index"], scale, offset, nominal))


def sensor_config_from_params(values: Mapping[str, Any]) -> SensorConfig:
    """Build a :class:`SensorConfig` from dotted parameter values.

    Missing keys take the schema default; an unknown key is an error naming the close match.
    All problems are collected and raised together as one :class:`ConfigError` (messages
    joined by ``"; "``).
    """
    errors: list[str] = []
    v = read_parameters(SENSOR_PARAMETERS, values, errors, "current_sensor")
    channels = _build_channels(v, errors)
    _check_cross(v, errors)
    if errors:
        raise ConfigError(errors)
    return SensorConfig(
        port=v["serial.port"], baudrate=v["serial.baudrate"],
        read_timeout_s=v["serial.read_timeout_s"], board_channels=v["board.channels"],
        sample_format=v["board.sample_format"], frame_rate_hz=v["board.frame_rate_hz"],
        channels=channels, voltage_mode=v["voltage.mode"],
        voltage_board_index=v["voltage.board_index"],
        voltage_scale_v_per_count=v["voltage.scale_v_per_count"],
        publish_rate_hz=v["publish.rate_hz"], deadline_s=v["publish.deadline_s"],
        buffer_seconds=v["buffer.seconds"], reconnect_initial_s=v["reconnect.initial_backoff_s"],
        reconnect_max_s=v["reconnect.max_backoff_s"], sched_priority=v["realtime.sched_priority"],
        cpu_affinity=v["realtime.cpu_affinity"], lock_memory=v["realtime.lock_memory"],
        frame_id=v["frame_id"])


def load_sensor_config_yaml(path: str | Path, node_name: str = "current_sensor") -> SensorConfig:
    """Load a ROS parameter YAML file (`{node: {ros__parameters: {...}}}`) into a config."""
    return load_config_yaml(path, node_name, sensor_config_from_params)
