"""Tests of the board clock → host time mapping."""

import numpy as np
import pytest

from rackpower_nodes.core.clock_sync import BoardClock, ClockNotSynced

WALL_NS = 1_700_000_000_000_000_000  # host ns in wall-clock mode


def true_host_ns(board_us, drift_ppm: int, offset_ns: int):
    """Exact integer model: host = board * 1000 * (1 + drift) + offset."""
    return board_us * 1000 + board_us * drift_ppm // 1000 + offset_ns  # no int64 overflow


def feed(clock, rng, board0_us, drift_ppm, offset_ns, seconds=30.0, rate_hz=100.0):
    """Observe a synthetic board: exponential delays (mean 2 ms) plus 1 % stalls of 30 ms."""
    n = int(seconds * rate_hz)
    board = board0_us + np.arange(n, dtype=np.int64) * int(1e6 / rate_hz)
    delay = rng.exponential(2e6, n) + np.where(rng.random(n) < 0.01, 30e6, 0.0)
    for b, d in zip(board.tolist(), delay.tolist()):
        assert clock.observe(b, true_host_ns(b, drift_ppm, offset_ns) + int(d))
    return board[-1]


@pytest.mark.parametrize("drift_ppm", [50, -80])
@pytest.mark.parametrize("board0_us", [0, 123_456_789, 1_700_000_000_000_000])
def test_fits_drift_and_offset_under_jitter(drift_ppm, board0_us):
    rng = np.random.default_rng(abs(drift_ppm) + board0_us % 1000)
    offset_ns = WALL_NS - board0_us * 1000 + 987_654_321
    clock = BoardClock()
    last = feed(clock, rng, board0_us, drift_ppm, offset_ns)
    assert clock.synced and clock.drift_estimated and clock.observations == 3000
    assert clock.drift_ppm == pytest.approx(drift_ppm, abs=5.0)
    fresh = last + np.array([0, 10_000, 250_000, 1_000_000], dtype=np.int64)
    error_ns = clock.to_host_ns(fresh) - true_host_ns(fresh, drift_ppm, offset_ns)
    assert np.abs(error_ns).max() < 500_000
    assert abs(clock.to_host_ns(int(last)) - true_host_ns(int(last), drift_ppm, offset_ns)) \
        < 500_000


def test_drift_matters_and_is_corrected():
    """Over 30 s a 200 ppm drift is 6 ms; a drift-free mapping could not meet 0.5 ms."""
    rng = np.random.default_rng(7)
    clock = BoardClock()
    last = int(feed(clock, rng, 0, 200, WALL_NS))
    assert clock.drift_ppm == pytest.approx(200, abs=5.0)
    assert abs(clock.to_host_ns(last) - true_host_ns(last, 200, WALL_NS)) < 500_000
    # An observation at the start of the run is also mapped correctly (line, not offset only).
    assert abs(clock.to_host_ns(0) - WALL_NS) < 1_000_000
    assert abs(clock.offset_ns - WALL_NS) < 1_000_000


def test_sustained_congestion_does_not_bias_the_fit():
    """Two seconds in which every chunk is 30 ms late (whole bins) are rejected as outliers."""
    rng = np.random.default_rng(11)
    clock = BoardClock()
    n = 3000
    board = np.arange(n, dtype=np.int64) * 10_000
    delay = rng.exponential(2e6, n)
    delay[1200:1400] += 30e6
    for b, d in zip(board.tolist(), delay.tolist()):
        clock.observe(b, true_host_ns(b, -80, WALL_NS) + int(d))
    last = int(board[-1])
    assert clock.drift_ppm == pytest.approx(-80, abs=5.0)
    assert abs(clock.to_host_ns(last) - true_host_ns(last, -80, WALL_NS)) < 500_000


def test_scalar_and_array_results():
    clock = BoardClock()
    clock.observe(1_000_000, WALL_NS)
    assert clock.drift_ppm == 0.0 and not clock.drift_estimated
    scalar = clock.to_host_ns(1_500_000)
    assert isinstance(scalar, int) and scalar == WALL_NS + 500_000_000
    arr = clock.to_host_ns(np.array([1_000_000, 1_000_001], dtype=np.uint64))
    assert arr.dtype == np.int64 and arr.tolist() == [WALL_NS, WALL_NS + 1000]


def test_offset_uses_smallest_delay_before_drift_is_known():
    clock = BoardClock()
    clock.observe(0, WALL_NS + 5_000_000)  # 5 ms late
    clock.observe(10_000, WALL_NS + 10_000_000 + 1_000_000)  # 1 ms late
    clock.observe(20_000, WALL_NS + 20_000_000 + 3_000_000)
    assert clock.to_host_ns(30_000) == WALL_NS + 30_000_000 + 1_000_000


def test_before_first_observation_raises():
    clock = BoardClock()
    assert not clock.synced and clock.observations == 0
    with pytest.raises(ClockNotSynced):
        clock.to_host_ns(0)
    with pytest.raises(RuntimeError):
        clock.to_host_ns(np.zeros(3, dtype=np.int64))
    clock.observe(0, WALL_NS)
    clock.reset()
    with pytest.raises(ClockNotSynced):
        clock.offset_ns


def test_board_restart_resets_and_resyncs():
    rng = np.random.default_rng(3)
    clock = BoardClock()
    last = int(feed(clock, rng, 5_000_000_000, 50, WALL_NS, seconds=10.0))
    assert clock.drift_estimated
    restart_host = true_host_ns(last, 50, WALL_NS) + 200_000_000
    # Board restarted: its counter starts again at 0 while host time goes on.
    assert clock.observe(0, restart_host) is False
    assert clock.observations == 1 and clock.synced and not clock.drift_estimated
    assert clock.drift_ppm == 0.0
    assert clock.to_host_ns(0) == restart_host
    new_offset = restart_host - 2_000_000  # the restart pair arrived 2 ms late
    feed(clock, rng, 10_000, -80, new_offset)
    assert clock.drift_ppm == pytest.approx(-80, abs=5.0)
    assert abs(clock.to_host_ns(40_000_000) - true_host_ns(40_000_000, -80, new_offset)) \
        < 500_000


def test_absurd_forward_jump_resets():
    clock = BoardClock(max_jump_s=5.0)
    assert clock.observe(0, WALL_NS)
    assert clock.observe(10_000, WALL_NS + 10_000_000)
    assert clock.observe(10_000 + 3_600_000_000, WALL_NS + 20_000_000) is False  # +1 h
    assert clock.observations == 1
    assert clock.to_host_ns(3_600_010_000) == WALL_NS + 20_000_000


def test_same_board_time_twice_and_host_gap_are_continuous():
    clock = BoardClock()
    assert clock.observe(0, WALL_NS)
    assert clock.observe(0, WALL_NS + 1_000_000)
    # The host slept 3 s and the board went on: consistent, no reset.
    assert clock.observe(3_000_000, WALL_NS + 3_001_000_000)
    assert clock.observations == 3


@pytest.mark.parametrize("kwargs", [{"bin_s": 0.0}, {"window_s": 0.1, "bin_s": 0.5},
                                    {"min_bins_for_drift": 1}, {"max_jump_s": 0.0}])
def test_invalid_construction(kwargs):
    with pytest.raises(ValueError):
        BoardClock(**kwargs)
