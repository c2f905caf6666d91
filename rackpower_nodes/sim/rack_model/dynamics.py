"""Power dynamics of rack components: lags, turbo overshoot, noise and spikes, block by block.

Dynamics on top of the steady curve (all seeded, vectorised over blocks of samples, with
state carried from block to block): a first-order lag of ``lag_tau_s`` from utilisation to
power, a turbo overshoot after utilisation rises (difference of a fast and a slow lag), AR(1)
noise of a few W plus white noise, and rare sub-second fan/turbo spikes. Each settles or
averages out, so the mean power at a steady utilisation stays on the curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.sim.rack_model.checks import SimConfigError, cfg_float, cfg_map

_TINY = 1e-30                               # decay left at the end of one ar1_filter chunk


# -- vectorised recursive filters -----------------------------------------------------------

def ar1_filter(x: np.ndarray, a: float, y0: float = 0.0) -> np.ndarray:
    """``y[n] = a * y[n-1] + x[n]`` with ``y[-1] = y0``, for 0 <= a < 1, without a Python loop.

    Works on chunks short enough that ``a**L`` stays above 1e-30: inside a chunk
    ``y[j] = a**j * cumsum(a**-k * x[k])``, then each chunk adds the decayed end value of the
    previous one (terms older than one chunk are below float precision and dropped).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n == 0:
        return x.copy()
    if a <= _TINY:
        y = x.copy()
        y[0] += a * y0
        return y
    length = max(1, min(n, int(math.log(_TINY) / math.log(a))))
    chunks = -(-n // length)
    padded = np.zeros(chunks * length)
    padded[:n] = x
    k = np.arange(length, dtype=np.float64)
    grow, decay = a ** -k, a ** k
    local = np.cumsum(padded.reshape(chunks, length) * grow, axis=1) * decay
    ends = local[:, -1].copy()
    prev = np.empty(chunks)
    prev[0] = y0
    q = a ** length
    if chunks > 1:
        prev[1:] = ends[:-1]
        prev[2:] += q * ends[:-2]
        prev[1] += q * y0
    local += np.outer(prev, decay * a)
    return local.reshape(-1)[:n]


def lag_filter(x: np.ndarray, tau_s: float, dt_s: float, y0: float) -> np.ndarray:
    """First-order lag (time constant ``tau_s``, s) of ``x`` sampled every ``dt_s`` s."""
    if tau_s <= 0.0:
        return np.asarray(x, dtype=np.float64).copy()
    a = math.exp(-dt_s / tau_s)
    return ar1_filter((1.0 - a) * np.asarray(x, dtype=np.float64), a, y0)


class PulseTrain:
    """Rectangular pulses that may run past the end of a block; the rest lands in the next."""

    def __init__(self) -> None:
        self._level = 0.0
        self._pending = np.zeros(0)

    def block(self, n: int, starts: np.ndarray, lengths: np.ndarray,
              amplitudes: np.ndarray) -> np.ndarray:
        """Sum of pulses in a block of ``n`` samples (starts and lengths in samples)."""
        starts = np.asarray(starts, dtype=np.int64)
        lengths = np.maximum(np.asarray(lengths, dtype=np.int64), 1)
        tail = int(lengths.max()) if lengths.size else 0
        diff = np.zeros(n + max(tail, self._pending.size) + 1)
        diff[:self._pending.size] += self._pending
        np.add.at(diff, starts, amplitudes)
        np.add.at(diff, starts + lengths, -np.asarray(amplitudes, dtype=np.float64))
        out = self._level + np.cumsum(diff[:n])
        self._level = float(out[-1]) if n else self._level
        self._pending = diff[n:]
        return out


# -- dynamics -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dynamics:
    """Transients and noise added to a steady curve (W, s)."""

    lag_tau_s: float = 0.2           # utilisation -> power first-order lag
    turbo_frac: float = 0.25         # overshoot per unit utilisation rise, x (P100 - Pidle)
    turbo_tau_s: float = 3.0         # how long the overshoot takes to fade
    noise_w: float = 3.0             # AR(1) noise std
    noise_tau_s: float = 5.0         # AR(1) correlation time
    white_w: float = 0.5             # white noise std per sample
    spike_rate_per_h: float = 20.0   # fan / turbo spikes
    spike_w: float = 10.0            # mean spike height (exponential)
    spike_s: tuple[float, float] = (0.2, 0.6)

    @classmethod
    def from_config(cls, raw, key: str) -> Dynamics:
        raw = cfg_map(raw or {}, key)
        d = cls()
        spike_s = raw.get("spike_s", list(d.spike_s))
        if (not isinstance(spike_s, list) or len(spike_s) != 2
                or not all(isinstance(v, (int, float)) for v in spike_s)
                or not 0 < spike_s[0] <= spike_s[1] <= 60):
            raise SimConfigError(f"{key}.spike_s: {spike_s!r}, expected [min, max] s, "
                                 "0 < min <= max <= 60")
        return cls(cfg_float(raw, "lag_tau_s", key, d.lag_tau_s, 0.0, 60.0, "s"),
                   cfg_float(raw, "turbo_frac", key, d.turbo_frac, 0.0, 2.0),
                   cfg_float(raw, "turbo_tau_s", key, d.turbo_tau_s, 0.0, 600.0, "s"),
                   cfg_float(raw, "noise_w", key, d.noise_w, 0.0, 1000.0, "W"),
                   cfg_float(raw, "noise_tau_s", key, d.noise_tau_s, 0.0, 3600.0, "s"),
                   cfg_float(raw, "white_w", key, d.white_w, 0.0, 1000.0, "W"),
                   cfg_float(raw, "spike_rate_per_h", key, d.spike_rate_per_h, 0.0, 36000.0),
                   cfg_float(raw, "spike_w", key, d.spike_w, 0.0, 5000.0, "W"),
                   (float(spike_s[0]), float(spike_s[1])))

    def quiet(self) -> Dynamics:
        """The same lags without noise, overshoot or spikes."""
        return Dynamics(self.lag_tau_s, 0.0, self.turbo_tau_s, 0.0, self.noise_tau_s, 0.0, 0.0)


class PowerStream:
    """Block-wise wall power (W) of one component from its load (0..1), with dynamics.

    ``steady`` maps load to settled power; ``swing_w`` scales the turbo overshoot. The
    generators ``rng_noise`` and ``rng_spike`` are used by this stream only, so the output does
    not depend on how time is cut into blocks (up to float rounding).
    """

    def __init__(self, steady, swing_w: float, dynamics: Dynamics, dt_s: float,
                 rng_noise: np.random.Generator, rng_spike: np.random.Generator):
        self._steady, self._swing, self._dyn, self._dt = steady, swing_w, dynamics, dt_s
        self._rng_noise, self._rng_spike = rng_noise, rng_spike
        self._fast = self._slow = None
        self._noise = dynamics.noise_w * float(rng_noise.standard_normal())
        self._spikes = PulseTrain()

    def block(self, load: np.ndarray) -> np.ndarray:
        """Wall power (W) for the next ``len(load)`` samples."""
        d, dt = self._dyn, self._dt
        if self._fast is None:
            self._fast = self._slow = float(load[0])
        fast = lag_filter(load, d.lag_tau_s, dt, self._fast)
        slow = lag_filter(load, d.turbo_tau_s, dt, self._slow)
        self._fast, self._slow = float(fast[-1]), float(slow[-1])
        power = self._steady(fast)
        power += d.turbo_frac * self._swing * np.maximum(fast - slow, 0.0)
        n = len(load)
        draws = self._rng_noise.standard_normal((n, 2))     # rows: one sample each
        a = math.exp(-dt / d.noise_tau_s) if d.noise_tau_s > 0 else 0.0
        noise = ar1_filter(d.noise_w * math.sqrt(1.0 - a * a) * draws[:, 0], a, self._noise)
        self._noise = float(noise[-1])
        power += noise + d.white_w * draws[:, 1]
        power += self._spike_block(n)
        return np.maximum(power, 0.0)

    def _spike_block(self, n: int) -> np.ndarray:
        d = self._dyn
        draws = self._rng_spike.random((n, 3))     # hit?, height, length
        starts = np.flatnonzero(draws[:, 0] < d.spike_rate_per_h * self._dt / 3600.0)
        heights = -d.spike_w * np.log1p(-draws[starts, 1])
        low, high = d.spike_s
        lengths = np.rint((low + (high - low) * draws[starts, 2]) / self._dt)
        return self._spikes.block(n, starts, lengths, heights)
