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


def _runs(clock, first_us, count, step_us=50_000, frame_us=1000):
    """Stamp ``count`` consecutive runs of 50 frames; return (first, last) sample ns of each."""
    out = []
    for k in range(count):
        lo = first_us + k * step_us
        hi = lo + step_us - frame_us
        stamp = clock.run_host_ns(lo, hi)
        out.append((stamp, stamp + (hi - lo) * 1000))
    return out


def test_late_first_read_steps_the_estimate_back_but_never_the_stamps():
    """A loaded host reads the first chunk 300 ms late, later ones on time: the offset estimate
    (smallest delay so far) then drops by 300 ms between two runs."""
    clock = BoardClock()
    clock.observe(50_000, WALL_NS + 50_000_000 + 300_000_000)
    before = _runs(clock, 0, 1)
    late_estimate = clock.to_host_ns(50_000)
    clock.observe(100_000, WALL_NS + 100_000_000)  # on time
    assert clock.to_host_ns(50_000) == late_estimate - 300_000_000  # the estimate went back
    after = _runs(clock, 50_000, 800)
    runs = before + after
    for (_, prev_last), (first, last) in zip(runs, runs[1:]):
        assert first - prev_last >= 500_000  # later than the previous run, by half a period
        assert last > first
    assert runs[1][0] == runs[0][1] + 500_000  # held at the floor, not at the estimate
    # Catching up by half a period per run: 300 ms are made up within 600 runs (30 s).
    assert after[-1][0] == clock.to_host_ns(50_000 + 799 * 50_000)


def test_stamps_stay_increasing_through_refits_and_a_board_restart():
    rng = np.random.default_rng(5)
    clock = BoardClock()
    stamps = []
    board, host = 0, WALL_NS
    for _ in range(200):  # 10 s of 50 ms chunks with heavy, bursty read delays
        board += 50_000
        host_read = host + board * 1000 + int(rng.exponential(20e6)) \
            + (int(400e6) if rng.random() < 0.05 else 0)
        clock.observe(board, host_read)
        stamps.append(clock.run_host_ns(board - 49_000, board))
    assert clock.observe(1_000, host + board * 1000 + 50_000_000) is False  # board restarted
    stamps.append(clock.run_host_ns(0, 1_000))
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_run_with_last_before_first_is_refused():
    clock = BoardClock()
    clock.observe(0, WALL_NS)
    with pytest.raises(ValueError, match="10 µs to 5 µs"):
        clock.run_host_ns(10, 5)
