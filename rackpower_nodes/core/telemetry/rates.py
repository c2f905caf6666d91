"""Rates and derived metrics of one host from successive node_exporter samples.

`RateTracker` turns successive `RawSample`s into `HostRates`; `calendar_features` gives the
calendar features of a time.

Rate interval: a rate is a counter delta divided by the host's own clock delta
(`node_time_seconds`, which the exporter reads while collecting) when both scrapes carry it and
it advanced; otherwise by the delta of the scrape arrival times. The host clock makes rates
immune to network and scheduling jitter, and makes the simulator deterministic; a host clock
step (NTP) distorts one interval.

Counter resets (host reboot, exporter restart, device removed): a counter that decreases, or
`node_boot_time_seconds` moving forward by more than 2 s, gives no rate (None) for that
interval and sets `counter_reset`; the next interval is computed from the new values. Rates are
never negative.
Rates of absent series are None; consumers publish None as NaN.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from rackpower_nodes.core.calendar import phases as calendar_phases
from rackpower_nodes.core.telemetry.exporter import IDLE_MODES, RawSample

# node_boot_time_seconds moving forward by more than this (s) is a reboot; the kernel's value
# wanders by ~1 s when the wall clock is adjusted.
_BOOT_JITTER_S = 2.0


@dataclass(frozen=True)
class HostRates:
    """Utilisation and rates over one scrape interval. None: unknown for this interval."""

    cpu_util: float | None            # 0..1, busy share of all CPU time
    mem_used_fraction: float | None   # 0..1, 1 - MemAvailable / MemTotal
    mem_used_bytes: float | None      # bytes, MemTotal - MemAvailable
    net_rx_bps: float | None          # bytes/s received, all devices but lo
    net_tx_bps: float | None          # bytes/s transmitted
    disk_read_bps: float | None       # bytes/s read, whole disks
    disk_write_bps: float | None      # bytes/s written
    interval_s: float                 # s the rates are averaged over
    counter_reset: bool = False       # a counter went backwards: its rate is None


class RateTracker:
    """Turns successive RawSamples of one host into HostRates (see the module docstring)."""

    def __init__(self) -> None:
        self._prev: RawSample | None = None
        self._prev_t_s = 0.0

    def update(self, sample: RawSample, t_s: float) -> HostRates | None:
        """Rates since the previous sample; None for the first one (or a non-advancing clock).
        `t_s` is the arrival time in s, used when the host clock is unavailable."""
        prev, prev_t_s = self._prev, self._prev_t_s
        self._prev, self._prev_t_s = sample, t_s
        if prev is None:
            return None
        dt = _interval(prev, sample, t_s - prev_t_s)
        if dt is None:
            return None
        rebooted = (prev.boot_time_s is not None and sample.boot_time_s is not None
                    and sample.boot_time_s - prev.boot_time_s > _BOOT_JITTER_S)
        cpu_util, cpu_reset = _cpu_util(prev, sample)
        rates = {name: _rate(getattr(prev, attr), getattr(sample, attr), dt)
                 for name, attr in (("net_rx_bps", "net_rx_by_device"),
                                    ("net_tx_bps", "net_tx_by_device"),
                                    ("disk_read_bps", "disk_read_by_device"),
                                    ("disk_write_bps", "disk_written_by_device"))}
        reset = rebooted or cpu_reset or any(r is _RESET for r in rates.values())
        if rebooted:
            cpu_util, rates = None, dict.fromkeys(rates)
        rates = {k: None if r is _RESET else r for k, r in rates.items()}
        used_fraction, used_bytes = _memory(sample)
        return HostRates(cpu_util=cpu_util, mem_used_fraction=used_fraction,
                         mem_used_bytes=used_bytes, interval_s=dt, counter_reset=reset, **rates)


_RESET = object()   # marker: a counter decreased


def _interval(prev: RawSample, cur: RawSample, arrival_dt: float) -> float | None:
    if prev.host_time_s is not None and cur.host_time_s is not None:
        host_dt = cur.host_time_s - prev.host_time_s
        if host_dt > 0:
            return host_dt
    return arrival_dt if arrival_dt > 0 else None


def _cpu_util(prev: RawSample, cur: RawSample) -> tuple[float | None, bool]:
    """(utilisation, reset). Idle and iowait are taken together: the kernel may move time
    between them, so iowait alone can go backwards without a reset. Decreases within float
    rounding of the summed counters are no reset."""
    if prev.n_cpus != cur.n_cpus:
        return None, True
    before, after = prev.cpu_seconds_by_mode, cur.cpu_seconds_by_mode
    deltas = {m: after.get(m, 0.0) - before.get(m, 0.0) for m in before.keys() | after.keys()}
    idle = sum(v for m, v in deltas.items() if m in IDLE_MODES)
    busy = sum(v for m, v in deltas.items() if m not in IDLE_MODES)
    tolerance = 1e-9 * (1.0 + sum(before.values()))
    if idle < -tolerance or busy < -tolerance:
        return None, True
    idle, busy = max(idle, 0.0), max(busy, 0.0)
    if idle + busy <= 0:
        return None, False
    return busy / (idle + busy), False


def _rate(prev: Mapping[str, float] | None, cur: Mapping[str, float] | None, dt: float):
    """Bytes/s over the devices present in both samples; None if none is; _RESET if any
    counter decreased."""
    if not prev or not cur:
        return None
    common = prev.keys() & cur.keys()
    if not common:
        return None
    deltas = [cur[d] - prev[d] for d in common]
    return _RESET if min(deltas) < 0 else sum(deltas) / dt


def _memory(sample: RawSample) -> tuple[float | None, float | None]:
    total, avail = sample.mem_total_bytes, sample.mem_available_bytes
    if total is None or avail is None or total <= 0:
        return None, None
    used = min(total, max(0.0, total - avail))
    return used / total, used


def calendar_features(t_unix: float, tz_offset_s: int = 0) -> dict[str, float]:
    """Calendar features of a Unix time in a zone `tz_offset_s` east of UTC: hour_of_day
    (0..24, fractional), day_of_week (0 = Monday .. 6), tod_sin/tod_cos (phase of the day),
    dow_sin/dow_cos (phase of the week, Monday 00:00 = 0) and is_weekend (0 or 1)."""
    local = datetime.fromtimestamp(t_unix, tz=timezone(timedelta(seconds=tz_offset_s)))
    day_s = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond * 1e-6
    dow = local.weekday()
    tod_sin, tod_cos, dow_sin, dow_cos = map(float, calendar_phases(t_unix + tz_offset_s)[0])
    return {"hour_of_day": day_s / 3600, "day_of_week": dow,
            "tod_sin": tod_sin, "tod_cos": tod_cos, "dow_sin": dow_sin, "dow_cos": dow_cos,
            "is_weekend": float(dow >= 5)}
