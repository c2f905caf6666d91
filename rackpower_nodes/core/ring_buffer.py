"""Fixed-capacity ring buffer of the last samples (float32 values, int64 timestamps in ns).

One writer (the serial reader thread) and several readers (ROS callbacks) share it; a single
``threading.Lock`` guards every access. Reads always return copies, oldest → newest.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["SampleRing"]


class SampleRing:
    """Fixed-capacity circular buffer of per-channel float32 samples with int64 timestamps (ns).

    :param channels: number of channels (rows of ``values``), >= 1.
    :param capacity: samples kept per channel, >= 1; older ones are overwritten.
    """

    def __init__(self, channels: int, capacity: int):
        for name, value in (("channels", channels), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} = {value!r}: expected an integer >= 1")
        self._channels, self._capacity = int(channels), int(capacity)
        self._ts = np.zeros(self._capacity, dtype=np.int64)
        self._values = np.zeros((self._channels, self._capacity), dtype=np.float32)
        self._head = 0  # next write position
        self._size = 0
        self._lock = threading.Lock()

    @property
    def channels(self) -> int:
        """Number of channels."""
        return self._channels

    @property
    def capacity(self) -> int:
        """Maximum number of samples kept."""
        return self._capacity

    def __len__(self) -> int:
        with self._lock:
            return self._size

    def _check(self, timestamps_ns: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, ...]:
        ts, vals = np.asarray(timestamps_ns), np.asarray(values)
        if ts.ndim != 1:
            raise ValueError(f"timestamps shape {ts.shape}: expected (n,)")
        if ts.size and ts.dtype.kind not in "iu":
            raise ValueError(f"timestamps dtype {ts.dtype}: expected integer ns")
        if vals.shape != (self._channels, ts.shape[0]):
            raise ValueError(f"values shape {vals.shape}: expected ({self._channels}, "
                             f"{ts.shape[0]}) (channels, samples)")
        return ts.astype(np.int64, copy=False), vals

    def extend(self, timestamps_ns: np.ndarray, values: np.ndarray) -> None:
        """Append ``n`` samples: timestamps ``(n,)`` in ns, values ``(channels, n)``.

        When ``n`` exceeds the capacity only the newest ``capacity`` samples are kept.

        :raises ValueError: on a wrong shape or non-integer timestamps (the message names it).
        """
        ts, vals = self._check(timestamps_ns, values)
        n = ts.shape[0]
        if n == 0:
            return
        if n > self._capacity:
            ts, vals, n = ts[-self._capacity:], vals[:, -self._capacity:], self._capacity
        with self._lock:
            first = min(n, self._capacity - self._head)
            stop = self._head + first
            self._ts[self._head:stop] = ts[:first]
            self._values[:, self._head:stop] = vals[:, :first]
            rest = n - first
            self._ts[:rest] = ts[first:]
            self._values[:, :rest] = vals[:, first:]
            self._head = (self._head + n) % self._capacity
            self._size = min(self._size + n, self._capacity)

    def _ordered_index(self, k: int) -> np.ndarray:
        """Ring positions of the newest ``k`` samples, oldest first (lock held)."""
        start = self._head - k
        return np.arange(start, start + k) % self._capacity

    def latest(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``n`` samples (all when None), oldest → newest, as copies.

        :returns: ``(timestamps (k,) int64 ns, values (channels, k) float32)``, ``k <= n``.
        :raises ValueError: when ``n`` is negative.
        """
        if n is not None and n < 0:
            raise ValueError(f"n = {n!r}: expected >= 0 or None")
        with self._lock:
            k = self._size if n is None else min(int(n), self._size)
            idx = self._ordered_index(k)
            return self._ts[idx], self._values[:, idx]

    def since(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples whose timestamp is >= ``t_ns`` (ns), oldest → newest, as copies."""
        with self._lock:
            idx = self._ordered_index(self._size)
            idx = idx[self._ts[idx] >= np.int64(t_ns)]
            return self._ts[idx], self._values[:, idx]

    def clear(self) -> None:
        """Drop all samples (capacity and channels are unchanged)."""
        with self._lock:
            self._head = self._size = 0
