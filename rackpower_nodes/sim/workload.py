"""Synthetic and recorded workloads: utilisation (0..1) of a host over time, and its telemetry.

A synthetic workload is the sum of a diurnal level (hourly profile between a night trough
and a business-hours peak, lower at weekends), a slow AR(1) drift, fast AR(1) jitter and
Poisson-arriving bursts that decay exponentially, clipped to 0..1; occasional spikes and
scheduled batch jobs (:mod:`rackpower_nodes.core.schedule`) then hold it at or above their
level. Each random process draws from its own ``numpy.random.Generator`` in fixed-width rows,
so the samples do not depend on how time is cut into blocks.

A recorded workload replays power and utilisation from a trace file, resampled linearly onto
the simulator clock and looped: the BSC format (``timestamp`` Unix s, ``powerWatts`` W,
``cpu_idle`` %, several concatenated runs) or a plain CSV with the header
``time_s,power_w[,util]``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.sim.rack_model import (
    HostSpec,
    PulseTrain,
    SimConfigError,
    ar1_filter,
    cfg_float,
    cfg_map,
    cfg_numbers,
    lag_filter,
)

__all__ = [
    "GPU_HOST_TELEMETRY", "HOURLY_OFFICE", "STORAGE_TELEMETRY", "TELEMETRY_FIELDS",
    "TelemetryShape", "TelemetryStream", "TraceReplay", "WorkloadProfile", "WorkloadStream",
    "load_bsc_trace", "load_plain_trace", "load_trace",
]

_log = logging.getLogger(__name__)

# Shape of an office-hours day, 0..1 at 00:00, 01:00, ... 23:00 local time.
HOURLY_OFFICE = (0.10, 0.05, 0.02, 0.0, 0.0, 0.03, 0.12, 0.35, 0.65, 0.85, 0.95, 1.0,
                 0.92, 0.97, 1.0, 0.95, 0.85, 0.65, 0.45, 0.35, 0.30, 0.25, 0.20, 0.15)
TELEMETRY_FIELDS = ("cpu_util", "mem_used_bytes", "net_rx_bytes_per_s", "net_tx_bytes_per_s",
                    "disk_read_bytes_per_s", "disk_write_bytes_per_s")
_EPOCH_WEEKDAY = 3      # 1970-01-01 was a Thursday (mon = 0)


@dataclass(frozen=True)
class WorkloadProfile:
    """Parameters of a synthetic workload (utilisation 0..1, rates per hour, times in s)."""

    constant: float | None = None
    night: float = 0.1
    peak: float = 0.5
    hourly: tuple[float, ...] = HOURLY_OFFICE
    weekend_factor: float = 0.4
    host_shift_h: float = 0.5
    drift: tuple[float, float] = (0.04, 900.0)     # sigma, tau_s
    jitter: tuple[float, float] = (0.03, 2.0)      # sigma, tau_s
    bursts: tuple[float, float, float] = (6.0, 0.15, 60.0)    # rate_per_h, mean_util, tau_s
    spikes: tuple[float, float, float, float] = (1.0, 0.95, 5.0, 40.0)  # rate, util, min_s, max_s

    @classmethod
    def from_config(cls, raw, key: str) -> WorkloadProfile:
        raw = cfg_map(raw, key)
        if "constant" in raw:
            return cls(constant=cfg_float(raw, "constant", key, None, 0.0, 1.0))
        d = cls()
        di = cfg_map(raw.get("diurnal", {}), f"{key}.diurnal")
        k = f"{key}.diurnal"
        hourly = di.get("hourly", list(d.hourly))
        hourly = tuple(cfg_numbers(hourly, f"{k}.hourly", 0.0, 1.0, "", 24))
        night = cfg_float(di, "night", k, d.night, 0.0, 1.0)
        peak = cfg_float(di, "peak", k, d.peak, night, 1.0)
        drift, jitter, bursts, spikes = (cfg_map(raw.get(s, {}), f"{key}.{s}")
                                         for s in ("drift", "jitter", "bursts", "spikes"))
        dur = cfg_numbers(spikes.get("duration_s", [5.0, 40.0]), f"{key}.spikes.duration_s",
                          0.1, 3600.0, "s", 2)
        return cls(None, night, peak, hourly,
                   cfg_float(di, "weekend_factor", k, d.weekend_factor, 0.0, 2.0),
                   cfg_float(di, "host_shift_h", k, d.host_shift_h, 0.0, 6.0, "h"),
                   (cfg_float(drift, "sigma", f"{key}.drift", 0.04, 0.0, 1.0),
                    cfg_float(drift, "tau_s", f"{key}.drift", 900.0, 0.0, 1e6, "s")),
                   (cfg_float(jitter, "sigma", f"{key}.jitter", 0.03, 0.0, 1.0),
                    cfg_float(jitter, "tau_s", f"{key}.jitter", 2.0, 0.0, 1e4, "s")),
                   (cfg_float(bursts, "rate_per_h", f"{key}.bursts", 6.0, 0.0, 3600.0),
                    cfg_float(bursts, "mean_util", f"{key}.bursts", 0.15, 0.0, 1.0),
                    cfg_float(bursts, "tau_s", f"{key}.bursts", 60.0, 0.1, 1e5, "s")),
                   (cfg_float(spikes, "rate_per_h", f"{key}.spikes", 1.0, 0.0, 3600.0),
                    cfg_float(spikes, "util", f"{key}.spikes", 0.95, 0.0, 1.0),
                    min(dur), max(dur)))

    def shape(self, t_unix: np.ndarray, tz_offset_s: float, shift_h: float) -> np.ndarray:
        """Diurnal shape 0..1 (weekend days scaled by ``weekend_factor``)."""
        local = np.asarray(t_unix) + tz_offset_s - shift_h * 3600.0
        hour = np.mod(local, 86400.0) / 3600.0
        value = np.interp(hour, np.arange(25.0), self.hourly + self.hourly[:1])
        weekday = np.mod(np.floor(local / 86400.0) + _EPOCH_WEEKDAY, 7.0)
        return np.where(weekday >= 5, value * self.weekend_factor, value)


class WorkloadStream:
    """Utilisation of one host, block by block, on a clock of period ``dt_s`` (s).

    ``rngs``: four generators used only by this stream (drift, jitter, bursts, spikes).
    """

    def __init__(self, host: str, profile: WorkloadProfile, schedule: WorkloadSchedule,
                 dt_s: float, rngs: Sequence[np.random.Generator]):
        self.host, self.profile, self.schedule, self._dt = host, profile, schedule, dt_s
        self._rng_drift, self._rng_jitter, self._rng_burst, self._rng_spike = rngs
        p = profile
        self._shift = p.host_shift_h * float(np.clip(self._rng_drift.standard_normal(), -2, 2))
        self._drift = p.drift[0] * float(self._rng_drift.standard_normal())
        self._jitter = p.jitter[0] * float(self._rng_jitter.standard_normal())
        self._burst = 0.0
        self._spikes = PulseTrain()

    def block(self, t_unix: np.ndarray) -> np.ndarray:
        """Utilisation (0..1) at the sample times ``t_unix`` (Unix s, spaced ``dt_s``)."""
        p, n = self.profile, len(t_unix)
        if p.constant is not None:
            return self._apply_jobs(t_unix, np.full(n, p.constant), np.zeros(n))
        shape = p.shape(t_unix, self.schedule.tz_offset_s, self._shift)
        drift = self._ar1(self._rng_drift, n, *p.drift, "_drift")
        jitter = self._ar1(self._rng_jitter, n, *p.jitter, "_jitter")
        util = p.night + (p.peak - p.night) * shape + drift + jitter + self._bursts(shape)
        util = np.clip(util, 0.0, 1.0)
        util = np.maximum(util, self._spike_block(n))
        return self._apply_jobs(t_unix, util, jitter)

    def _ar1(self, rng, n: int, sigma: float, tau_s: float, attr: str) -> np.ndarray:
        a = math.exp(-self._dt / tau_s) if tau_s > 0 else 0.0
        out = ar1_filter(sigma * math.sqrt(1 - a * a) * rng.standard_normal(n), a,
                         getattr(self, attr))
        setattr(self, attr, float(out[-1]))
        return out

    def _bursts(self, shape: np.ndarray) -> np.ndarray:
        rate_h, mean_util, tau_s = self.profile.bursts
        draws = self._rng_burst.random((len(shape), 2))
        prob = rate_h * self._dt / 3600.0 * (0.25 + 0.75 * shape)
        kicks = np.where(draws[:, 0] < prob, -mean_util * np.log1p(-draws[:, 1]), 0.0)
        out = ar1_filter(kicks, math.exp(-self._dt / tau_s), self._burst)
        self._burst = float(out[-1])
        return out

    def _spike_block(self, n: int) -> np.ndarray:
        rate_h, level, low_s, high_s = self.profile.spikes
        draws = self._rng_spike.random((n, 2))
        starts = np.flatnonzero(draws[:, 0] < rate_h * self._dt / 3600.0)
        lengths = np.rint((low_s + (high_s - low_s) * draws[starts, 1]) / self._dt)
        return self._spikes.block(n, starts, lengths, np.full(starts.size, level))

    def _apply_jobs(self, t_unix: np.ndarray, util: np.ndarray, jitter: np.ndarray):
        end = float(t_unix[-1]) + self._dt
        for occ in self.schedule.occurrences(self.host, float(t_unix[0]), end):
            i0, i1 = np.searchsorted(t_unix, [occ.start, occ.end])
            level = np.clip(occ.job.expected_util + jitter[i0:i1], 0.0, 1.0)
            util[i0:i1] = np.maximum(util[i0:i1], level)
        return util


@dataclass(frozen=True)
class TelemetryShape:
    """How host telemetry follows utilisation u: each rate = capacity * (base + gain * u)."""

    cpu: tuple[float, float] = (0.0, 1.0)
    mem: tuple[float, float] = (0.25, 0.45)          # fraction of memory, on a 900 s lag of u
    net_rx: tuple[float, float] = (0.002, 0.25)      # fraction of NIC bytes/s
    net_tx: tuple[float, float] = (0.002, 0.18)
    disk_read: tuple[float, float] = (0.01, 0.30)    # fraction of disk bytes/s
    disk_write: tuple[float, float] = (0.01, 0.20)


STORAGE_TELEMETRY = TelemetryShape(cpu=(0.04, 0.35), mem=(0.55, 0.25), net_rx=(0.01, 0.45),
                                   net_tx=(0.01, 0.45), disk_read=(0.02, 0.6),
                                   disk_write=(0.02, 0.5))
# A GPU server's frontend NIC (what its node exporter reports; the compute fabric is apart)
# carries little but the requests of a service it runs, which the engine adds on top.
GPU_HOST_TELEMETRY = TelemetryShape(net_rx=(0.0005, 0.01), net_tx=(0.0005, 0.01))


class TelemetryStream:
    """Per-second host telemetry (see :data:`TELEMETRY_FIELDS`) from per-second mean util."""

    def __init__(self, spec: HostSpec, shape: TelemetryShape, rng: np.random.Generator):
        self.spec, self.shape, self._rng = spec, shape, rng
        self._mem_lag: float | None = None
        self._noise = np.zeros(5)

    def mean_traffic_bytes_per_s(self, util: np.ndarray) -> np.ndarray:
        """Noise-free rx + tx bytes/s at utilisation ``util`` (what the switches carry)."""
        s = self.shape
        frac = s.net_rx[0] + s.net_tx[0] + (s.net_rx[1] + s.net_tx[1]) * np.asarray(util)
        return self.spec.nic_bytes_per_s * frac

    def block(self, util_1hz: np.ndarray) -> dict[str, np.ndarray]:
        """Telemetry for ``len(util_1hz)`` seconds; every value is a mean over its second."""
        s, spec, n = self.shape, self.spec, len(util_1hz)
        if self._mem_lag is None:
            self._mem_lag = float(util_1hz[0])
        mem_u = lag_filter(util_1hz, 900.0, 1.0, self._mem_lag)
        self._mem_lag = float(mem_u[-1])
        taus = np.array([300.0, 10.0, 10.0, 20.0, 20.0])
        sigmas = np.array([0.02, 0.25, 0.25, 0.35, 0.35])
        a = np.exp(-1.0 / taus)
        draws = self._rng.standard_normal((n, 5)) * sigmas * np.sqrt(1 - a * a)
        noise = np.column_stack([ar1_filter(draws[:, i], a[i], self._noise[i])
                                 for i in range(5)])
        self._noise = noise[-1].copy()

        def rate(pair, capacity, col):
            return capacity * (pair[0] + pair[1] * util_1hz) * np.exp(noise[:, col])

        mem = np.clip(s.mem[0] + s.mem[1] * mem_u + noise[:, 0], 0.02, 0.98)
        return {
            "cpu_util": np.clip(s.cpu[0] + s.cpu[1] * util_1hz, 0.0, 1.0),
            "mem_used_bytes": mem * spec.mem_total_bytes,
            "net_rx_bytes_per_s": rate(s.net_rx, spec.nic_bytes_per_s, 1),
            "net_tx_bytes_per_s": rate(s.net_tx, spec.nic_bytes_per_s, 2),
            "disk_read_bytes_per_s": rate(s.disk_read, spec.disk_bytes_per_s, 3),
            "disk_write_bytes_per_s": rate(s.disk_write, spec.disk_bytes_per_s, 4),
        }


@dataclass(frozen=True)
class TraceReplay:
    """A recorded trace on a continuous time axis ``t_s`` (s from 0), looped with ``period_s``.

    ``power_w`` in W, ``util`` 0..1. ``offset_s`` shifts where the loop starts.
    """

    t_s: np.ndarray
    power_w: np.ndarray
    util: np.ndarray
    period_s: float
    source: str
    offset_s: float = 0.0

    def _at(self, values: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        phase = np.mod(np.asarray(t_s, dtype=np.float64) + self.offset_s, self.period_s)
        return np.interp(phase, np.append(self.t_s, self.period_s),
                         np.append(values, values[0]))

    def power_at(self, t_s: np.ndarray) -> np.ndarray:
        """Replayed power (W) at simulator times ``t_s`` (s)."""
        return self._at(self.power_w, t_s)

    def util_at(self, t_s: np.ndarray) -> np.ndarray:
        """Replayed utilisation (0..1) at simulator times ``t_s`` (s)."""
        return self._at(self.util, t_s)


def _stitch(times: np.ndarray, max_gap_s: float) -> tuple[np.ndarray, float]:
    """Continuous time axis: split at back-jumps and gaps > max_gap_s, join end to end."""
    steps = np.diff(times)
    good = steps[(steps > 0) & (steps <= max_gap_s)]
    nominal = float(np.median(good)) if good.size else 1.0
    steps = np.where((steps > 0) & (steps <= max_gap_s), steps, nominal)
    axis = np.concatenate([[0.0], np.cumsum(steps)])
    return axis, float(axis[-1] + nominal)


def load_bsc_trace(path: str | Path, max_gap_s: float = 10.0) -> TraceReplay:
    """A BSC power-modelling CSV: runs kept in file order, each split at back-jumps or gaps
    over ``max_gap_s`` (s) and joined end to end; util = (100 - cpu_idle) / 100."""
    path = Path(path)
    with path.open(newline="") as fh:
        header = next(csv.reader(fh))
    missing = [c for c in ("timestamp", "powerWatts", "cpu_idle") if c not in header]
    if missing:
        raise SimConfigError(f"trace {path}: columns {missing} missing, expected the BSC format")
    cols = [header.index(c) for c in ("timestamp", "powerWatts", "cpu_idle")]
    data = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, ndmin=2)
    data = data[np.isfinite(data).all(axis=1)]
    if len(data) < 2:
        raise SimConfigError(f"trace {path}: {len(data)} usable rows, expected >= 2")
    axis, period = _stitch(data[:, 0], max_gap_s)
    util = np.clip((100.0 - data[:, 2]) / 100.0, 0.0, 1.0)
    return TraceReplay(axis, data[:, 1].copy(), util, period, str(path))


def load_plain_trace(path: str | Path) -> TraceReplay:
    """A CSV with header ``time_s,power_w`` and optional ``util`` (0..1); rows sorted by time.
    Without ``util`` the utilisation is the power scaled to 0..1 between its min and max."""
    path = Path(path)
    with path.open(newline="") as fh:
        header = [h.strip() for h in next(csv.reader(fh))]
    if header[:2] != ["time_s", "power_w"] or header[2:] not in ([], ["util"]):
        raise SimConfigError(f"trace {path}: header {header}, expected time_s,power_w[,util]")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    data = data[np.argsort(data[:, 0], kind="stable")]
    keep = np.concatenate([[True], np.diff(data[:, 0]) > 0])
    data = data[keep]
    if len(data) < 2:
        raise SimConfigError(f"trace {path}: {len(data)} distinct times, expected >= 2")
    power = data[:, 1]
    if data.shape[1] > 2:
        util = np.clip(data[:, 2], 0.0, 1.0)
    else:
        span = float(power.max() - power.min()) or 1.0
        util = (power - power.min()) / span
    t = data[:, 0] - data[0, 0]
    step = float(np.median(np.diff(t)))
    return TraceReplay(t, power.copy(), util, float(t[-1] + step), str(path))


def load_bag_trace(path: str | Path, component: str, namespace: str | None = None,
                   step_s: float = 0.1) -> TraceReplay:
    """One component's power from a rosbag2 bag of ``power_samples`` (and ``host_telemetry``
    for utilisation), as recorded by rackpower or ``ros2 bag record``: step means of
    ``step_s`` (s), segments joined end to end. Utilisation is the host's CPU utilisation
    where the bag has it, else the power scaled to 0..1."""
    from rackpower_nodes.sources.bags import DatasetError, from_bag

    try:
        series = [s for s in from_bag(Path(path), step_s, namespace) if s.component == component]
    except DatasetError as exc:
        raise SimConfigError(f"trace {path}: {exc}") from exc
    if not series:
        raise SimConfigError(f"trace {path}: no power_samples channel {component!r}")
    power = np.concatenate([s.power_w for s in series]).astype(np.float64)
    util = np.concatenate([s.telemetry[:, 0] for s in series]).astype(np.float64)
    if len(power) < 2:
        raise SimConfigError(f"trace {path}: {len(power)} steps of {component!r}, expected >= 2")
    if not np.isfinite(util).all():
        span = float(power.max() - power.min()) or 1.0
        util = np.where(np.isfinite(util), util, (power - power.min()) / span)
    t = np.arange(len(power)) * step_s
    return TraceReplay(t, power, np.clip(util, 0.0, 1.0), float(len(power) * step_s),
                       f"{path}#{component}")


def load_trace(raw: Mapping, key: str, base_dir: Path) -> TraceReplay:
    """A trace from a component's ``trace`` section: ``format`` (bsc | csv | bag), ``path``
    (relative to ``base_dir``; a bag's folder or file), optional ``offset_s``, ``max_gap_s``
    (bsc), and for a bag ``component`` (the channel id to replay) and ``namespace``."""
    raw = cfg_map(raw, key)
    fmt, rel = raw.get("format", "csv"), raw.get("path")
    if fmt not in ("bsc", "csv", "bag"):
        raise SimConfigError(f"{key}.format: {fmt!r}, expected 'bsc', 'csv' or 'bag'")
    if not isinstance(rel, str):
        raise SimConfigError(f"{key}.path: {rel!r}, expected a file path")
    path = (base_dir / rel).expanduser()
    if not (path.is_file() or (fmt == "bag" and path.is_dir())):
        raise SimConfigError(f"{key}.path: {str(path)!r} is not a "
                             + ("bag folder or file" if fmt == "bag" else "file"))
    if fmt == "bag":
        component = raw.get("component")
        if not isinstance(component, str) or not component:
            raise SimConfigError(f"{key}.component: {component!r}, expected the channel id "
                                 "to replay from the bag")
        trace = load_bag_trace(path, component, raw.get("namespace"))
    elif fmt == "bsc":
        trace = load_bsc_trace(path, cfg_float(raw, "max_gap_s", key, 10.0, 0.1, 1e6, "s"))
    else:
        trace = load_plain_trace(path)
    offset = cfg_float(raw, "offset_s", key, 0.0, 0.0, 1e9, "s")
    _log.debug("trace %s: %d samples, loop %.0f s", path, trace.t_s.size, trace.period_s)
    return TraceReplay(trace.t_s, trace.power_w, trace.util, trace.period_s, trace.source,
                       offset)
