"""Waveforms for the sensor-board emulator: per-channel currents (A) as functions of time (s).

A `Source` maps (n,) float64 seconds to (n, channels) amperes; `constant_source`,
`sine_source` and `steps_source` make the ones the ``rackpower-board-sim`` command offers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Source = Callable[[np.ndarray], np.ndarray]


def _channel_levels(channels: int, base_a: float) -> np.ndarray:
    """Per-channel levels from ``base_a`` (channel 0) rising linearly towards 2 x base_a, A."""
    return base_a * (1.0 + np.arange(channels) / channels)


def constant_source(values: Sequence[float]) -> Source:
    """Constant currents, one value in A per channel."""
    levels = np.asarray(values, dtype=np.float64).reshape(-1)
    return lambda t_s: np.broadcast_to(levels, (len(t_s), levels.size)).copy()


def sine_source(channels: int, base_a: float = 2.0, amplitude_a: float = 0.5,
                period_s: float = 1.0) -> Source:
    """Sines around per-channel levels (see :func:`_channel_levels`); channel c lags by
    c/channels of a period. Amplitude in A, period in s."""
    levels = _channel_levels(channels, base_a)
    phases = 2.0 * np.pi * np.arange(channels) / channels

    def source(t_s: np.ndarray) -> np.ndarray:
        angle = 2.0 * np.pi * np.asarray(t_s)[:, None] / period_s - phases
        return levels + amplitude_a * np.sin(angle)
    return source


def steps_source(channels: int, base_a: float = 2.0, step_a: float = 1.0,
                 period_s: float = 1.0) -> Source:
    """Square waves: per-channel level, plus ``step_a`` A during the second half of each
    ``period_s`` s period; channel c is shifted by c/channels of a period."""
    levels = _channel_levels(channels, base_a)
    shifts = np.arange(channels) / channels

    def source(t_s: np.ndarray) -> np.ndarray:
        phase = (np.asarray(t_s)[:, None] / period_s + shifts) % 1.0
        return levels + step_a * (phase >= 0.5)
    return source
