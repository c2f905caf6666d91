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

Cost: a step's feature row never changes once the step has closed, unless something it
reads arrives later, so each component keeps the rows of its window (:mod:`.online_rows`)
and :meth:`OnlineWindows.window` computes only the rows it lacks, those of every component at
once, with the functions :func:`~.features.step_features` uses (the coarse statistics over
the look-back they read). Rows are dropped where a late input could change them: a track
restart (all of them), a telemetry message (the steps that can hold it; all of them while a
stamp no step can hold is kept), a workload-events snapshot (the steps at or after its stamp;
all of them on the first one) and a setting changed on the object. Each row is, bit for bit,
the one the whole history gives (``test/core/test_online_windows_cache.py``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from itertools import islice

import numpy as np

from rackpower_nodes.core.forecast.features import (
    WindowSpec,
    coarse_tail,
    feature_names,
    feature_rows,
)
from rackpower_nodes.core.forecast.messages import (
    SequenceCheck,
    lost_frames_tolerance_s,
    metrics_vector,
    sample_times,
    samples_power,
    stamp_unix,
)
from rackpower_nodes.core.forecast.online_rows import EventRows, Rows, Track, held_until, step_of
from rackpower_nodes.core.forecast.series import (
    GRID_EPS,
    TELEMETRY,
    TELEMETRY_MAX_AGE_S,
    DatasetError,
    hold_telemetry,
    step_index,
    step_times,
    telemetry_index,
)
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import WorkloadEvents

__all__ = ["EVENTS_STALE_S", "OnlineWindows"]

EVENTS_STALE_S = 30.0


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
        self._tracks = {c: Track(spec.warmup_steps) for c in self.components}
        self._tele: dict[str, list[tuple[float, np.ndarray]]] = {c: [] for c in self.components}
        self._sequence = SequenceCheck(lost_frames_tolerance_s(spec.step_s))
        self.names = feature_names(spec)
        if not events_stale_s > 0:
            raise DatasetError(f"events_stale_s={events_stale_s!r}, expected > 0 s")
        self.events_stale_s = float(events_stale_s)
        self._snapshots: list[WorkloadEvents] = []     # by stamp; empty: none seen yet
        self._rows_key: tuple | None = None
        self._rows: dict[str, Rows] = {}
        self._tele_index: dict[str, tuple[list[int], np.ndarray]] = {}   # telemetry_index
        self._events: dict[str, EventRows] = {}
        self._odd_stamps: set[str] = set()             # components with telemetry stamps
        #                                                that hold_telemetry cannot place

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
        # steps at or after its stamp may read it; the first one replaces the schedule
        lo = step_of(events.stamp_unix, self.spec.step_s, -1) if len(snaps) > 1 else None
        self._drop_rows(lo, None)
        # keep what a window can still read: those since the oldest step a window holds,
        # and the newest one before it
        horizon = snaps[-1].stamp_unix - self._keep_s
        older = [i for i, s in enumerate(snaps) if s.stamp_unix <= horizon]
        if older and older[-1]:
            del snaps[:older[-1]]
            # steps before the oldest one kept read those deleted
            self._drop_rows(None, step_of(snaps[0].stamp_unix, self.spec.step_s, 1))

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
        values = np.array(values_6, dtype=np.float64).reshape(-1)      # a copy: it is kept
        if values.shape != (len(TELEMETRY),):
            raise DatasetError(f"telemetry of {host_id!r}: {values.size} values, expected "
                               f"{len(TELEMETRY)} ({', '.join(TELEMETRY)})")
        log = self._tele.get(host_id)
        if log is None:
            return
        t = float(t_unix)
        log.append((t, values))
        self._tele_index.pop(host_id, None)
        rows, lo = self._rows.get(host_id), step_of(t, self.spec.step_s)
        if lo is None:                      # held by no step, or by any: no rows kept
            self._odd_stamps.add(host_id)
        if rows is not None:                # the steps that may hold this message
            rows.drop(lo, held_until(lo, self.telemetry_max_age_s, self.spec.step_s))
        if len(log) > 64 and log[0][0] < t_unix - 2 * self._keep_s:
            log[:] = [m for m in log if m[0] >= t_unix - self._keep_s]
            odd = host_id in self._odd_stamps
            if odd and all(step_of(m[0], self.spec.step_s) is not None for m in log):
                self._odd_stamps.discard(host_id)
            if rows is not None:            # the steps that may have held those deleted
                rows.drop(None, None if odd else
                          held_until(step_of(t_unix - self._keep_s, self.spec.step_s),
                                     self.telemetry_max_age_s, self.spec.step_s))

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
        if features:
            self._check_rows_key()
        for i, name in enumerate(self.components):
            track = self._tracks[name]
            if track.cur is None:
                continue
            age[i] = t_unix - track.cur * spec.step_s
            if track.steps:
                last[i] = np.float32(np.float64(track.steps[-1]) / self.max_w[i])
            if len(track.steps) < spec.warmup_steps or age[i] > self.stale_s:
                continue
            ready[i] = True
        if features and ready.any():
            for i, rows in self._window_rows(np.flatnonzero(ready)):
                x[i] = rows
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

    def _window_rows(self, ready: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(i, rows)`` the (history, F) rows of each ready component's window: those known,
        and the others, from the first one missing on, computed for all at once."""
        out, todo = [], []
        for i in ready.tolist():
            name = self.components[i]
            track, rows = self._tracks[name], self._rows[name]
            rows.move(track.segment, track.cur)
            if name in self._odd_stamps:
                rows.ok[:] = False
            out.append((i, rows.x))
            if not rows.ok.all():
                todo.append((i, name, track, rows, int(np.argmin(rows.ok))))
        if todo:
            new = self._features(todo)
            at = 0
            for *_, rows, a in todo:
                rows.x[a:] = new[at:at + len(rows.ok) - a]
                rows.ok[a:] = True
                at += len(rows.ok) - a
        return out

    def _features(self, todo) -> np.ndarray:
        """The features of the steps from ``a`` on of each ``(i, name, track, rows, a)`` in
        ``todo``, one component after the other: each row what :func:`step_features` gives
        it over the whole history (each of its columns reads that step, its coarse look-back
        and the messages held for it alone)."""
        spec, history = self.spec, self.spec.history_steps
        back = max(spec.coarse, default=1) - 1       # the coarse statistics' look-back
        parts: list[list[np.ndarray]] = [[], [], [], [], [], []]
        for i, name, track, _, a in todo:
            count, held = history - a, len(track.steps)
            lo = max(held - count - back, 0)
            p = np.fromiter(islice(track.steps, lo, None), np.float32, held - lo)
            p = p.astype(np.float64) / self.max_w[i]
            new = track.cur - count                   # the first step computed
            times = step_times(new, count, spec.step_s)
            spec_cols = np.array([[self.idle_w[i] / self.max_w[i], self.max_w[i] / 1000.0]])
            events = self._events[name].rows(self._snapshots, self.schedule, name, new,
                                             count, spec.step_s, self.events_stale_s)
            for part, value in zip(parts, (p[-count:], coarse_tail(p, spec.coarse, count),
                                           self._held(name, track, new), times, events,
                                           np.repeat(spec_cols, count, axis=0)), strict=True):
                part.append(value)
        power, coarse, tel, times, events, spec_cols = (np.concatenate(v) for v in parts)
        tz = self.schedule.tz_offset_s if self.schedule is not None else 0.0
        return feature_rows(power, coarse, tel.astype(np.float64), times + tz, events,
                            spec_cols)

    def _held(self, name: str, track: Track, new: int) -> np.ndarray:
        """(cur - new, 6) float32 telemetry held for steps ``new .. cur - 1`` of ``track``."""
        log, steps = self._tele[name], np.arange(new, track.cur)
        if name in self._odd_stamps:
            # a stamp hold_telemetry cannot place: what its search finds depends on every
            # step it is asked about; ask about all of them, as for the whole history
            first = track.cur - len(track.steps)
            return hold_telemetry(np.arange(first, track.cur), [m[0] for m in log],
                                  [m[1] for m in log], self.spec.step_s,
                                  self.telemetry_max_age_s)[new - first:]
        index = self._tele_index.get(name)
        if index is None:
            bins, values = telemetry_index([m[0] for m in log], [m[1] for m in log],
                                           self.spec.step_s)
            index = self._tele_index[name] = (bins.tolist(), values)
        # hold_indexed step by step: the newest message of a step at or before each (the
        # same search in the same sorted steps), NaN when none or older than the max age
        bins, values = index
        max_age = math.floor(self.telemetry_max_age_s / self.spec.step_s + GRID_EPS)
        out = np.full((len(steps), len(TELEMETRY)), np.nan, np.float32)
        for r, step in enumerate(steps.tolist()):
            at = bisect_right(bins, step) - 1
            if at >= 0 and step - bins[at] <= max_age:
                out[r] = values[at]
        return out

    def _check_rows_key(self) -> None:
        """Start the rows afresh when what every row reads is no longer what it was."""
        key = (self.spec, self.schedule, self.telemetry_max_age_s, self.events_stale_s,
               self.idle_w.tobytes(), self.max_w.tobytes(), len(self.names))
        if key != self._rows_key:
            self._rows_key = key
            self._rows = {c: Rows(self.spec.history_steps, len(self.names))
                          for c in self.components}
            self._tele_index.clear()
            self._events = {c: EventRows() for c in self.components}

    def _drop_rows(self, lo: int | None, hi: int | None) -> None:
        """Forget every component's rows and event rows of global steps ``lo .. hi`` (None:
        no bound)."""
        for rows in self._rows.values():
            rows.drop(lo, hi)
        for events in self._events.values():
            events.drop(lo, hi)

    def _feed(self, track: Track, t: np.ndarray, p: np.ndarray) -> None:
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

    def _feed_runs(self, track: Track, t: np.ndarray, p: np.ndarray, runs) -> None:
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
