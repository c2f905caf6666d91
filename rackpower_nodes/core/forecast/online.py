"""Live model inputs: :class:`OnlineWindows`, the twin of :func:`~.features.build_windows`.

The predictor feeds it ``PowerSamples`` and ``HostTelemetry`` messages (or plain arrays) as
they arrive; it keeps each component's step means on the global grid (:mod:`.series`) and
builds, at any time, the same ``x`` that :func:`~.features.build_windows` cuts from a
recording of the same samples. Gaps, back-jumps and lost frames restart a component's history,
exactly as they cut segments in training data. No rclpy import; messages are read through
their attributes (:mod:`.messages`).

Workload events: once a :class:`~rackpower_nodes.core.workload_events.WorkloadEvents`
snapshot has been pushed (:meth:`OnlineWindows.push_workload_events`), a step's event features
come from the newest snapshot stamped at or before the step's start; a snapshot older than
``events_stale_s`` (30 s by default) is treated as unknown, the "no job" row, never as a
schedule (:func:`~.event_windows.snapshot_rows`). Before the first snapshot they come from the
schedule, as in training data without a job log.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.core.forecast.event_windows import snapshot_rows
from rackpower_nodes.core.forecast.features import WindowSpec, feature_names, step_features
from rackpower_nodes.core.forecast.messages import (
    SequenceCheck,
    lost_frames_tolerance_s,
    metrics_vector,
    sample_times,
    samples_power,
    stamp_unix,
)
from rackpower_nodes.core.forecast.series import (
    TELEMETRY,
    TELEMETRY_MAX_AGE_S,
    DatasetError,
    hold_telemetry,
    step_index,
    step_times,
)
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import WorkloadEvents

__all__ = ["EVENTS_STALE_S", "OnlineWindows"]

EVENTS_STALE_S = 30.0


class _Track:
    """Live step means of one component: the open step and up to ``keep`` closed ones."""

    def __init__(self, keep: int):
        self.steps: deque[np.float32] = deque(maxlen=keep)
        self.cut()

    def cut(self) -> None:
        """Forget everything: the next sample starts a new segment."""
        self.steps.clear()
        self.cur: int | None = None
        self.total, self.count, self.last_t = 0.0, 0, None

    def add(self, step: int, total: float, count: int) -> None:
        if self.cur is not None and step != self.cur:
            mean = np.float32(self.total / self.count)
            self.steps.extend([mean] * min(step - self.cur, self.steps.maxlen))
            self.cur = None
        if self.cur is None:
            self.cur, self.total, self.count = step, 0.0, 0
        self.total += total
        self.count += count


class OnlineWindows:
    """Live model inputs, identical to :func:`build_windows` for the same samples.

    Feed power samples (:meth:`push_samples`, :meth:`push_power_block`, :meth:`push_power`)
    and host telemetry (:meth:`push_host_telemetry`, :meth:`push_telemetry`); a step closes
    when a sample of a later step arrives. :meth:`window` returns each component's window
    ending at its last closed step. Gaps and back-jumps (as in
    :func:`~.series.split_on_gaps`) and lost frames restart a component's history.
    Workload-event snapshots (:meth:`push_workload_events`) replace the schedule as the
    source of the event features; one older than ``events_stale_s`` s means "no job".
    """

    def __init__(self, spec: WindowSpec, components: Sequence[str], idle_w: Sequence[float],
                 max_w: Sequence[float], schedule: WorkloadSchedule | None = None, *,
                 stale_s: float = 1.0, max_gap_steps: float = 1.5,
                 telemetry_max_age_s: float = TELEMETRY_MAX_AGE_S,
                 events_stale_s: float = EVENTS_STALE_S):
        self.spec, self.components = spec, list(components)
        self.idle_w = np.asarray(idle_w, dtype=np.float64)
        self.max_w = np.asarray(max_w, dtype=np.float64)
        n = len(self.components)
        if self.idle_w.shape != (n,) or self.max_w.shape != (n,) or not (self.max_w > 0).all():
            raise DatasetError(f"OnlineWindows: {n} components with idle_w {idle_w!r} and "
                               f"max_w {max_w!r}, expected one each, max_w > 0 W")
        self.schedule, self.stale_s = schedule, float(stale_s)
        self.gap_s = max_gap_steps * spec.step_s
        self.telemetry_max_age_s = float(telemetry_max_age_s)
        self._keep_s = (spec.warmup_steps + 2) * spec.step_s + self.telemetry_max_age_s + 1.0
        self._tracks = {c: _Track(spec.warmup_steps) for c in self.components}
        self._tele: dict[str, list[tuple[float, np.ndarray]]] = {c: [] for c in self.components}
        self._sequence = SequenceCheck(lost_frames_tolerance_s(spec.step_s))
        self.names = feature_names(spec)
        if not events_stale_s > 0:
            raise DatasetError(f"events_stale_s={events_stale_s!r}, expected > 0 s")
        self.events_stale_s = float(events_stale_s)
        self._snapshots: list[WorkloadEvents] = []     # by stamp; empty: none seen yet

    def push_workload_events(self, events: WorkloadEvents) -> None:
        """A scheduler's snapshot (stamped in Unix s); from now on the event features come
        from snapshots, the newest one at or before each step."""
        if not isinstance(events, WorkloadEvents):
            raise DatasetError(f"push_workload_events: {type(events).__name__}, expected "
                               "WorkloadEvents")
        snaps = self._snapshots
        at = len(snaps)
        while at and snaps[at - 1].stamp_unix > events.stamp_unix:
            at -= 1
        snaps.insert(at, events)
        # keep what a window can still read: those since the oldest step a window holds,
        # and the newest one before it
        horizon = snaps[-1].stamp_unix - self._keep_s
        older = [i for i, s in enumerate(snaps) if s.stamp_unix <= horizon]
        if older:
            del snaps[:older[-1]]

    def push_samples(self, msg) -> None:
        """A ``rackpower/msg/PowerSamples``; a loss of more than half a step of frames
        restarts its channels' history."""
        t0, period, ids, power = samples_power(msg)
        if self._sequence.is_break(msg.first_sequence, msg.sample_count, msg.frames_lost,
                                   msg.sample_period_s):
            for name in ids:
                if name in self._tracks:
                    self._tracks[name].cut()
        self.push_power_block(t0, period, ids, power)

    def push_power_block(self, t0_unix: float, sample_period_s: float,
                         component_ids: Sequence[str], power_w) -> None:
        """Samples (components, samples) in W, sample i at ``t0_unix + i * period`` (Unix s);
        ids that are not tracked are ignored."""
        power = np.asarray(power_w, dtype=np.float64)
        if power.ndim != 2 or power.shape[0] != len(component_ids):
            raise DatasetError(f"power_w shape {power.shape}, expected ({len(component_ids)}, "
                               "samples)")
        t = sample_times(t0_unix, sample_period_s, power.shape[1])
        rows = [(self._tracks[name], row) for name, row in zip(component_ids, power, strict=True)
                if name in self._tracks]
        if not rows or not len(t):
            return
        if np.isfinite(power).all():        # the usual batch: one cut into steps serves all
            runs = self._runs(t)
            for track, row in rows:
                self._feed_runs(track, t, row, runs)
        else:
            for track, row in rows:
                self._feed(track, t, row)

    def push_power(self, t_unix: float, component: str, power_w: float) -> None:
        """One sample (W) of ``component`` at ``t_unix`` (Unix s)."""
        if component in self._tracks:
            self._feed(self._tracks[component], np.array([float(t_unix)]),
                       np.array([float(power_w)]))

    def push_host_telemetry(self, msg) -> None:
        """A ``rackpower/msg/HostTelemetry``: each host's metrics at the header stamp."""
        t = stamp_unix(msg.header.stamp)
        for host in msg.hosts:
            self.push_telemetry(t, host.host_id, metrics_vector(host))

    def push_telemetry(self, t_unix: float, host_id: str, values_6: Sequence[float]) -> None:
        """:data:`~.series.TELEMETRY` of ``host_id`` (a component id) at ``t_unix``."""
        values = np.asarray(values_6, dtype=np.float64).reshape(-1)
        if values.shape != (len(TELEMETRY),):
            raise DatasetError(f"telemetry of {host_id!r}: {values.size} values, expected "
                               f"{len(TELEMETRY)} ({', '.join(TELEMETRY)})")
        log = self._tele.get(host_id)
        if log is None:
            return
        log.append((float(t_unix), values))
        if len(log) > 64 and log[0][0] < t_unix - 2 * self._keep_s:
            log[:] = [m for m in log if m[0] >= t_unix - self._keep_s]

    def window(self, t_unix: float, features: bool = True
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Inputs at ``t_unix`` (Unix s): ``x`` (components, history, F) float32 (zeros where
        not ready, and everywhere with ``features`` False: nothing in service reads them, so
        they are not computed), ``last`` (components,) normalised power of the last closed
        step (NaN when none), ``ready`` (components,) bool, ``age_s`` (components,) s from
        the end of the last closed step to ``t_unix`` (inf when none). Ready needs
        ``warmup_steps`` closed steps since the last restart and ``age_s <= stale_s``."""
        spec, n = self.spec, len(self.components)
        x = np.zeros((n, spec.history_steps, len(self.names)), np.float32)
        last = np.full(n, np.nan, np.float32)
        ready, age = np.zeros(n, bool), np.full(n, np.inf)
        for i, name in enumerate(self.components):
            track = self._tracks[name]
            if track.cur is None:
                continue
            age[i] = t_unix - track.cur * spec.step_s
            if track.steps:
                last[i] = np.float32(np.float64(track.steps[-1]) / self.max_w[i])
            if len(track.steps) < spec.warmup_steps or age[i] > self.stale_s:
                continue
            if features:
                x[i] = self._features(i, name, track)[-spec.history_steps:]
            ready[i] = True
        return x, last, ready, age

    def last_steps(self) -> np.ndarray:
        """(components,) int64 global index of each component's newest closed step, -1 when
        it has none."""
        return np.array([t.cur - 1 if t.cur is not None and t.steps else -1
                         for t in (self._tracks[c] for c in self.components)], np.int64)

    def closed_steps(self, since: int | None, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The closed steps after global step ``since`` (None: any), at most the newest
        ``limit``: ``steps`` (k,) int64 ascending and ``means`` (k, components) float64 step
        means normalised by max_w, NaN where a component has no such step."""
        newest = self.last_steps()
        if (newest < 0).all():
            return np.zeros(0, np.int64), np.zeros((0, len(self.components)))
        top = int(newest.max())
        oldest = min(t.cur - len(t.steps) for t in self._tracks.values() if t.cur is not None
                     and t.steps)
        low = max(top - limit + 1, oldest, -1 if since is None else since + 1)
        steps = np.arange(low, top + 1, dtype=np.int64)
        means = np.full((len(steps), len(self.components)), np.nan)
        for i, name in enumerate(self.components):
            track = self._tracks[name]
            if newest[i] < low:
                continue
            first = track.cur - len(track.steps)
            lo = max(low, first)
            held = np.array(track.steps, np.float64)[lo - first:]
            means[lo - low:lo - low + len(held), i] = held / self.max_w[i]
        return steps, means

    def _features(self, i: int, name: str, track: _Track) -> np.ndarray:
        first = track.cur - len(track.steps)
        steps = first + np.arange(len(track.steps))
        log = self._tele[name]
        tel = hold_telemetry(steps, [m[0] for m in log], [m[1] for m in log], self.spec.step_s,
                             self.telemetry_max_age_s)
        events = None
        if self._snapshots:
            events = snapshot_rows(self._snapshots, name,
                                   step_times(first, len(steps), self.spec.step_s),
                                   self.events_stale_s)
        return step_features(np.array(track.steps, np.float32), tel, first, self.spec,
                             self.idle_w[i], self.max_w[i], name, self.schedule, events)

    def _feed(self, track: _Track, t: np.ndarray, p: np.ndarray) -> None:
        ok = np.isfinite(p)
        t, p = t[ok], p[ok]
        if not len(t):
            return
        self._feed_runs(track, t, p, self._runs(t))

    def _runs(self, t: np.ndarray) -> list[tuple[int, int, list[int], np.ndarray, list[int]]]:
        """The runs of sample times ``t`` (s, non-empty) between gaps and back-jumps:
        ``(start, end, steps, first, counts)``, the run's samples ``t[start:end]`` falling in
        global ``steps``, the first of each at ``start + first``, ``counts`` of them."""
        dt = np.diff(t)
        cuts = np.flatnonzero((dt > self.gap_s) | ~(dt > 0)) + 1
        runs = []
        for a, b in zip([0, *cuts], [*cuts, len(t)], strict=True):
            bins = step_index(t[a:b], self.spec.step_s)
            first = np.flatnonzero(np.diff(bins, prepend=bins[0] - 1))
            counts = np.diff(np.append(first, b - a))
            runs.append((a, b, bins[first].tolist(), first, counts.tolist()))
        return runs

    def _feed_runs(self, track: _Track, t: np.ndarray, p: np.ndarray, runs) -> None:
        """Samples ``p`` (W, all finite) at times ``t`` cut as :meth:`_runs` cut ``t``."""
        if track.last_t is not None and not 0 < t[0] - track.last_t <= self.gap_s:
            track.cut()
        for a, b, steps, first, counts in runs:
            if a:
                track.cut()
            sums = np.add.reduceat(p[a:b], first).tolist()
            for step, total, count in zip(steps, sums, counts, strict=True):
                track.add(step, total, count)
        track.last_t = float(t[-1])
