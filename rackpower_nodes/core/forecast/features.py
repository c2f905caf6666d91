"""Model input windows: per-step features and the training windows cut from series.

Each step of a series gets the features named by :func:`feature_names` (in order):

- ``power``: step mean / ``max_w``; for each ``k`` in ``spec.coarse``: ``power_mean_k``,
  ``power_max_k`` (over the last k steps, this one included) and ``power_slope_k`` (the
  least-squares slope times k: change over k steps), all in units of ``max_w``;
- host telemetry: ``cpu_util``, ``mem_used_fraction`` (0..1), ``net_rx``, ``net_tx``,
  ``disk_read``, ``disk_write`` (``log1p(bytes/s) / log1p(1e10)``), unknown values as 0, and
  ``telemetry_known`` (fraction of the six that are known);
- calendar at the step start, in the schedule's time zone (UTC without one): ``tod_sin``,
  ``tod_cos``, ``dow_sin``, ``dow_cos`` (week phase, Monday 00:00 = 0);
- workload events: :data:`~rackpower_nodes.core.workload_events.EVENT_FEATURES` (the running
  jobs' expected utilisation, the newest one's age, the time to the first expected end, the
  time to the next expected start with that job's size and whether it is a GPU job; all 0..1)
  from the series' recorded job log, else its schedule, else "no job"
  (:mod:`.event_windows`);
- spec: ``idle_frac`` (idle_w / max_w), ``max_kw`` (max_w / 1000).

A window ending at step ``j`` holds steps ``j - history + 1 .. j``; its targets are the step
means ``j + 1 .. j + horizon`` / ``max_w``. A window needs ``spec.warmup_steps`` steps of its
segment behind it (the coarse statistics never look past the segment start) and ``horizon``
steps after it. :class:`~.online.OnlineWindows` builds the same ``x`` from live messages.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rackpower_nodes.core.calendar import phases as calendar_phases
from rackpower_nodes.core.forecast.event_windows import event_rows
from rackpower_nodes.core.forecast.series import ComponentSeries, DatasetError, step_times
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import EVENT_FEATURES, JobLog

__all__ = [
    "FEATURES", "WindowSet", "WindowSpec", "build_windows", "coarse_tail", "feature_names",
    "feature_rows", "group_of", "leave_one_group_out", "seen_features", "split_by_group",
    "split_by_time", "step_features", "window_ends",
]

_log = logging.getLogger(__name__)

LOG_BYTES = math.log1p(1e10)        # byte rates: log1p(B/s) / LOG_BYTES, 10 GB/s -> 1


@dataclass(frozen=True)
class WindowSpec:
    """Window geometry: model step (s), input and forecast lengths (steps), coarse
    resolutions (steps, each >= 2) and the training stride (steps)."""

    step_s: float = 0.1
    history_steps: int = 50
    horizon_steps: int = 50
    coarse: tuple[int, ...] = (10, 100)
    stride: int = 1

    def __post_init__(self) -> None:
        if not self.step_s > 0:
            raise DatasetError(f"WindowSpec.step_s={self.step_s!r}, expected > 0 s")
        for name in ("history_steps", "horizon_steps", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DatasetError(f"WindowSpec.{name}={value!r}, expected an integer >= 1")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 2 for k in self.coarse):
            raise DatasetError(f"WindowSpec.coarse={self.coarse!r}, expected integers >= 2")

    @property
    def warmup_steps(self) -> int:
        """Steps of a segment a window needs behind its last step, that step included."""
        return self.history_steps + max(self.coarse, default=1) - 1


def feature_names(spec: WindowSpec) -> list[str]:
    """Feature names in column order for ``spec`` (see the module docstring)."""
    power = ["power"] + [f"power_{s}_{k}" for k in spec.coarse for s in ("mean", "max", "slope")]
    return power + ["cpu_util", "mem_used_fraction", "net_rx", "net_tx", "disk_read",
                    "disk_write", "telemetry_known", "tod_sin", "tod_cos", "dow_sin", "dow_cos",
                    *EVENT_FEATURES, "idle_frac", "max_kw"]


FEATURES = feature_names(WindowSpec())
WEEK_S = 7 * 86400.0


def seen_features(names: Sequence[str], span_s: float) -> tuple[str, ...]:
    """The features a model should read (``LstmParams.features``; ``()`` = all) when its
    training windows span ``span_s`` s: all of them, except the week phase (``dow_*``) under a
    week, which then only tells the training days apart and, standardised on them, is far out
    of range on any other day."""
    if span_s < WEEK_S:
        return tuple(n for n in names if not n.startswith("dow_"))
    return ()


def step_features(power_w, telemetry, first_step: int, spec: WindowSpec, idle_w: float,
                  max_w: float, component: str = "",
                  schedule: WorkloadSchedule | None = None,
                  events: JobLog | np.ndarray | None = None) -> np.ndarray:
    """(n, F) float32 features of ``n`` consecutive steps from global step ``first_step``.

    ``power_w`` (n,) W and ``telemetry`` (n, 6) are rounded to float32 first, as a
    :class:`~.series.ComponentSeries` stores them. Coarse statistics of the first
    ``k - 1`` steps are NaN (windows never include them). ``events``: the component's job
    log, or its (n, 6) event rows already computed (the live path); None: from ``schedule``
    (:func:`~.event_windows.event_rows`).
    """
    p = np.asarray(power_w, dtype=np.float32).astype(np.float64) / max_w
    tel = np.asarray(telemetry, dtype=np.float32).astype(np.float64)
    times = step_times(first_step, len(p), spec.step_s)
    tz = schedule.tz_offset_s if schedule is not None else 0.0
    if isinstance(events, np.ndarray):
        if events.shape != (len(p), len(EVENT_FEATURES)):
            raise DatasetError(f"event rows of {component!r}: shape {events.shape}, expected "
                               f"({len(p)}, {len(EVENT_FEATURES)})")
        rows = events
    else:
        rows = event_rows(component, times, events, schedule)
    return feature_rows(p, _coarse(p, spec.coarse), tel, times + tz, rows,
                        np.array([[idle_w / max_w, max_w / 1000.0]]))


def feature_rows(power, coarse, telemetry, local_t, events, spec_cols) -> np.ndarray:
    """(n, F) float32 rows in :func:`feature_names` order from each step's parts, steps of any
    components: ``power`` (n,) step mean / max_w, ``coarse`` (n, 3 * len(spec.coarse)),
    ``telemetry`` (n, 6) float64 raw (NaN unknown), ``local_t`` (n,) step start in the
    schedule's zone (s), ``events`` (n, 6) and ``spec_cols`` (n or 1, 2) idle_w / max_w and
    max_w / 1000. Every column of a row is a function of that row's parts alone."""
    blocks = [power[:, None], coarse, _telemetry(telemetry), calendar_phases(local_t), events,
              spec_cols]
    out = np.empty((len(power), sum(b.shape[1] for b in blocks)), dtype=np.float32)
    col = 0
    for b in blocks:
        out[:, col:col + b.shape[1]] = b
        col += b.shape[1]
    return out


def coarse_tail(p: np.ndarray, ks: Sequence[int], count: int) -> np.ndarray:
    """(count, 3 * len(ks)) coarse statistics of the last ``count`` steps of ``p`` (power /
    max_w, float64), the values :func:`step_features` gives them: the same ``np.correlate``
    (one dot product of the k steps ending at each) over only the steps they read, and the
    same maximum. NaN where fewer than k steps lead up to one."""
    out = np.full((count, 3 * len(ks)), np.nan)
    n = len(p)
    for c, k in enumerate(ks):
        first = max(count - (n - k + 1), 0)             # the first row with k steps
        if first >= count:
            continue
        q = p[n - count + first - k + 1:]
        mean, slope = _kernels(k)
        out[first:, 3 * c] = np.correlate(q, mean, mode="valid")
        out[first:, 3 * c + 2] = np.correlate(q, slope, mode="valid")
        for r in range(count - first):
            out[first + r, 3 * c + 1] = q[r:r + k].max()
    return out


@functools.lru_cache(maxsize=32)
def _kernels(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and slope weights of :func:`_coarse` at resolution k (read-only)."""
    i = np.arange(k) - (k - 1) / 2.0
    mean, slope = np.full(k, 1.0 / k), i * k / np.dot(i, i)
    mean.flags.writeable = slope.flags.writeable = False
    return mean, slope


def _coarse(p: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    out = np.full((len(p), 3 * len(ks)), np.nan)
    for c, k in enumerate(ks):
        if len(p) < k:
            continue
        win = sliding_window_view(p, k)
        mean, slope = _kernels(k)
        out[k - 1:, 3 * c] = np.correlate(p, mean, mode="valid")
        out[k - 1:, 3 * c + 1] = win.max(axis=1)
        out[k - 1:, 3 * c + 2] = np.correlate(p, slope, mode="valid")
    return out


def _telemetry(tel: np.ndarray) -> np.ndarray:
    known = np.isfinite(tel)
    v = np.where(known, tel, 0.0)
    v[:, :2] = np.clip(v[:, :2], 0.0, 1.0)
    v[:, 2:] = np.log1p(np.maximum(v[:, 2:], 0.0)) / LOG_BYTES
    return np.column_stack([v, known.mean(axis=1)])


@dataclass
class WindowSet:
    """Training windows: ``x`` (n, history, F) float32 inputs, ``y`` (n, horizon) float32
    future step means / ``max_w``, ``scale_w`` (n,) max_w in W (multiply to get watts),
    ``last`` (n,) the last input step's normalised power, ``component`` (n,) names and
    ``t_unix`` (n,) float64 start time of the last input step (Unix s; the forecast is
    issued at ``t_unix + step_s`` and target h covers the h-th step after that)."""

    x: np.ndarray
    y: np.ndarray
    scale_w: np.ndarray
    last: np.ndarray
    component: np.ndarray
    t_unix: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    spec: WindowSpec = field(default_factory=WindowSpec)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in (self.x, self.y, self.scale_w, self.last, self.t_unix))

    def subset(self, mask) -> WindowSet:
        """The windows selected by a boolean mask or an index array."""
        return WindowSet(self.x[mask], self.y[mask], self.scale_w[mask], self.last[mask],
                         self.component[mask], self.t_unix[mask], list(self.feature_names),
                         self.spec)


def window_ends(n: int, spec: WindowSpec) -> np.ndarray:
    """Indices of the last input step of each window in a segment of ``n`` steps."""
    first, last = spec.warmup_steps - 1, n - 1 - spec.horizon_steps
    return np.arange(first, max(last + 1, first), spec.stride, dtype=np.int64)


def build_windows(series: Sequence[ComponentSeries], spec: WindowSpec = WindowSpec(),
                  max_windows: int | None = None, seed: int = 0) -> WindowSet:
    """Windows of every segment in ``series`` (never across a segment end), every
    ``spec.stride`` steps, but none whose horizon holds a censored step (:func:`uncensored`);
    at most ``max_windows`` of them, drawn at random with ``seed``. Memory: 4 * (history * F
    + horizon + 2) bytes per window plus 8 for its time."""
    for s in series:
        if not math.isclose(s.step_s, spec.step_s, rel_tol=1e-9):
            raise DatasetError(f"series {s.component!r} ({s.source}): step_s={s.step_s}, "
                               f"expected the spec's {spec.step_s} s")
    every = [window_ends(len(s), spec) for s in series]
    ends = [uncensored(s, e, spec) for s, e in zip(series, every, strict=True)]
    dropped = sum(len(e) for e in every) - sum(len(e) for e in ends)
    if dropped:
        _log.info("%d windows left out: their targets hold censored (pinned) steps", dropped)
    ends = _subsample(ends, max_windows, seed)
    names, hist, hor = feature_names(spec), spec.history_steps, spec.horizon_steps
    n = sum(len(e) for e in ends)
    ws = WindowSet(np.empty((n, hist, len(names)), np.float32), np.empty((n, hor), np.float32),
                   np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, object),
                   np.empty(n, np.float64), names, spec)
    o = 0
    for s, e in zip(series, ends, strict=True):
        if len(e):
            _fill(ws, slice(o, o + len(e)), s, e)
            o += len(e)
    _log.info("built %d windows (%.1f MB) from %d series", n, ws.nbytes / 1e6, len(series))
    return ws


def uncensored(s: ComponentSeries, ends: np.ndarray, spec: WindowSpec) -> np.ndarray:
    """The window ends of `s` whose horizon holds no censored step: a step held at its
    allocation shows the cap, not the demand, and must not be learnt as demand."""
    if s.censored is None or not s.censored.any():
        return ends
    held = np.concatenate([[0], np.cumsum(s.censored, dtype=np.int64)])
    return ends[held[ends + 1 + spec.horizon_steps] - held[ends + 1] == 0]


def _subsample(ends: list[np.ndarray], max_windows: int | None, seed: int) -> list[np.ndarray]:
    total = sum(len(e) for e in ends)
    if max_windows is None or total <= max_windows:
        return ends
    if max_windows < 0:
        raise DatasetError(f"max_windows={max_windows!r}, expected >= 0")
    pick = np.sort(np.random.default_rng(seed).choice(total, max_windows, replace=False))
    bounds = np.cumsum([0] + [len(e) for e in ends])
    return [e[pick[(pick >= a) & (pick < b)] - a]
            for e, a, b in zip(ends, bounds[:-1], bounds[1:], strict=True)]


def _fill(ws: WindowSet, rows: slice, s: ComponentSeries, ends: np.ndarray) -> None:
    spec = ws.spec
    feats = step_features(s.power_w, s.telemetry, s.first_step, spec, s.idle_w, s.max_w,
                          s.component, s.schedule, s.events)
    np.take(feats, ends[:, None] + np.arange(1 - spec.history_steps, 1), axis=0, out=ws.x[rows])
    ws.y[rows] = feats[ends[:, None] + np.arange(1, spec.horizon_steps + 1), 0]
    ws.last[rows] = feats[ends, 0]
    ws.scale_w[rows] = s.max_w
    ws.component[rows] = s.component
    ws.t_unix[rows] = step_times(s.first_step, len(s), s.step_s)[ends]


def split_by_time(ws: WindowSet, frac_train: float = 0.8) -> tuple[WindowSet, WindowSet]:
    """(train, test) per component: windows before the ``frac_train`` quantile of its times
    train, later ones test; windows whose inputs or targets would overlap the other side are
    dropped."""
    if not 0.0 < frac_train < 1.0:
        raise DatasetError(f"frac_train={frac_train!r}, expected between 0 and 1")
    spec = ws.spec
    before = (spec.warmup_steps - 1) * spec.step_s
    after = (spec.horizon_steps + 1) * spec.step_s
    train, test = np.zeros(len(ws), bool), np.zeros(len(ws), bool)
    for name in dict.fromkeys(ws.component):
        idx = np.flatnonzero(ws.component == name)
        t = ws.t_unix[idx]
        cut = np.quantile(t, frac_train)
        train[idx] = t + after <= cut
        test[idx] = t - before >= cut
    return ws.subset(train), ws.subset(test)


def group_of(component: str) -> str:
    """The group of a component name: the part after its last '/' (the BSC workload)."""
    return component.rsplit("/", 1)[-1]


def split_by_group(ws: WindowSet, test_groups: Collection[str],
                   key: Callable[[str], str] = group_of) -> tuple[WindowSet, WindowSet]:
    """(train, test): windows whose component's ``key`` is in ``test_groups`` test."""
    groups = np.array([key(c) for c in ws.component], dtype=object)
    test = np.isin(groups, list(test_groups))
    return ws.subset(~test), ws.subset(test)


def leave_one_group_out(ws: WindowSet, key: Callable[[str], str] = group_of
                        ) -> Iterator[tuple[str, WindowSet, WindowSet]]:
    """``(group, train, test)`` for each group, holding that group out."""
    for group in dict.fromkeys(key(c) for c in ws.component):
        train, test = split_by_group(ws, [group], key)
        yield group, train, test
