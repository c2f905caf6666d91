"""The live graph's messages as :class:`HealthFrame` rows: `HealthStream`, a pure accumulator.

The `health_monitor` node hands it what arrives (the sensor board's samples, host telemetry,
the scheduler's snapshots, optionally an independent meter) and, once a second, asks for the
seconds that are complete. Row ``i`` of a popped frame covers ``[t, t + 1)`` for a whole Unix
second ``t``:

- board fields: mean, min, max and standard deviation of the channel's instantaneous power
  (current x the channel's voltage, W) over the samples stamped in that second; NaN for a
  component without a sample in it. A second in which no component has a sample is absent
  (a gap, never zeros);
- ``ref_w``: the mean of the reference readings stamped in that second (NaN: none);
- ``psu_in_w``, ``psu_out_w``: the PSUs' own meters (summed over a component's PSUs, as the
  BMC reports them) in the second a reading was taken, NaN in the others: the form of the
  simulator's frames (one reading per poll, never held over the seconds between), on which
  the learned PSU curves were fitted;
- ``util``, ``disk_bps``, ``net_bps``: the host's newest telemetry stamped before the second
  ends and at most ``telemetry_hold_s`` old then; NaN when the host was down or unknown;
- ``job_running``: 1.0 / 0.0 from the newest scheduler snapshot at most ``jobs_hold_s`` old
  (for the components the scheduler speaks for: every one that is not a switch); NaN
  otherwise. ``app_rate`` is NaN (the graph has no served request rate yet).

A second is complete once ``now >= t + 1 + late_s``; samples for a second already popped are
dropped and counted in :attr:`HealthStream.late_dropped`. Channels that are not components
are ignored. Times are Unix seconds.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from rackpower_nodes.core.health.types import HealthFrame

__all__ = ["HealthStream", "HealthStreamError"]

_TELEMETRY = ("util", "disk_bps", "net_bps")


class HealthStreamError(ValueError):
    """Input the stream cannot use (shapes, times); the message names the argument."""


class _Second:
    """Running sums of one second: board power moments per component, reference sums."""

    __slots__ = ("count", "max", "min", "psu_in", "psu_n", "psu_out", "ref_n", "ref_sum",
                 "sum", "sumsq")

    def __init__(self, m: int):
        self.count = np.zeros(m)
        self.sum, self.sumsq = np.zeros(m), np.zeros(m)
        self.min, self.max = np.full(m, np.inf), np.full(m, -np.inf)
        self.ref_sum, self.ref_n = np.zeros(m), np.zeros(m)
        self.psu_in, self.psu_out, self.psu_n = np.zeros(m), np.zeros(m), np.zeros(m)


class HealthStream:
    """Accumulates messages into per-second rows of the components ``names`` (``kinds``:
    server, switch, storage)."""

    def __init__(self, names: Sequence[str], kinds: Sequence[str], late_s: float = 0.5,
                 telemetry_hold_s: float = 5.0, jobs_hold_s: float = 30.0):
        if len(names) != len(kinds) or not names:
            raise HealthStreamError(f"names ({len(names)}) and kinds ({len(kinds)}): expected "
                                    "the same number, at least one")
        if not (late_s >= 0 and telemetry_hold_s > 0 and jobs_hold_s > 0):
            raise HealthStreamError(f"late_s={late_s}, telemetry_hold_s={telemetry_hold_s}, "
                                    f"jobs_hold_s={jobs_hold_s}: expected >= 0, > 0, > 0")
        self.names, self.kinds = tuple(names), tuple(kinds)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._spoken = np.array([k != "switch" for k in self.kinds])
        self.late_s, self.telemetry_hold_s, self.jobs_hold_s = late_s, telemetry_hold_s, \
            jobs_hold_s
        self._seconds: dict[int, _Second] = {}
        self._popped_until = -math.inf          # seconds below this are out
        self._telemetry: deque[tuple[float, np.ndarray]] = deque()     # (t, (3, m))
        self._jobs: deque[tuple[float, np.ndarray]] = deque()          # (t, (m,))
        m = len(self.names)
        self.last_sample_unix = np.full(m, np.nan)    # newest sample per component
        self.late_dropped = 0

    # -- input ------------------------------------------------------------------------------

    def push_samples(self, t0_unix: float, period_s: float, channel_ids: Sequence[str],
                     current_a, voltage_v) -> None:
        """A batch: ``current_a`` (channels, samples) A, sample i of each channel at
        ``t0_unix + i * period_s``; ``voltage_v`` (channels,) V."""
        current = np.asarray(current_a, dtype=np.float64)
        volts = np.asarray(voltage_v, dtype=np.float64).reshape(-1)
        if current.ndim != 2 or current.shape[0] != len(channel_ids) \
                or volts.shape != (len(channel_ids),):
            raise HealthStreamError(
                f"current_a {current.shape}, voltage_v {volts.shape}: expected "
                f"({len(channel_ids)}, samples) and ({len(channel_ids)},) for the channels")
        if not (math.isfinite(t0_unix) and period_s > 0):
            raise HealthStreamError(f"t0_unix={t0_unix}, period_s={period_s}: expected a "
                                    "finite time and a period > 0")
        rows = [(k, self._index[c]) for k, c in enumerate(channel_ids) if c in self._index]
        if not rows or current.shape[1] == 0:
            return
        src, dst = (np.array(x) for x in zip(*rows))
        power = current[src] * volts[src, None]                    # (k, samples) W
        t = t0_unix + period_s * np.arange(current.shape[1])
        sec = np.floor(t).astype(np.int64)
        for s in np.unique(sec):
            if s < self._popped_until:
                self.late_dropped += int(np.sum(sec == s)) * len(dst)
                continue
            self._add_power(int(s), dst, power[:, sec == s])
        seen = np.isfinite(power).any(axis=1)
        self.last_sample_unix[dst[seen]] = np.fmax(self.last_sample_unix[dst[seen]], t[-1])

    def _add_power(self, s: int, dst: np.ndarray, p: np.ndarray) -> None:
        acc = self._seconds.get(s)
        if acc is None:
            acc = self._seconds[s] = _Second(len(self.names))
        ok = np.isfinite(p)
        n = ok.sum(axis=1)
        if not n.any():
            return
        z = np.where(ok, p, 0.0)
        acc.count[dst] += n
        acc.sum[dst] += z.sum(axis=1)
        acc.sumsq[dst] += (z * z).sum(axis=1)
        acc.min[dst] = np.fmin(acc.min[dst], np.where(ok, p, np.inf).min(axis=1))
        acc.max[dst] = np.fmax(acc.max[dst], np.where(ok, p, -np.inf).max(axis=1))

    def push_reference(self, t_unix: float, power_w: Mapping[str, float]) -> None:
        """An independent meter's readings (component -> W) at ``t_unix``."""
        self._add_readings(t_unix, {c: (w,) for c, w in power_w.items()}, ("ref_sum",),
                           "ref_n")

    def push_psu(self, t_unix: float, power_w: Mapping[str, tuple[float, float]]) -> None:
        """The PSUs' own meters read at ``t_unix``: component -> (input W, output W), each
        summed over the component's PSUs. A second with several readings gets their mean."""
        self._add_readings(t_unix, power_w, ("psu_in", "psu_out"), "psu_n")

    def _add_readings(self, t_unix: float, readings: Mapping[str, tuple[float, ...]],
                      sums: tuple[str, ...], count: str) -> None:
        """Meter readings at ``t_unix`` (component -> values, W) added to the second's
        ``sums`` fields (one per value) and its ``count``; a component whose values are not
        all finite, or unknown, is skipped; a second already popped counts as late."""
        s = math.floor(t_unix)
        if s < self._popped_until:
            self.late_dropped += 1
            return
        acc = self._seconds.get(s)
        for name, values in readings.items():
            i = self._index.get(name)
            if i is None or not all(math.isfinite(v) for v in values):
                continue
            if acc is None:
                acc = self._seconds[s] = _Second(len(self.names))
            for field, v in zip(sums, values):
                getattr(acc, field)[i] += v
            getattr(acc, count)[i] += 1

    def push_telemetry(self, t_unix: float,
                       hosts: Mapping[str, tuple[float, float, float, bool]]) -> None:
        """One poll of host telemetry: host -> (util 0..1, disk B/s, net B/s, up)."""
        vals = np.full((3, len(self.names)), np.nan)
        for host, (util, disk, net, up) in hosts.items():
            i = self._index.get(host)
            if i is not None and up:
                vals[:, i] = (util, disk, net)
        self._append(self._telemetry, t_unix, vals)

    def push_jobs(self, t_unix: float, running_hosts: Iterable[str]) -> None:
        """A scheduler snapshot at ``t_unix``: the hosts a job runs on now."""
        running = np.zeros(len(self.names))
        for host in running_hosts:
            i = self._index.get(host)
            if i is not None:
                running[i] = 1.0
        self._append(self._jobs, t_unix, np.where(self._spoken, running, np.nan))

    @staticmethod
    def _append(history: deque, t_unix: float, vals: np.ndarray) -> None:
        if not math.isfinite(t_unix):
            raise HealthStreamError(f"t_unix={t_unix}: expected a finite Unix time")
        if history and t_unix < history[-1][0]:
            return                                      # older than the newest: ignored
        history.append((t_unix, vals))

    # -- output -----------------------------------------------------------------------------

    def pending(self) -> int:
        """Seconds accumulated and not yet popped."""
        return len(self._seconds)

    def pop(self, now_unix: float) -> HealthFrame | None:
        """The complete seconds (``t + 1 + late_s <= now_unix``) as a frame, oldest first;
        None when there are none. They are forgotten here."""
        done = sorted(s for s in self._seconds if s + 1 + self.late_s <= now_unix)
        if not done:
            return None
        self._popped_until = max(self._popped_until, done[-1] + 1)
        accs = [self._seconds.pop(s) for s in done]
        t = np.array(done, dtype=np.float64)
        count = np.stack([a.count for a in accs])
        with np.errstate(invalid="ignore", divide="ignore"):
            has = count > 0
            mean = np.where(has, np.stack([a.sum for a in accs]) / count, np.nan)
            var = np.stack([a.sumsq for a in accs]) / count - mean * mean
            std = np.where(has, np.sqrt(np.clip(var, 0.0, None)), np.nan)
            ref_n = np.stack([a.ref_n for a in accs])
            ref = np.where(ref_n > 0, np.stack([a.ref_sum for a in accs]) / ref_n, np.nan)
            psu_n = np.stack([a.psu_n for a in accs])
            psu_in = np.where(psu_n > 0, np.stack([a.psu_in for a in accs]) / psu_n, np.nan)
            psu_out = np.where(psu_n > 0, np.stack([a.psu_out for a in accs]) / psu_n, np.nan)
        lo = np.where(has, np.stack([a.min for a in accs]), np.nan)
        hi = np.where(has, np.stack([a.max for a in accs]), np.nan)
        keep = has.any(axis=1)          # a second with only meter readings is no row
        tel = self._held(self._telemetry, t, self.telemetry_hold_s, (3, len(self.names)))
        jobs = self._held(self._jobs, t, self.jobs_hold_s, (len(self.names),))
        self._forget(now_unix)
        nan = np.full(count.shape, np.nan)
        frame = HealthFrame(t, self.names, self.kinds, mean, lo, hi, std, ref, tel[:, 0],
                            tel[:, 1], tel[:, 2], nan, jobs, psu_in, psu_out)
        idx = np.flatnonzero(keep)
        if not len(idx):
            return None
        return frame if len(idx) == len(t) else frame.select(idx)

    @staticmethod
    def _held(history: deque, t: np.ndarray, hold_s: float, shape: tuple) -> np.ndarray:
        """Per row, the newest entry stamped before the row's second ends and at most
        ``hold_s`` old then; NaN rows where there is none."""
        out = np.full((len(t), *shape), np.nan)
        if not history:
            return out
        stamps = np.array([h[0] for h in history])
        ends = t + 1.0
        pos = np.searchsorted(stamps, ends, side="left") - 1
        for r, p in enumerate(pos):
            if p >= 0 and ends[r] - stamps[p] <= hold_s:
                out[r] = history[p][1]
        return out

    def _forget(self, now_unix: float) -> None:
        """Keep the history a later second can still use: one entry older than the hold."""
        for history, hold in ((self._telemetry, self.telemetry_hold_s),
                              (self._jobs, self.jobs_hold_s)):
            while len(history) > 1 and history[1][0] < now_unix - hold - 2 * (1 + self.late_s):
                history.popleft()
