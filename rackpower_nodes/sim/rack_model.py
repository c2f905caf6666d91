"""Power models of rack components: SPECpower load curves, PSUs, switches, storage, dynamics.

Servers follow a SPECpower_ssj2008 11-point curve (wall power in W at ActiveIdle and at 10 %
.. 100 % target load), interpolated linearly in utilisation. SPECpower measures at the wall
with the power supply the system was tested with, so the curve *is* wall power for that
reference PSU. A server model may name a different installed PSU: the curve is then converted
to DC power through the reference PSU's efficiency and back to wall power through the
installed one (``P_wall = P_dc / eff(P_dc / rating)``). Without an installed PSU the steady
state equals the published curve exactly.

Dynamics on top of the steady curve (all seeded, vectorised over blocks of samples, with
state carried from block to block): a first-order lag of ``lag_tau_s`` from utilisation to
power, a turbo overshoot after utilisation rises (difference of a fast and a slow lag), AR(1)
noise of a few W plus white noise, and rare sub-second fan/turbo spikes. Each settles or
averages out, so the mean power at a steady utilisation stays on the curve.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LOAD_POINTS", "Dynamics", "HostSpec", "LoadCurve", "PowerStream", "Psu", "PsuCurve",
    "PulseTrain", "ServerModel", "SimConfigError", "StorageModel", "SwitchModel", "ar1_filter",
    "cfg_float", "cfg_map", "cfg_number", "cfg_numbers", "lag_filter",
]

LOAD_POINTS = np.linspace(0.0, 1.0, 11)     # ActiveIdle, 10 % .. 100 % target load
_TINY = 1e-30                               # decay left at the end of one ar1_filter chunk


class SimConfigError(ValueError):
    """Invalid simulator configuration; the message names the key, the value and the rule."""


# -- configuration helpers ------------------------------------------------------------------

def cfg_map(value, key: str) -> Mapping:
    """``value`` if it is a mapping, else a :class:`SimConfigError` naming ``key``."""
    if not isinstance(value, Mapping):
        raise SimConfigError(f"{key}: {value!r} is not a mapping")
    return value


def cfg_number(value, key: str, low: float = -math.inf, high: float = math.inf,
               unit: str = "") -> float:
    """``value`` as a finite float within ``[low, high]``; errors name ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SimConfigError(f"{key}: {value!r} is not a finite number {unit}".rstrip())
    if not low <= value <= high:
        raise SimConfigError(f"{key}: {value!r} outside [{low}, {high}] {unit}".rstrip())
    return float(value)


def cfg_float(section: Mapping, name: str, key: str, default: float | None = None,
              low: float = -math.inf, high: float = math.inf, unit: str = "") -> float:
    """``section[name]`` (or ``default``) checked by :func:`cfg_number`; ``key`` names the
    section. A missing value without default is an error."""
    where = f"{key}.{name}" if key else name
    value = section.get(name, default)
    if value is None:
        raise SimConfigError(f"{where}: missing, expected a number{' in ' + unit if unit else ''}")
    return cfg_number(value, where, low, high, unit)


def cfg_numbers(values, key: str, low: float = -math.inf, high: float = math.inf,
                unit: str = "", count: int | None = None) -> list[float]:
    """A list of numbers (exactly ``count`` of them if given), each checked by cfg_number."""
    if not isinstance(values, list) or (count is not None and len(values) != count):
        got = f"{len(values)} values" if isinstance(values, list) else repr(values)
        want = f"a list of {count} numbers" if count is not None else "a list of numbers"
        raise SimConfigError(f"{key}: {got}, expected {want}{' (' + unit + ')' if unit else ''}")
    return [cfg_number(v, f"{key}[{i}]", low, high, unit) for i, v in enumerate(values)]


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


# -- steady-state models --------------------------------------------------------------------

@dataclass(frozen=True)
class LoadCurve:
    """SPECpower 11-point curve: wall power (W) at ActiveIdle, 10 % .. 100 % load."""

    points_w: tuple[float, ...]

    @classmethod
    def from_config(cls, values, key: str) -> LoadCurve:
        """Validate 11 finite, positive, non-decreasing values (W) from ``key``."""
        pts = cfg_numbers(values, key, 0.0, 1e5, "W: ActiveIdle, 10 % .. 100 % load", 11)
        if pts[0] <= 0.0:
            raise SimConfigError(f"{key}[0]: {pts[0]!r} W, expected an idle power > 0 W")
        for i in range(1, 11):
            if pts[i] < pts[i - 1]:
                raise SimConfigError(f"{key}: not non-decreasing at index {i} "
                                     f"({pts[i]} W after {pts[i - 1]} W)")
        return cls(tuple(pts))

    def power_w(self, util: np.ndarray) -> np.ndarray:
        """Wall power (W) at utilisation ``util`` (0..1), linear between the 11 points."""
        return np.interp(util, LOAD_POINTS, self.points_w)


@dataclass(frozen=True)
class PsuCurve:
    """Efficiency (0..1) against output load as a fraction of the PSU rating."""

    name: str
    load_frac: tuple[float, ...]
    efficiency: tuple[float, ...]

    @classmethod
    def from_config(cls, name: str, raw, key: str) -> PsuCurve:
        raw = cfg_map(raw, key)
        frac = cfg_numbers(raw.get("load_frac"), f"{key}.load_frac", 0.0, 2.0)
        eff = cfg_numbers(raw.get("efficiency"), f"{key}.efficiency", 0.3, 1.0, "",
                          len(frac))
        if len(frac) < 2 or any(b <= a for a, b in itertools.pairwise(frac)):
            raise SimConfigError(f"{key}.load_frac: {frac!r}, expected >= 2 strictly "
                                 "increasing load fractions")
        return cls(name, tuple(frac), tuple(eff))


@dataclass(frozen=True)
class Psu:
    """A power supply: efficiency curve and DC output rating (W)."""

    curve: PsuCurve
    rating_w: float

    def efficiency(self, dc_w: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(dc_w) / self.rating_w, self.curve.load_frac,
                         self.curve.efficiency)

    def wall_from_dc(self, dc_w: np.ndarray) -> np.ndarray:
        """Wall (AC input) power in W for DC output ``dc_w`` (W)."""
        return np.asarray(dc_w) / self.efficiency(dc_w)

    def dc_from_wall(self, wall_w: np.ndarray) -> np.ndarray:
        """DC output (W) for wall power ``wall_w`` (W): fixed point of dc = wall * eff(dc)."""
        wall_w = np.asarray(wall_w, dtype=np.float64)
        dc = wall_w * 0.9
        for _ in range(40):
            dc = wall_w * self.efficiency(dc)
        return dc


@dataclass(frozen=True)
class HostSpec:
    """Capacities behind a host's telemetry: memory (bytes), NIC and disk (bytes/s), CPUs."""

    mem_total_bytes: float
    nic_bytes_per_s: float
    disk_bytes_per_s: float
    n_cpus: int = 16

    @classmethod
    def from_config(cls, raw: Mapping, key: str) -> HostSpec:
        """Read ``mem_total_gb`` (GiB), ``nic_gbps`` (Gbit/s), ``disk_mb_per_s`` (MB/s) and
        ``cpus`` (logical CPUs), each with a default."""
        return cls(cfg_float(raw, "mem_total_gb", key, 64.0, 0.5, 65536.0, "GiB") * 2.0**30,
                   cfg_float(raw, "nic_gbps", key, 10.0, 0.1, 800.0, "Gbit/s") * 1e9 / 8,
                   cfg_float(raw, "disk_mb_per_s", key, 500.0, 1.0, 1e5, "MB/s") * 1e6,
                   int(cfg_float(raw, "cpus", key, 16, 1, 4096)))


@dataclass(frozen=True)
class ServerModel:
    """A server: SPECpower curve, optional PSU conversion, host capacities, curve source."""

    name: str
    curve: LoadCurve
    host: HostSpec
    source: Mapping
    reference_psu: Psu | None = None
    psu: Psu | None = None

    @classmethod
    def from_config(cls, name: str, raw, key: str,
                    psu_curves: Mapping[str, PsuCurve]) -> ServerModel:
        """Parse ``power_w`` (11 points), ``source``, host capacities and optional PSUs."""
        raw = cfg_map(raw, key)
        curve = LoadCurve.from_config(raw.get("power_w"), f"{key}.power_w")
        source = cfg_map(raw.get("source"), f"{key}.source")
        if not isinstance(source.get("system"), str):
            raise SimConfigError(f"{key}.source.system: {source.get('system')!r}, expected the "
                                 "name of the measured system")
        ref = _psu(raw.get("reference_psu"), f"{key}.reference_psu", psu_curves)
        psu = _psu(raw.get("psu"), f"{key}.psu", psu_curves)
        if psu is not None and ref is None:
            raise SimConfigError(f"{key}.psu: given without {key}.reference_psu, expected both "
                                 "(the curve is wall power with the reference PSU)")
        return cls(name, curve, HostSpec.from_config(raw, key), dict(source), ref, psu)

    @functools.cached_property
    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(utilisation grid, wall power W) used by :meth:`steady_power_w`."""
        if self.psu is None or self.reference_psu is None:
            return LOAD_POINTS, np.asarray(self.curve.points_w)
        grid = np.linspace(0.0, 1.0, 201)
        dc = self.reference_psu.dc_from_wall(self.curve.power_w(grid))
        return grid, self.psu.wall_from_dc(dc)

    def steady_power_w(self, util: np.ndarray) -> np.ndarray:
        """Settled wall power (W) at utilisation ``util`` (0..1)."""
        grid, watts = self.table
        return np.interp(util, grid, watts)


def _psu(raw, key: str, curves: Mapping[str, PsuCurve]) -> Psu | None:
    if raw is None:
        return None
    raw = cfg_map(raw, key)
    name = raw.get("curve")
    if name not in curves:
        raise SimConfigError(f"{key}.curve: {name!r} is not one of psu_curves {sorted(curves)}")
    return Psu(curves[name], cfg_float(raw, "rating_w", key, None, 1.0, 1e5, "W"))


@dataclass(frozen=True)
class SwitchModel:
    """Top-of-rack switch: ``base_w + ports * per_port_w + w_per_gbps * traffic`` (W)."""

    name: str
    base_w: float
    ports: int
    per_port_w: float
    w_per_gbps: float
    capacity_gbps: float

    @classmethod
    def from_config(cls, name: str, raw, key: str) -> SwitchModel:
        raw = cfg_map(raw, key)
        return cls(name, cfg_float(raw, "base_w", key, None, 0.0, 5000.0, "W"),
                   int(cfg_float(raw, "ports", key, 48, 1, 1024)),
                   cfg_float(raw, "per_port_w", key, 1.0, 0.0, 50.0, "W"),
                   cfg_float(raw, "w_per_gbps", key, 0.05, 0.0, 10.0, "W per Gbit/s"),
                   cfg_float(raw, "capacity_gbps", key, 1200.0, 1.0, 1e5, "Gbit/s"))

    def steady_power_w(self, load: np.ndarray) -> np.ndarray:
        """Power (W) at traffic ``load`` as a fraction (0..1) of ``capacity_gbps``."""
        fixed = self.base_w + self.ports * self.per_port_w
        return fixed + self.w_per_gbps * self.capacity_gbps * np.asarray(load)


@dataclass(frozen=True)
class StorageModel:
    """Storage node: ``idle_w + w_per_kiops * IO rate / 1000`` (W); IO rate = load * max_iops."""

    name: str
    idle_w: float
    max_iops: float
    w_per_kiops: float
    host: HostSpec

    @classmethod
    def from_config(cls, name: str, raw, key: str) -> StorageModel:
        raw = cfg_map(raw, key)
        return cls(name, cfg_float(raw, "idle_w", key, None, 1.0, 5000.0, "W"),
                   cfg_float(raw, "max_iops", key, 50000.0, 1.0, 1e8, "IO/s"),
                   cfg_float(raw, "w_per_kiops", key, 2.0, 0.0, 100.0, "W per 1000 IO/s"),
                   HostSpec.from_config(raw, key))

    def steady_power_w(self, load: np.ndarray) -> np.ndarray:
        """Power (W) at IO ``load`` (0..1 of ``max_iops``)."""
        return self.idle_w + self.w_per_kiops * self.max_iops / 1000.0 * np.asarray(load)


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
