"""Off-peak retraining, part 6: data judged faulty stays out of the training and held-out sets.

A component the health model judged faulty (a failing PSU, a wearing fan, a broken sensor
channel) draws, or seems to draw, what a healthy one would not; a model retrained on it would
learn the fault as normal. So:

- :class:`FaultTracker` turns the health model's per-component states (``ComponentHealth``)
  into :class:`~rackpower_nodes.core.health.types.FlaggedInterval` s: an interval opens when
  a component enters ``fault`` (start = the verdict's ``since_unix``, when the evidence began)
  and closes when it is back to ``ok`` (``watch`` after ``fault`` keeps it open); end = inf
  while still faulty. Sensor faults count the same: the recorded power is wrong then. It keeps
  only intervals that end within ``keep_s`` of now, at most ``max_per_component`` each; the
  node saves them (:func:`save_flags`, :func:`load_flags`, :meth:`FaultTracker.restore`) so a
  restart does not forget a fault that is over.
- :func:`exclude_flagged` drops every window of a component whose inputs or targets overlap
  one of its intervals widened by ``margin_s`` before the start (the evidence starts before
  the alarm), and returns a summary for the model's metadata: each interval with its cause
  and the windows it removed, and per component the seconds and windows excluded and whether
  the whole of its data was flagged.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rackpower_nodes.core.health.types import SENSOR_FAULTS, FlaggedInterval
from rackpower_nodes.core.retrain.policy import RetrainError

__all__ = ["MARGIN_S", "FaultTracker", "exclude_flagged", "flags_from_request", "load_flags",
           "save_flags"]

#: default widening of a flagged interval before its start, s
MARGIN_S = 900.0


class FaultTracker:
    """Per component, the intervals where its health state was ``fault`` (see module doc).

    ``keep_s`` (s): closed intervals that ended more than this before now are dropped (the
    retrain span); ``max_per_component``: the newest ones kept when a component flaps.
    """

    def __init__(self, keep_s: float = 86400.0, max_per_component: int = 64) -> None:
        if not keep_s > 0 or max_per_component < 1:
            raise RetrainError(f"keep_s={keep_s!r} (> 0 s), max_per_component="
                               f"{max_per_component!r} (>= 1) expected")
        self.keep_s, self.max_per_component = float(keep_s), int(max_per_component)
        self._closed: dict[str, list[FlaggedInterval]] = {}
        self._open: dict[str, FlaggedInterval] = {}

    def update(self, component: str, state: str, cause: str, since_unix: float,
               now_unix: float) -> bool:
        """One health report of ``component`` judged up to ``now_unix`` (Unix s); True when
        the intervals changed."""
        before = self.intervals()
        if state == "fault":
            start = since_unix if math.isfinite(since_unix) else now_unix
            old = self._open.get(component)
            if old is not None:
                start = min(start, old.start_unix)
                cause = cause or old.cause
            self._open[component] = FlaggedInterval(component, min(start, now_unix), math.inf,
                                                    cause)
        elif state == "ok" and component in self._open:
            old = self._open.pop(component)
            self._add_closed(FlaggedInterval(component, old.start_unix,
                                             max(now_unix, old.start_unix), old.cause))
        self.prune(now_unix)
        return self.intervals() != before

    def restore(self, flags: Iterable[FlaggedInterval]) -> None:
        """Take back intervals kept earlier (:meth:`intervals`, e.g. saved across a
        restart): open ones (end inf) stay open, closed ones are added in start order."""
        for flag in sorted(flags, key=lambda f: f.start_unix):
            if math.isinf(flag.end_unix):
                self._open[flag.component] = flag
            else:
                self._add_closed(flag)

    def _add_closed(self, flag: FlaggedInterval) -> None:
        items = self._closed.setdefault(flag.component, [])
        if items and flag.start_unix <= items[-1].end_unix and flag.cause == items[-1].cause:
            last = items.pop()                            # flapping: one interval
            flag = FlaggedInterval(flag.component, min(last.start_unix, flag.start_unix),
                                   max(last.end_unix, flag.end_unix), flag.cause)
        items.append(flag)
        del items[:-self.max_per_component]

    def prune(self, now_unix: float) -> None:
        """Drop closed intervals that ended more than ``keep_s`` before ``now_unix``."""
        horizon = now_unix - self.keep_s
        for comp in list(self._closed):
            kept = [f for f in self._closed[comp] if f.end_unix >= horizon]
            if kept:
                self._closed[comp] = kept
            else:
                del self._closed[comp]

    def intervals(self) -> list[FlaggedInterval]:
        """Every interval kept, closed ones first, by component then start."""
        closed = [f for comp in sorted(self._closed) for f in self._closed[comp]]
        return closed + [self._open[c] for c in sorted(self._open)]


def flags_from_request(items: Iterable[Any] | None) -> list[FlaggedInterval]:
    """FlaggedIntervals from a request's ``flagged`` list of dicts (as_dict); RetrainError
    naming the entry and what was wrong."""
    out = []
    for i, d in enumerate(items or ()):
        try:
            flag = FlaggedInterval.from_dict(d)
            if not math.isfinite(flag.start_unix):
                raise ValueError(f"start_unix={flag.start_unix!r}, expected a finite Unix time")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RetrainError(f"flagged[{i}] = {d!r}: {type(exc).__name__}: {exc}; expected "
                               "{component, start_unix, end_unix (null = still), cause}"
                               ) from exc
        out.append(flag)
    return out


def save_flags(path: str | Path, flags: Iterable[FlaggedInterval]) -> None:
    """Write ``flags`` to ``path`` (JSON ``{"intervals": [as_dict...]}``) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"intervals": [f.as_dict() for f in flags]}, indent=1) + "\n")
    os.replace(tmp, path)


def load_flags(path: str | Path) -> list[FlaggedInterval]:
    """The intervals :func:`save_flags` wrote ([] when ``path`` does not exist); RetrainError
    naming the file when it cannot be read."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        items = json.loads(path.read_text())["intervals"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RetrainError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
    try:
        return flags_from_request(items)
    except RetrainError as exc:
        raise RetrainError(f"{path}: {exc}") from exc


def _spans(ws) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) Unix s of each window's input and target steps."""
    spec = ws.spec
    first = ws.t_unix - (spec.warmup_steps - 1) * spec.step_s
    return first, ws.t_unix + (spec.horizon_steps + 1) * spec.step_s


def exclude_flagged(ws, flags: Sequence[FlaggedInterval], margin_s: float = MARGIN_S
                    ) -> tuple[Any, dict]:
    """(kept windows, summary): ``ws`` without the windows of a component that overlap one of
    its ``flags`` widened by ``margin_s`` (s) before its start. The summary's ``intervals``
    are the flags (``as_dict``, plus ``sensor_fault``, ``windows`` excluded by it), its
    ``components`` per flagged component ``seconds`` (of its windows' time range inside its
    widened flags, s), ``windows`` excluded, ``windows_total`` and ``whole_span`` (every window
    flagged); ``whole_span`` lists those components."""
    if not margin_s >= 0:
        raise RetrainError(f"margin_s={margin_s!r}, expected >= 0 s")
    first, last = _spans(ws)
    drop = np.zeros(len(ws), bool)
    intervals, components = [], {}
    for flag in flags:
        rows = np.flatnonzero(ws.component == flag.component)
        lo = flag.start_unix - margin_s
        hit = rows[(last[rows] > lo) & (first[rows] < flag.end_unix)]
        drop[hit] = True
        intervals.append(dict(flag.as_dict(), sensor_fault=flag.cause in SENSOR_FAULTS,
                              margin_s=float(margin_s), windows=int(len(hit))))
    for comp in dict.fromkeys(f.component for f in flags):
        rows = np.flatnonzero(ws.component == comp)
        mine = [(f.start_unix - margin_s, f.end_unix) for f in flags if f.component == comp]
        span = (float(first[rows].min()), float(last[rows].max())) if len(rows) else None
        n_drop = int(drop[rows].sum())
        components[comp] = {"seconds": _covered(mine, span), "windows": n_drop,
                            "windows_total": int(len(rows)),
                            "whole_span": bool(len(rows)) and n_drop == len(rows)}
    summary = {"margin_s": float(margin_s), "intervals": intervals, "components": components,
               "windows": int(drop.sum()),
               "whole_span": sorted(c for c, v in components.items() if v["whole_span"])}
    return ws.subset(~drop), summary


def _covered(intervals: list[tuple[float, float]], span: tuple[float, float] | None) -> float:
    """Seconds of ``span`` inside the union of ``intervals`` (0 without a span)."""
    if span is None:
        return 0.0
    total, reach = 0.0, span[0]
    for a, b in sorted(intervals):
        a, b = max(a, reach), min(b, span[1])
        if b > a:
            total += b - a
            reach = b
    return float(total)

