"""The serial reader thread: keeps a `SensorPort` open and hands every read to a sink.

It never runs on the ROS executor. When the port fails or cannot be opened it reports the new
state, waits with exponential back-off (initial, doubling, capped) and tries again, so a cable
pulled and plugged back in resumes by itself.

Paced reads: after a read that returned data the thread sleeps until `min_read_interval_s` has
passed since that read began, so a 1 kHz board is read in chunks of several frames instead of
one wake-up per frame (each read and each decode has a fixed cost). The kernel buffers what
arrives meanwhile; the newest frame of a chunk is still fresh when read, so host timestamps
keep their accuracy, and a batch leaves at most `min_read_interval_s` later than it would
unpaced (plus one read). A read that returns nothing is not paced: it already waited its
timeout.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rackpower_nodes.core.realtime import RealtimeReport, apply_realtime
from rackpower_nodes.drivers.serial_port import PortUnavailable, SensorPort

_log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1 << 16


@dataclass(frozen=True)
class PortState:
    """Link state as diagnostics show it."""

    state: str            # "connecting", "open", "disconnected", "stopped"
    detail: str           # the last error, or ""
    since_ns: int         # host time of the change
    reconnects: int       # successful opens after the first


class PortReader:
    """Reads a `SensorPort` in its own thread.

    Args:
        port: the link to read.
        on_data: called as on_data(bytes, host_ns) for each non-empty read, on the reader thread.
        on_state: called with a `PortState` whenever the link state changes.
        initial_backoff_s, max_backoff_s: reconnect delays, s.
        realtime: (sched_priority, cpu_affinity, lock_memory) applied on the reader thread.
        min_read_interval_s: shortest time from one read with data to the next, s (0: none).
    """

    def __init__(self, port: SensorPort, on_data: Callable[[bytes, int], None],
                 on_state: Callable[[PortState], None], initial_backoff_s: float = 0.05,
                 max_backoff_s: float = 1.0,
                 realtime: tuple[int, tuple[int, ...], bool] = (0, (), False),
                 min_read_interval_s: float = 0.0):
        if not 0.0 <= min_read_interval_s <= 1.0:
            raise ValueError(f"min_read_interval_s = {min_read_interval_s!r}: expected 0..1 s")
        self._port = port
        self._interval_s = min_read_interval_s
        self._on_data = on_data
        self._on_state = on_state
        self._backoff = (initial_backoff_s, max_backoff_s)
        self._realtime = realtime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serial-reader", daemon=True)
        self._opens = 0
        self.realtime_reports: list[RealtimeReport] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop reading and close the port."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._port.close()

    def _run(self) -> None:
        self.realtime_reports = apply_realtime(*self._realtime)
        for report in self.realtime_reports:
            (_log.info if report.applied else _log.warning)("reader thread: %s", report.detail)
        delay = self._backoff[0]
        self._set_state("connecting", "")
        while not self._stop.is_set():
            try:
                self._port.open()
            except PortUnavailable as exc:
                self._set_state("disconnected", exc.reason)
                self._stop.wait(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            self._opens += 1
            delay = self._backoff[0]
            self._set_state("open", "")
            reason = self._pump()
            self._port.close()
            if reason:
                self._set_state("disconnected", reason)
                self._stop.wait(delay)
        self._set_state("stopped", "")

    def _pump(self) -> str:
        """Read until stopped or the link fails; return the failure reason ('' when stopped)."""
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                data = self._port.read(READ_CHUNK_BYTES)
            except PortUnavailable as exc:
                return exc.reason
            if data:
                self._on_data(data, time.time_ns())
                rest = self._interval_s - (time.monotonic() - began)
                if rest > 0:
                    self._stop.wait(rest)
        return ""

    def _set_state(self, state: str, detail: str) -> None:
        self._on_state(PortState(state, detail, time.time_ns(), max(0, self._opens - 1)))
