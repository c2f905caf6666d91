"""Map the sensor board's µs counter to host time in ns.

Every read chunk gives one pair (board time of the newest frame in µs, host receive time in ns).
The receive time is the true time plus a non-negative transport delay (USB, serial driver,
scheduling), so the *smallest* delay seen in a time bin is the best estimate of the offset. A
straight line (offset and drift) is fitted by least squares through the per-bin minima.

All arithmetic is done relative to the first observation: absolute values (~1.7e15 µs,
~1.7e18 ns in wall-clock mode) do not fit exactly in a float64, their differences do.

The estimate can step backwards: before the drift is fitted the offset is the smallest delay
seen so far, so a late first read (a loaded host) maps early samples late until an on-time read
lowers it; a refit can move the line too. Published stamps must not go backwards, so
:meth:`BoardClock.run_host_ns` stamps runs of samples monotonically (see there).
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np

__all__ = ["BoardClock", "ClockNotSynced"]

_LOG = logging.getLogger(__name__)


class ClockNotSynced(RuntimeError):
    """Raised when board time is mapped before the first observation."""


class BoardClock:
    """Maps the board's µs counter to host time in ns.

    ``host_ns ≈ board_us * 1000 * (1 + drift) + offset``, fitted on the lower envelope of
    (board time, receive time) pairs: receive time = true time + a non-negative delay, so the
    minimum delay per time bin is the best estimate. Until ``min_bins_for_drift`` bins have
    closed the drift is taken as 0 and the offset is the smallest delay seen so far.

    :param window_s: span of board time (s) whose bins are kept for the fit.
    :param bin_s: bin width in board time (s); one minimum per bin.
    :param min_bins_for_drift: closed bins needed before the drift is estimated.
    :param max_jump_s: a pair whose board-time step differs from its host-time step by more
        than this (s) is a discontinuity (board restart or garbage) and resets the clock.
    """

    def __init__(self, window_s: float = 60.0, bin_s: float = 0.5, min_bins_for_drift: int = 4,
                 max_jump_s: float = 5.0):
        if not (bin_s > 0 and window_s >= bin_s):
            raise ValueError(f"bin_s = {bin_s!r}, window_s = {window_s!r}: "
                             "expected 0 < bin_s <= window_s")
        if min_bins_for_drift < 2:
            raise ValueError(f"min_bins_for_drift = {min_bins_for_drift!r}: expected >= 2")
        if not max_jump_s > 0:
            raise ValueError(f"max_jump_s = {max_jump_s!r}: expected > 0")
        self._bin_us = int(round(bin_s * 1e6))
        self._min_bins = int(min_bins_for_drift)
        self._max_jump_ns = int(max_jump_s * 1e9)
        self._bins: deque[tuple[float, float]] = deque(maxlen=max(2, math.ceil(window_s / bin_s)))
        self._issued: tuple[int, int] | None = None  # (board µs, host ns) of the last stamped
        self.reset()

    def reset(self) -> None:
        """Forget all observations; :meth:`to_host_ns` raises until the next one."""
        self._bins.clear()
        self._ref: tuple[int, int] | None = None  # (board_us, host_ns) of the first pair
        self._last: tuple[int, int] | None = None
        self._bin_index = 0
        self._bin_min: tuple[float, float] | None = None  # (board s, delay ns) of open bin
        self._floor_ns = math.inf  # smallest delay seen since reset (drift-free offset)
        self._intercept_ns = 0.0  # fitted delay at board s = 0 (relative to the reference)
        self._slope_ns_per_s = 0.0  # drift * 1e9
        self._observations = 0

    def observe(self, board_us: int, host_ns: int) -> bool:
        """Record one (board time in µs, host receive time in ns) pair.

        Returns False when the pair is discontinuous with the previous one (board time went
        backwards, or board and host time steps differ by more than ``max_jump_s``): the clock
        is reset and restarted from this pair. Returns True otherwise.
        """
        board_us, host_ns = int(board_us), int(host_ns)
        continuous = self._last is None or self._is_continuous(board_us, host_ns)
        if not continuous:
            _LOG.warning("board clock discontinuity (board %d µs -> %d µs); resyncing",
                         self._last[0], board_us)
            self.reset()
        if self._ref is None:
            self._ref = (board_us, host_ns)
        self._last = (board_us, host_ns)
        self._observations += 1
        rel_us = board_us - self._ref[0]
        delay_ns = float(host_ns - self._ref[1] - rel_us * 1000)
        self._floor_ns = min(self._floor_ns, delay_ns)
        self._add_to_bin(rel_us, delay_ns)
        return continuous

    def _is_continuous(self, board_us: int, host_ns: int) -> bool:
        board_step_ns = (board_us - self._last[0]) * 1000
        host_step_ns = host_ns - self._last[1]
        return board_step_ns >= 0 and abs(board_step_ns - host_step_ns) <= self._max_jump_ns

    def _add_to_bin(self, rel_us: int, delay_ns: float) -> None:
        index = rel_us // self._bin_us
        if self._bin_min is not None and index != self._bin_index:
            self._bins.append(self._bin_min)
            self._bin_min = None
            self._refit()
        self._bin_index = index
        if self._bin_min is None or delay_ns < self._bin_min[1]:
            self._bin_min = (rel_us / 1e6, delay_ns)

    def _refit(self) -> None:
        """Least-squares line through the bin minima; drops minima far above a first fit."""
        if len(self._bins) < self._min_bins:
            return
        x, y = np.array(self._bins, dtype=np.float64).T
        slope, intercept = _line_fit(x, y)
        resid = y - (intercept + slope * x)
        resid -= float(np.median(resid))
        spread = 3.0 * 1.4826 * float(np.median(np.abs(resid)))  # 3 sigma, via the MAD
        keep = resid <= max(spread, 1e3)  # 1 µs floor: exact data has zero spread
        if keep.sum() >= self._min_bins and not keep.all():
            slope, intercept = _line_fit(x[keep], y[keep])
        self._slope_ns_per_s, self._intercept_ns = slope, intercept

    def _correction_ns(self, rel_s):
        """Delay model in ns at board time ``rel_s`` (s since the reference)."""
        if len(self._bins) < self._min_bins:
            return self._floor_ns + 0.0 * rel_s
        return self._intercept_ns + self._slope_ns_per_s * rel_s

    def to_host_ns(self, board_us: int | np.ndarray) -> int | np.ndarray:
        """Host time in ns for board time(s) in µs: int for a scalar, int64 array for an array.

        :raises ClockNotSynced: before the first observation (or after a reset).
        """
        if self._ref is None:
            raise ClockNotSynced("board clock has no observation yet")
        ref_board, ref_host = self._ref
        if isinstance(board_us, np.ndarray):
            rel_us = board_us.astype(np.int64) - np.int64(ref_board)
            corr = np.rint(self._correction_ns(rel_us / 1e6)).astype(np.int64)
            return np.int64(ref_host) + rel_us * 1000 + corr
        rel_us = int(board_us) - ref_board
        return ref_host + rel_us * 1000 + int(round(self._correction_ns(rel_us / 1e6)))

    def run_host_ns(self, first_us: int, last_us: int) -> int:
        """Host time in ns of the first sample of a run from board time ``first_us`` to
        ``last_us`` (µs, in the order the board produced them); the run's samples are stamped
        ``result + (board_us - first_us) * 1000``.

        Stamps never go backwards, even when the estimate does: the first sample of a run is
        stamped no earlier than the last sample of the previous run plus half the board-time
        step between the two (1 ns at least, e.g. after a board restart). After a backward step
        of the estimate the stamps thus stay strictly increasing, sample spacing at a run
        boundary is at most halved, and the stamps rejoin the estimate by half a step per run
        (half a sample period per run for consecutive frames). A forward step is taken at once.
        The last stamped sample survives :meth:`reset`, so a resync cannot move stamps back.

        :raises ClockNotSynced: before the first observation (or after a reset).
        :raises ValueError: when ``last_us < first_us``.
        """
        first_us, last_us = int(first_us), int(last_us)
        if last_us < first_us:
            raise ValueError(f"run from board {first_us} µs to {last_us} µs: last < first")
        stamp_ns = int(self.to_host_ns(first_us))
        if self._issued is not None:
            prev_us, prev_ns = self._issued
            stamp_ns = max(stamp_ns, prev_ns + max((first_us - prev_us) * 1000 // 2, 1))
        self._issued = (last_us, stamp_ns + (last_us - first_us) * 1000)
        return stamp_ns

    @property
    def offset_ns(self) -> int:
        """Host time in ns that corresponds to board time 0 (the ``offset`` of the model)."""
        return self.to_host_ns(0)

    @property
    def drift_ppm(self) -> float:
        """Rate error in ppm (> 0: the board counter runs slow vs. the host); 0 until fitted."""
        return self._slope_ns_per_s / 1e3 if len(self._bins) >= self._min_bins else 0.0

    @property
    def synced(self) -> bool:
        """True once at least one pair has been observed since the last reset."""
        return self._ref is not None

    @property
    def drift_estimated(self) -> bool:
        """True once enough bins have closed for the drift to be fitted."""
        return len(self._bins) >= self._min_bins

    @property
    def observations(self) -> int:
        """Pairs observed since the last reset."""
        return self._observations


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = intercept + slope * x``; returns (slope, intercept)."""
    xm, ym = float(x.mean()), float(y.mean())
    dx = x - xm
    denom = float(dx @ dx)
    slope = float(dx @ (y - ym)) / denom if denom > 0 else 0.0
    return slope, ym - slope * xm
