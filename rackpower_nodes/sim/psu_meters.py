"""The PSUs' own meters (PMBus READ_PIN / READ_POUT as a BMC reports them): one model for the
fast-mode health frames (:func:`rackpower_nodes.sim.faults.frames.psu_meters`, a whole run
at once) and the live simulated BMCs (:class:`LivePsuMeters`, one reading per poll).

What a component's power supplies report: the true wall power in, and out what the load
takes from them: the wall power without a ``psu_efficiency`` fault's extra loss, times the
PSU's efficiency at that load (``PSU_EFFICIENCY``, rated ``PSU_HEADROOM`` x the component's
peak draw), drifting slowly with inlet temperature (an AR(1) of standard deviation
``PSU_DRIFT`` and time constant ``PSU_DRIFT_TAU_S``). Each meter has a fixed gain and offset
error drawn from the component's name (the same hardware every day and in both modes) and a
random error per reading. Readings are refreshed every ``PSU_POLL_S`` s. Powers in W.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["PSU_DRIFT", "PSU_DRIFT_TAU_S", "PSU_EFFICIENCY", "PSU_GAIN_ERR", "PSU_HEADROOM",
           "PSU_LOAD_FRAC", "PSU_OFFSET_W", "PSU_POLL_S", "PSU_READ_NOISE", "LivePsuMeters",
           "drift_series", "meter_errors", "meter_readings", "psu_loss", "psu_output_w",
           "psu_ratings_w"]

#: how often the BMC's PSU readings are refreshed (PMBus poll), s
PSU_POLL_S = 10
#: a generic 80 PLUS Platinum curve (230 V internal: >= 90 / 94 / 91 % at 20 / 50 / 100 %
#: load, lower below 20 %), efficiency against DC load as a fraction of the rating
PSU_LOAD_FRAC = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
PSU_EFFICIENCY = (0.70, 0.82, 0.87, 0.91, 0.94, 0.91)
#: the PSUs are rated at this multiple of the component's peak draw (redundant pairs)
PSU_HEADROOM = 1.25
#: PMBus meters: a fixed gain error per PSU (uniform within +-, fraction), a fixed offset
#: (+- W) and a random error per reading (standard deviation, fraction)
PSU_GAIN_ERR, PSU_OFFSET_W, PSU_READ_NOISE = 0.02, 2.0, 0.01
#: slow drift of the real efficiency with inlet temperature (sd, fraction; time constant s)
PSU_DRIFT, PSU_DRIFT_TAU_S = 0.002, 7200.0
#: seed branches: the readings' generator (with the run's seeds), each meter's hardware
RNG_BRANCH, _HW_BRANCH = 7_000_003, 7_000_019


def psu_ratings_w(config) -> np.ndarray:
    """(components,) the PSU rating the meter model uses per component of a ``RackConfig``:
    ``PSU_HEADROOM`` x its steady draw at full load (GPU boards included), W."""
    peak = []
    for c in config.components:
        w = float(np.asarray(c.model.steady_power_w(np.array([1.0]))).ravel()[0])
        gpu = getattr(c.model, "gpu", None)
        peak.append(w + (gpu.peak_w() if gpu is not None else 0.0))
    return PSU_HEADROOM * np.array(peak)


def meter_errors(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(gain, offset), each (2, components): row 0 the input meter's, row 1 the output's;
    gain a fraction, offset W, drawn from each component's name."""
    gain, offset = np.empty((2, len(names))), np.empty((2, len(names)))
    for k in range(2):
        for j, name in enumerate(names):
            hw = np.random.default_rng([zlib.crc32(name.encode()), k, _HW_BRANCH])
            gain[k, j], offset[k, j] = hw.uniform(-1, 1) * PSU_GAIN_ERR, hw.uniform(-1, 1) * \
                PSU_OFFSET_W
    return gain, offset


def psu_loss(specs, names: Sequence[str], t_s: np.ndarray) -> np.ndarray:
    """(times, components) the factor by which ``psu_efficiency`` faults among ``specs``
    raise each component's input at times ``t_s`` (s after the run's start); 1 without."""
    t = np.asarray(t_s, dtype=np.float64)
    loss = np.ones((len(t), len(names)))
    for spec in specs:
        if spec.kind == "psu_efficiency":
            j = list(names).index(spec.component)
            loss[:, j] *= 1.0 + spec.magnitude * spec.level(t)
    return loss


def drift_series(rng: np.random.Generator, n: int, m: int) -> np.ndarray:
    """(n, m) the efficiency's relative drift, one value per second, an AR(1) per component
    stationary from the first second: drift[i] = a drift[i-1] + step[i]."""
    from scipy.signal import lfilter

    a = math.exp(-1.0 / PSU_DRIFT_TAU_S)
    steps = rng.standard_normal((n, m)) * PSU_DRIFT * math.sqrt(1 - a * a)
    level = rng.standard_normal(m) * PSU_DRIFT
    return lfilter([1.0], [1.0, -a], steps, axis=0, zi=(a * level)[None, :])[0]


def psu_output_w(wall_w: np.ndarray, loss: np.ndarray, rating_w: np.ndarray,
                 drift: np.ndarray) -> np.ndarray:
    """What the PSUs give out, W, when they take ``wall_w`` in: ``dc = wall / loss x
    eff(dc / rating) x (1 + drift)``, solved as a fixed point (all arrays broadcast)."""
    dc = wall_w / loss * 0.9
    for _ in range(20):                     # dc = wall * eff(dc), a fixed point
        eff = np.interp(dc / rating_w, PSU_LOAD_FRAC, PSU_EFFICIENCY) * (1.0 + drift)
        dc = wall_w / loss * eff
    return dc


def meter_readings(true_w: np.ndarray, gain: np.ndarray, offset: np.ndarray,
                   noise: np.ndarray) -> np.ndarray:
    """What a meter with fixed ``gain`` and ``offset`` errors reads of ``true_w`` with the
    reading's random factor ``noise`` (1 + error), W, never below 0."""
    return np.maximum(true_w * (1 + gain) * noise + offset, 0.0)


class LivePsuMeters:
    """The meters of components ``names`` in real time: :meth:`read` gives one reading per
    component (``ratings_w`` as :func:`psu_ratings_w`); ``seed`` and ``sim_seed`` seed the
    drift and the readings' errors (the fixed errors are the hardware's, as in fast mode)."""

    def __init__(self, names: Sequence[str], ratings_w: np.ndarray, seed: int = 0,
                 sim_seed: int = 0):
        self.names = tuple(names)
        self.ratings_w = np.asarray(ratings_w, dtype=np.float64)
        self.gain, self.offset = meter_errors(self.names)
        self._rng = np.random.default_rng([int(seed), int(sim_seed), RNG_BRANCH])
        self.drift = self._rng.standard_normal(len(self.names)) * PSU_DRIFT   # stationary
        self._t_s: float | None = None

    def read(self, t_s: float, wall_w: np.ndarray, loss: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
        """(input W, output W) per component at ``t_s`` (s, increasing between calls) from
        the true wall power ``wall_w`` and the faults' extra loss factor ``loss``."""
        if self._t_s is not None and t_s > self._t_s:      # the AR(1) over the time passed
            a = math.exp(-(t_s - self._t_s) / PSU_DRIFT_TAU_S)
            self.drift = a * self.drift + self._rng.standard_normal(len(self.names)) \
                * PSU_DRIFT * math.sqrt(1 - a * a)
        self._t_s = float(t_s)
        wall = np.asarray(wall_w, dtype=np.float64)
        dc = psu_output_w(wall, np.asarray(loss, dtype=np.float64), self.ratings_w,
                          self.drift)
        noise = 1.0 + PSU_READ_NOISE * self._rng.standard_normal((2, len(self.names)))
        return (meter_readings(wall, self.gain[0], self.offset[0], noise[0]),
                meter_readings(dc, self.gain[1], self.offset[1], noise[1]))
