"""Convert raw ADC counts to amperes, volts and watts per component.

Blocks of frames arrive as ``(n, board_channels)`` integer arrays (one row per frame). Outputs
are channel-major float32: ``(n_components, n)``. Everything is vectorised with fancy indexing;
arithmetic is done in float64 so int32 extremes keep their precision until the final cast.
"""

from __future__ import annotations

import logging

import numpy as np

from rackpower_nodes.core.sensor_config import SensorConfig

__all__ = ["ChannelConverter", "VOLTAGE_SOURCES"]

_LOG = logging.getLogger(__name__)

#: Possible values of :attr:`ChannelConverter.voltage_source`.
VOLTAGE_SOURCES = ("nominal", "measured", "fallback")


class ChannelConverter:
    """Per-component conversion of a sensor configuration.

    ``voltage_source`` tells where the last :meth:`voltages_v` result came from: "nominal"
    (nominal mode), "measured" (measured mode, plausible for every component) or "fallback"
    (measured mode, but the block was empty or the measured voltage was implausible for at
    least one component, which then got its nominal voltage). ``measured_voltage_v`` is the
    last measured bus voltage in V (None before the first non-empty block or in nominal mode).
    """

    def __init__(self, config: SensorConfig):
        chans = config.channels
        self.board_channels = config.board_channels
        self.components = config.components
        self._index = np.array([c.board_index for c in chans], dtype=np.intp)
        self._scale = np.array([c.scale_a_per_count for c in chans], dtype=np.float64)[:, None]
        self._offset = np.array([c.offset_counts for c in chans], dtype=np.float64)[:, None]
        self._nominal = np.array([c.nominal_voltage_v for c in chans], dtype=np.float32)
        self._measured_mode = config.voltage_mode == "measured"
        self._v_index = config.voltage_board_index
        self._v_scale = config.voltage_scale_v_per_count
        self.voltage_source = "measured" if self._measured_mode else "nominal"
        self.measured_voltage_v: float | None = None

    def _check_samples(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples)
        if samples.ndim != 2 or samples.shape[1] != self.board_channels:
            raise ValueError(f"samples shape {samples.shape}: expected (n, "
                             f"{self.board_channels}) (frames, board channels)")
        return samples

    def currents_a(self, samples: np.ndarray) -> np.ndarray:
        """Currents in A, ``(n_components, n)`` float32: ``(counts - offset) * scale``.

        :param samples: raw counts, ``(n, board_channels)`` integers.
        :raises ValueError: on a wrong shape (the message names it).
        """
        samples = self._check_samples(samples)
        counts = samples[:, self._index].T.astype(np.float64)
        return ((counts - self._offset) * self._scale).astype(np.float32)

    def voltages_v(self, samples: np.ndarray) -> np.ndarray:
        """Bus voltage in V per component for this block, ``(n_components,)`` float32.

        Nominal mode: the nominal voltages. Measured mode: mean of the voltage channel over
        the block times ``voltage.scale_v_per_count``; a component falls back to its nominal
        voltage when the block is empty or the measurement is <= 0 V, > 2x nominal or not finite.
        """
        samples = self._check_samples(samples)
        if not self._measured_mode:
            self.voltage_source = "nominal"
            return self._nominal.copy()
        if samples.shape[0] == 0:
            self.voltage_source = "fallback"
            return self._nominal.copy()
        measured = float(samples[:, self._v_index].astype(np.float64).mean()) * self._v_scale
        self.measured_voltage_v = measured
        plausible = np.isfinite(measured) & (measured > 0) & (measured <= 2.0 * self._nominal)
        if plausible.all():
            self.voltage_source = "measured"
        else:
            if self.voltage_source != "fallback":
                _LOG.warning("measured bus voltage %.1f V implausible; using nominal", measured)
            self.voltage_source = "fallback"
        return np.where(plausible, np.float32(measured), self._nominal).astype(np.float32)

    @staticmethod
    def power_w(currents_a: np.ndarray, voltages_v: np.ndarray) -> np.ndarray:
        """Instantaneous power in W per sample, ``(n_components, n)`` float32.

        This is *apparent* power ``I * V`` (VA): the power factor is assumed to be 1.

        :param currents_a: ``(n_components, n)`` currents in A.
        :param voltages_v: ``(n_components,)`` voltages in V.
        :raises ValueError: when the shapes do not match (the message names both).
        """
        currents_a, voltages_v = np.asarray(currents_a), np.asarray(voltages_v)
        if currents_a.ndim != 2 or voltages_v.shape != (currents_a.shape[0],):
            raise ValueError(f"currents shape {currents_a.shape}, voltages shape "
                             f"{voltages_v.shape}: expected (k, n) and (k,)")
        power = currents_a.astype(np.float64) * voltages_v.astype(np.float64)[:, None]
        return power.astype(np.float32)
