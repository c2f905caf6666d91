"""Physical checks that need no learned baseline: :class:`PhysicalChecks`.

Pure module. Streaming, vectorised over rows and components, working from a component's first
minute in the live graph:

- ``sensor_stuck``: the board's channel shows no movement at all (a real load never does),
  or stops following a moving reference meter (:mod:`.sensor`);
- ``outlet_dropout``: the draw falls to ~0 W for part of a second to a few seconds while the
  host stays up, repeatedly;
- ``sensor_offset`` / ``sensor_gain``: the board disagrees with an independent meter beyond
  their stated accuracy (:class:`~.sensor.ReferenceCheck`), a constant or a load-proportional
  difference. Component faults change both meters alike and do not fire it.

The thresholds and the reasoning behind each: :class:`~.checks_config.ChecksConfig`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rackpower_nodes.core.health.checks_config import ChecksConfig, Finding
from rackpower_nodes.core.health.sensor import ReferenceCheck
from rackpower_nodes.core.health.types import HealthFrame, HealthFrameError

__all__ = ["ChecksConfig", "Finding", "PhysicalChecks", "run_lengths"]

_LISTS = ("_dropouts", "_kept_up")      # per component lists of dropout starts (Unix s)


def run_lengths(mask: np.ndarray, carry: np.ndarray, restart: np.ndarray) -> np.ndarray:
    """(rows, m) length of the run of True ending at each row (0 where False), continuing
    the runs ``carry`` (m,) from before the first row; a run restarts at rows where
    ``restart`` (rows,) is True (a gap in time)."""
    mask = np.asarray(mask, dtype=bool)
    c = np.cumsum(mask, axis=0)
    cut = ~mask | restart[:, None]
    reset = np.maximum.accumulate(np.where(~mask, c, np.where(cut, c - 1, 0)), axis=0)
    seen = np.logical_or.accumulate(cut, axis=0)
    return c - reset + np.where(seen, 0, carry[None, :])


def _forward_fill(values: np.ndarray, good: np.ndarray, carry: np.ndarray) -> np.ndarray:
    """(rows, m) the value at the last good row up to and including each row (``carry``
    before the first good one)."""
    idx = np.where(good, np.arange(len(values))[:, None], -1)
    idx = np.maximum.accumulate(idx, axis=0)
    picked = np.take_along_axis(values, np.maximum(idx, 0), axis=0)
    return np.where(idx >= 0, picked, carry[None, :])


class PhysicalChecks:
    """Stuck channel, outlet dropouts and board vs reference for the components ``names``
    (kinds ``kinds``: 'server', 'switch', 'storage'); fed :class:`HealthFrame` rows in time
    order, any number per call."""

    def __init__(self, names: Sequence[str], kinds: Sequence[str],
                 config: ChecksConfig = ChecksConfig()):
        self.names, self.kinds = tuple(names), tuple(kinds)
        if len(self.names) != len(self.kinds):
            raise ValueError(f"kinds: {len(self.kinds)} entries for {len(self.names)} names")
        self.cfg = config
        m = len(self.names)
        self._t_last = np.nan
        self._mean_last = np.full(m, np.nan)
        self._flat_run = np.zeros(m)
        self._flat_since = np.full(m, np.nan)
        self._level = np.full(m, np.nan)
        self._out_run = np.zeros(m)              # open run of out seconds (0: none)
        self._out_start = np.full(m, np.nan)
        self._out_level = np.full(m, np.nan)
        self._out_tele = np.ones(m)              # telemetry came in every out second so far
        self._out_counted = np.zeros(m)
        self._out_longest = np.zeros(m)
        self._dropouts: list[list[float]] = [[] for _ in range(m)]
        self._kept_up: list[list[float]] = [[] for _ in range(m)]   # of those: host stayed up
        self._ref = ReferenceCheck(self.names, config)

    def update(self, frame: HealthFrame) -> list[Finding | None]:
        """Feed the next rows (any number, rows in time order across calls); return, per
        component in names order, the strongest current finding or None."""
        if frame.names != self.names:
            raise HealthFrameError(f"names: frame has {list(frame.names)}, the checks "
                                   f"{list(self.names)}")
        if len(frame):
            if frame.t_unix[0] <= self._t_last:
                raise HealthFrameError(f"t_unix: {frame.t_unix[0]} not after the last row "
                                       f"fed ({self._t_last})")
            flat = self._stuck(frame)
            out = self._outs(frame)
            use = ~flat & ~out
            self._ref.update(frame.t_unix, frame.board_mean_w, frame.ref_w, use)
            self._t_last = float(frame.t_unix[-1])
        return self.findings()

    # -- stuck channel, per second ------------------------------------------------------------
    def _stuck(self, f: HealthFrame) -> np.ndarray:
        cfg = self.cfg
        t = f.t_unix
        mean = np.asarray(f.board_mean_w, dtype=np.float64)
        prev = np.vstack([self._mean_last[None, :], mean[:-1]])
        powered = ((mean > cfg.powered_w) | (np.nan_to_num(f.ref_w) > cfg.powered_w)
                   | np.isfinite(f.util))
        with np.errstate(invalid="ignore"):
            flat = ((np.asarray(f.board_std_w) <= cfg.stuck_std_w)
                    & (np.abs(mean - prev) <= cfg.stuck_step_w) & powered)
        gap = np.diff(np.r_[self._t_last, t]) > cfg.max_gap_s
        run = run_lengths(flat, self._flat_run, gap)
        starts = np.where(run == 1, t[:, None] - 1.0, np.nan)    # held since the row before
        since = _forward_fill(starts, run == 1, self._flat_since)
        self._flat_run, self._flat_since = run[-1].astype(np.float64), since[-1]
        good = np.isfinite(mean)
        self._mean_last = np.where(good[-1], mean[-1], _forward_fill(
            mean, good, self._mean_last)[-1])
        return run > 0

    # -- outlet dropouts ----------------------------------------------------------------------
    def _outs(self, f: HealthFrame) -> np.ndarray:
        """Out seconds (rows, m); counts finished dropouts into ``_dropouts``."""
        cfg = self.cfg
        mean = np.asarray(f.board_mean_w, dtype=np.float64)
        lo = np.asarray(f.board_min_w, dtype=np.float64)
        on = np.isfinite(lo) & (lo > cfg.zero_w)
        level = _forward_fill(mean, on, self._level)
        level_before = np.vstack([self._level[None, :], level[:-1]])
        with np.errstate(invalid="ignore"):
            out = lo <= np.maximum(cfg.zero_w, cfg.zero_frac * np.nan_to_num(level_before))
        self._level = level[-1]
        tele = np.isfinite(f.util)
        for c in np.flatnonzero(out.any(axis=0) | (self._out_run > 0)):
            self._episodes(c, f.t_unix, out[:, c], tele[:, c], level_before[:, c])
        return out

    def _episodes(self, c: int, t: np.ndarray, out: np.ndarray, tele: np.ndarray,
                  level: np.ndarray) -> None:
        edges = np.flatnonzero(np.diff(np.r_[False, out, False].astype(np.int8)))
        runs = list(zip(edges[::2], edges[1::2]))
        if self._out_run[c] > 0 and not (runs and runs[0][0] == 0):
            self._close(c)                      # the open run ended before this batch
        for a, b in runs:
            if not (a == 0 and self._out_run[c] > 0):
                self._out_run[c], self._out_start[c] = 0, t[a]
                self._out_level[c], self._out_tele[c], self._out_counted[c] = level[a], 1, 0
            self._out_run[c] += b - a
            self._out_tele[c] = float(self._out_tele[c] and tele[a:b].all())
            if self._out_run[c] > self.cfg.max_dropout_s and self._out_tele[c] \
                    and not self._out_counted[c]:
                self._count(c)                  # long, but the host stayed up throughout
            if b < len(out):
                self._close(c)

    def _close(self, c: int) -> None:
        if self._out_run[c] <= self.cfg.max_dropout_s and not self._out_counted[c]:
            self._count(c)
        self._out_run[c] = 0

    def _count(self, c: int) -> None:
        self._out_counted[c] = 1
        if self._out_level[c] >= self.cfg.min_level_w:
            self._dropouts[c].append(float(self._out_start[c]))
            if self._out_tele[c]:
                self._kept_up[c].append(float(self._out_start[c]))
            self._out_longest[c] = max(self._out_longest[c], self._out_run[c])

    def _dropout_finding(self, c: int) -> Finding | None:
        cfg = self.cfg
        recent = [s for s in self._dropouts[c] if s > self._t_last - cfg.dropout_window_s]
        self._dropouts[c] = recent
        up = [s for s in self._kept_up[c] if s > self._t_last - cfg.dropout_window_s]
        self._kept_up[c] = up
        score = len(recent) / cfg.dropouts_fault
        if len(up) >= cfg.dropouts_kept_up_fault:
            score = max(score, 1.0)         # the host stayed up: its supply was cut
        if score < cfg.watch_score:
            return None
        return Finding(self.names[c], "outlet_dropout", float(score), recent[0], {
            "dropouts": float(len(recent)), "window_h": cfg.dropout_window_s / 3600.0,
            "last_dropout_ago_s": float(self._t_last - recent[-1]),
            "host_stayed_up": float(len(up)),
            "longest_s": float(self._out_longest[c]), "level_w": float(self._level[c])})

    # -- the answer ---------------------------------------------------------------------------
    def findings(self) -> list[Finding | None]:
        """Per component in names order, the strongest current finding (None below watch)."""
        cfg = self.cfg
        ref, frozen = self._ref.findings()
        out: list[Finding | None] = []
        for c, name in enumerate(self.names):
            cands = [ref[c], frozen[c], self._dropout_finding(c)]
            score = self._flat_run[c] / cfg.stuck_s
            if score >= cfg.watch_score:
                cands.append(Finding(name, "sensor_stuck", float(score),
                                     float(self._flat_since[c]),
                                     {"flat_s": float(self._flat_run[c]),
                                      "held_w": float(self._mean_last[c])}))
            cands = [f for f in cands if f is not None]
            if any(f.cause == "sensor_stuck" and f.score >= 1.0 for f in cands):
                # a stuck channel explains the difference to the reference
                cands = [f for f in cands if f.cause == "sensor_stuck"]
            out.append(max(cands, key=lambda f: f.score) if cands else None)
        return out

    # -- restart ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything the checks carry between rows, as plain lists (JSON-safe but for NaN)."""
        own = {k: (v if k in _LISTS else np.asarray(v).tolist())
               for k, v in vars(self).items() if k not in ("names", "kinds", "cfg", "_ref")}
        return {"names": list(self.names), "kinds": list(self.kinds),
                "config": self.cfg.as_dict(), "own": own, "reference": self._ref.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict) -> PhysicalChecks:
        checks = cls(state["names"], state["kinds"], ChecksConfig.from_mapping(state["config"]))
        for k, v in state["own"].items():
            if k not in vars(checks):
                raise ValueError(f"checks state: unknown entry {k!r}")
            if k in _LISTS:
                setattr(checks, k, [list(map(float, x)) for x in v])
            elif k == "_t_last":
                checks._t_last = float(v)
            else:
                setattr(checks, k, np.asarray(v, dtype=np.float64).reshape(len(checks.names)))
        checks._ref.load_state(state["reference"])
        return checks
