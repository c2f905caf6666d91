"""Tests of the sample ring buffer."""

import threading

import numpy as np
import pytest

from rackpower_nodes.core.ring_buffer import SampleRing


def block(start: int, n: int, channels: int = 2):
    """Timestamps start..start+n-1 (ns) and values channel c = 100 * c + timestamp."""
    ts = np.arange(start, start + n, dtype=np.int64)
    vals = np.stack([ts + 100 * c for c in range(channels)]).astype(np.float32)
    return ts, vals


def test_empty_buffer():
    ring = SampleRing(channels=2, capacity=5)
    assert (len(ring), ring.capacity, ring.channels) == (0, 5, 2)
    ts, vals = ring.latest()
    assert ts.shape == (0,) and ts.dtype == np.int64
    assert vals.shape == (2, 0) and vals.dtype == np.float32
    assert ring.since(0)[0].shape == (0,) and ring.latest(3)[1].shape == (2, 0)


def test_extend_and_latest_in_order():
    ring = SampleRing(2, 5)
    ring.extend(*block(0, 3))
    assert len(ring) == 3
    ts, vals = ring.latest()
    assert ts.tolist() == [0, 1, 2]
    assert vals.tolist() == [[0, 1, 2], [100, 101, 102]]
    ts, vals = ring.latest(2)
    assert ts.tolist() == [1, 2] and vals[1].tolist() == [101, 102]
    assert ring.latest(0)[0].shape == (0,)
    assert ring.latest(10)[0].tolist() == [0, 1, 2]


def test_wrap_around_keeps_newest():
    ring = SampleRing(2, 5)
    ring.extend(*block(0, 3))
    ring.extend(*block(3, 4))  # crosses the end of storage
    assert len(ring) == 5
    ts, vals = ring.latest()
    assert ts.tolist() == [2, 3, 4, 5, 6]
    assert vals[1].tolist() == [102, 103, 104, 105, 106]
    ring.extend(*block(7, 1))
    assert ring.latest(3)[0].tolist() == [5, 6, 7]


@pytest.mark.parametrize("n", [5, 6, 13])
def test_block_larger_than_capacity(n):
    ring = SampleRing(2, 5)
    ring.extend(*block(0, 2))
    ring.extend(*block(10, n))
    ts, vals = ring.latest()
    expected = list(range(10 + n - 5, 10 + n))
    assert ts.tolist() == expected
    assert vals[0].tolist() == expected


def test_results_are_copies():
    ring = SampleRing(1, 4)
    ring.extend(*block(0, 4, channels=1))
    ts, vals = ring.latest()
    ts[:] = -1
    vals[:] = -1
    assert ring.latest()[0].tolist() == [0, 1, 2, 3]
    assert ring.latest()[1].tolist() == [[0, 1, 2, 3]]


def test_since():
    ring = SampleRing(2, 5)
    ring.extend(np.array([10, 20, 30], dtype=np.int64), np.ones((2, 3)))
    ring.extend(np.array([40, 50, 60], dtype=np.int64), np.arange(6).reshape(2, 3))
    ts, vals = ring.since(35)
    assert ts.tolist() == [40, 50, 60]
    assert vals.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert ring.since(20)[0].tolist() == [20, 30, 40, 50, 60]  # 10 was overwritten
    assert ring.since(61)[0].shape == (0,)
    assert ring.since(1_700_000_000_000_000_000)[1].shape == (2, 0)


def test_wall_clock_timestamps_are_exact():
    ring = SampleRing(1, 3)
    ts = np.array([1_700_000_000_000_000_001, 1_700_000_000_000_000_002], dtype=np.int64)
    ring.extend(ts, np.zeros((1, 2)))
    assert ring.since(1_700_000_000_000_000_002)[0].tolist() == [1_700_000_000_000_000_002]


def test_clear():
    ring = SampleRing(2, 3)
    ring.extend(*block(0, 3))
    ring.clear()
    assert len(ring) == 0 and ring.latest()[0].shape == (0,)
    ring.extend(*block(5, 1))
    assert ring.latest()[0].tolist() == [5]


@pytest.mark.parametrize("ts_shape, vals_shape, fragment", [
    ((3,), (3, 3), "values shape (3, 3): expected (2, 3)"),
    ((3,), (2, 4), "values shape (2, 4): expected (2, 3)"),
    ((3,), (3,), "values shape (3,): expected (2, 3)"),
    ((3, 1), (2, 3), "timestamps shape (3, 1): expected (n,)"),
])
def test_shape_errors_name_the_shape(ts_shape, vals_shape, fragment):
    ring = SampleRing(2, 5)
    with pytest.raises(ValueError) as info:
        ring.extend(np.zeros(ts_shape, dtype=np.int64), np.zeros(vals_shape))
    assert fragment in str(info.value)
    assert len(ring) == 0


def test_float_timestamps_and_bad_arguments_rejected():
    ring = SampleRing(1, 2)
    with pytest.raises(ValueError, match="timestamps dtype float64"):
        ring.extend(np.array([1.5]), np.zeros((1, 1)))
    with pytest.raises(ValueError, match="n = -1"):
        ring.latest(-1)
    for channels, capacity in [(0, 5), (2, 0), (2, 2.5), (True, 3)]:
        with pytest.raises(ValueError):
            SampleRing(channels, capacity)


@pytest.mark.parametrize("seed", range(40))
def test_matches_a_simple_model(seed):
    rng = np.random.default_rng(seed)
    capacity = int(rng.integers(1, 10))
    sizes = rng.integers(0, 21, size=int(rng.integers(0, 9))).tolist()
    ring = SampleRing(2, capacity)
    history: list[int] = []
    for n in sizes:
        ts, vals = block(len(history), n)
        ring.extend(ts, vals)
        history.extend(ts.tolist())
    expected = history[-capacity:]
    ts, vals = ring.latest()
    assert ts.tolist() == expected and len(ring) == len(expected)
    assert vals[1].tolist() == [t + 100 for t in expected]


def test_concurrent_writer_and_readers_see_consistent_snapshots():
    ring = SampleRing(2, 64)
    stop = threading.Event()
    problems: list[str] = []

    def reader():
        while not stop.is_set():
            ts, vals = ring.latest()
            if ts.size and (np.any(np.diff(ts) != 1) or np.any(vals[0] != ts)):
                problems.append(f"torn read {ts.tolist()}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(2000):
        ring.extend(*block(i * 7, 7))
    stop.set()
    for t in threads:
        t.join()
    assert problems == []
    assert ring.latest(1)[0].tolist() == [2000 * 7 - 1]
