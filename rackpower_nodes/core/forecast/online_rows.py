"""The state :class:`~.online.OnlineWindows` keeps per component: :class:`Track`, the step
means of its open segment; :class:`Rows`, the feature rows of its window already computed
(a row is kept until something it reads arrives late); :class:`EventRows`, its workload-event
features computed a block of steps ahead. No rclpy, no torch."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from rackpower_nodes.core.forecast.event_windows import event_rows, snapshot_rows
from rackpower_nodes.core.forecast.series import GRID_EPS, step_times
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import WorkloadEvents

__all__ = ["EventRows", "Rows", "Track", "held_until", "step_of"]


class Track:
    """Live step means of one component: the open step and up to ``keep`` closed ones."""

    def __init__(self, keep: int):
        self.steps: deque[np.float32] = deque(maxlen=keep)
        self.segment = 0                # counts the cuts: rows of another segment are void
        self.cut()

    def cut(self) -> None:
        """Forget everything: the next sample starts a new segment."""
        self.segment += 1
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


class Rows:
    """Feature rows (history, F) float32 of one component's steps ``end - history .. end - 1``
    (global), ``ok`` where a row is known; rows of segment ``segment`` of its track."""

    def __init__(self, history: int, width: int):
        self.x = np.zeros((history, width), np.float32)
        self.ok = np.zeros(history, bool)
        self.segment, self.end = 0, 0

    def move(self, segment: int, end: int) -> None:
        """Hold steps ``end - history .. end - 1`` of ``segment``: the rows already known of
        those steps stay, the others are not known."""
        shift = end - self.end
        if segment != self.segment or not 0 <= shift < len(self.ok):
            self.ok[:] = False
        elif shift:
            self.x[:-shift] = self.x[shift:]
            self.ok[:-shift] = self.ok[shift:]
            self.ok[-shift:] = False
        self.segment, self.end = segment, end

    def drop(self, lo: int | None, hi: int | None) -> None:
        """Forget the rows of global steps ``lo .. hi`` (None: no bound)."""
        first = self.end - len(self.ok)
        a = 0 if lo is None else min(max(lo - first, 0), len(self.ok))
        b = len(self.ok) if hi is None else min(max(hi - first + 1, 0), len(self.ok))
        self.ok[a:b] = False


class EventRows:
    """One component's event features (:mod:`.event_windows`) of global steps ``first ..``,
    computed ``BLOCK`` steps ahead: a step's row reads the step's time, the schedule and the
    snapshots alone, so it is the same computed with any other steps."""

    BLOCK = 64

    def __init__(self):
        self.first, self.x = 0, np.zeros((0, 6))

    def rows(self, snapshots: list[WorkloadEvents], schedule: WorkloadSchedule | None,
             name: str, first: int, count: int, step_s: float,
             events_stale_s: float) -> np.ndarray:
        """(count, 6) rows of steps ``first .. first + count - 1``: from ``snapshots`` once
        there is one, else from ``schedule``."""
        at = first - self.first
        if not (0 <= at and at + count <= len(self.x)):
            n = max(count, self.BLOCK)
            times = step_times(first, n, step_s)
            if snapshots:
                self.x = snapshot_rows(snapshots, name, times, events_stale_s)
            else:
                self.x = event_rows(name, times, None, schedule)
            self.first, at = first, 0
        return self.x[at:at + count]

    def drop(self, lo: int | None, hi: int | None) -> None:
        """Forget the rows of steps ``lo .. hi`` (None: no bound), and those after them."""
        end = self.first + len(self.x)
        if (lo is None or lo < end) and (hi is None or hi >= self.first):
            keep = 0 if lo is None else max(lo - self.first, 0)
            self.x = self.x[:keep]


def step_of(t_unix: float, step_s: float, margin: int = 0) -> int | None:
    """The global step of ``t_unix`` plus ``margin`` steps; None when it has none that
    :func:`~.series.step_index` gives as it should (not finite, or past int64)."""
    step = t_unix / step_s + GRID_EPS
    if not abs(step) < 2.0 ** 62:
        return None
    return math.floor(step) + margin


def held_until(step: int | None, max_age_s: float, step_s: float) -> int | None:
    """The last step (one more, to be safe) that can hold a telemetry message of global
    ``step`` (:func:`~.series.hold_telemetry` with ``max_age_s``); None: no bound."""
    age = max_age_s / step_s + GRID_EPS
    if step is None or not math.isfinite(age):
        return None
    return step + math.floor(age) + 1
