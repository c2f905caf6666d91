"""Polling hosts: every node_exporter target concurrently, and this machine through psutil.

`TelemetryCollector.poll()` scrapes every configured host concurrently (one keep-alive HTTP
connection per host, reused while the exporter keeps it open), turns the counters into
rates with one `RateTracker` per host and reports a `HostStatus` per host. A failing host never
raises: its status says why (`last_error` names the host and the reason) and goes stale after
a while. `LocalHostReader` reports this machine the same way from psutil.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Self

from rackpower_nodes.core.telemetry.exporter import (
    CPU_MODES, Connection, HostTarget, RawSample, ScrapeError, _is_disk, _is_net, scrape)
from rackpower_nodes.core.telemetry.rates import HostRates, RateTracker

_log = logging.getLogger(__name__)

_POLL_MARGIN_S = 0.5             # poll() waits this long past the largest target timeout
_CLOSE_POLL_S = 0.1              # longest a poll() in progress runs on after close(), s


@dataclass(frozen=True)
class HostStatus:
    """What is known about one host after a poll. `rates` are those of the last successful
    scrape (None until two succeeded); times are time.time() seconds."""

    host: str
    up: bool                      # the last scrape succeeded
    stale: bool                   # no success within stale_after_s (or never)
    rates: HostRates | None
    last_error: str               # '' when up
    last_success_s: float | None
    consecutive_failures: int
    counter_resets: int           # intervals with a counter reset since start


class _HostState:
    """Mutable per-host bookkeeping: rates, errors and counts behind a HostStatus."""

    def __init__(self, name: str):
        self.name = name
        self.tracker = RateTracker()
        self.rates: HostRates | None = None
        self.error = "never scraped"
        self.up = False
        self.last_success_s: float | None = None
        self.failures = 0
        self.resets = 0
        self.in_flight: Future | None = None
        self.connection = Connection()     # kept alive from one scrape of the host to the next

    def succeeded(self, sample: RawSample, t_s: float) -> None:
        if not self.up:
            _log.info("%s is up", self.name)
        self.up, self.error, self.failures = True, "", 0
        self.last_success_s = t_s
        rates = self.tracker.update(sample, t_s)
        if rates is not None:
            self.rates = rates
            if rates.counter_reset:
                self.resets += 1
                _log.info("%s: counter reset, rates re-baselined", self.name)

    def failed(self, error: str) -> None:
        if self.up or self.failures == 0:
            _log.warning("scrape failed: %s", error)
        self.up, self.error = False, error
        self.failures += 1

    def status(self, now_s: float, stale_after_s: float) -> HostStatus:
        stale = self.last_success_s is None or now_s - self.last_success_s > stale_after_s
        return HostStatus(host=self.name, up=self.up, stale=stale, rates=self.rates,
                          last_error=self.error, last_success_s=self.last_success_s,
                          consecutive_failures=self.failures, counter_resets=self.resets)


class TelemetryCollector:
    """Scrapes all targets concurrently on each poll(); see the module docstring.

    A poll takes about the largest target timeout, not their sum. A scrape still running when
    its timeout (plus a margin) is over is reported as a timeout and not started again until it
    has ended. `clock` gives time.time()-like seconds (injectable for tests).
    """

    def __init__(self, targets: list[HostTarget], max_workers: int = 8,
                 stale_after_s: float = 3.0, clock: Callable[[], float] = time.time):
        names = [t.name for t in targets]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate host names in {names}")
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s = {stale_after_s!r}: expected > 0")
        self.stale_after_s = stale_after_s
        self._clock = clock
        self._targets = list(targets)
        self._hosts = {t.name: _HostState(t.name) for t in targets}
        self._poll_timeout_s = max((t.timeout_s for t in targets), default=0.0) + _POLL_MARGIN_S
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_workers),
                                        thread_name_prefix="scrape")
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def poll(self, now_s: float | None = None) -> list[HostStatus]:
        """Scrape every host once; one HostStatus per target, in target order. Never raises
        for a host failure. `now_s` (default: the clock) decides staleness. After close()
        it returns within _CLOSE_POLL_S, every scrape still running reported as a timeout."""
        with self._lock:
            for target in self._targets:
                st = self._hosts[target.name]
                if self._closed.is_set():
                    break
                if st.in_flight is None:
                    try:
                        st.in_flight = self._pool.submit(scrape, target, self._clock,
                                                         st.connection)
                    except RuntimeError:      # close() shut the pool down since the check
                        if not self._closed.is_set():
                            raise
                        break
            self._wait_for_scrapes()
            for st in self._hosts.values():
                _settle(st)
            now_s = self._clock() if now_s is None else now_s
            return [st.status(now_s, self.stale_after_s) for st in self._hosts.values()]

    def _wait_for_scrapes(self) -> None:
        """Until every scrape in flight ended, the poll timeout passed or close() was called."""
        deadline = time.monotonic() + self._poll_timeout_s
        pending = [st.in_flight for st in self._hosts.values() if st.in_flight is not None]
        while pending and not self._closed.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            pending = list(wait(pending, timeout=min(left, _CLOSE_POLL_S)).not_done)

    def close(self) -> None:
        """Stop the worker threads without waiting (running scrapes end by their own
        timeouts) and make a poll() in progress return at once. Safe from any thread."""
        self._closed.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for st in self._hosts.values():       # a scrape still running closes its own at its end
            fut = st.in_flight
            if fut is None:
                st.connection.close()
            else:
                fut.add_done_callback(lambda _f, conn=st.connection: conn.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _settle(st: _HostState) -> None:
    """Record the outcome of the host's scrape, or a timeout if it is still running."""
    fut = st.in_flight
    if fut is None or fut.cancelled():   # closed before this host's scrape was started
        st.in_flight = None
        st.up, st.error = False, f"{st.name}: not scraped (the collector is closed)"
        return
    if not fut.done():
        st.failed(f"{st.name}: timeout (scrape still running)")
        return
    st.in_flight = None
    try:
        result = fut.result()
    except ScrapeError as exc:
        st.failed(str(exc))
    except Exception as exc:  # noqa: BLE001 (a bug must not take the other hosts down)
        _log.exception("scraping %s", st.name)
        st.failed(f"{st.name}: {type(exc).__name__}: {exc}")
    else:
        st.succeeded(result.sample, result.t_s)


def local_raw_sample() -> RawSample:
    """A RawSample of this machine from psutil (same series and exclusions as the exporter)."""
    import psutil

    times = psutil.cpu_times()
    mem = psutil.virtual_memory()
    nics = {n: c for n, c in psutil.net_io_counters(pernic=True).items() if _is_net(n)}
    disks = {n: c for n, c in (psutil.disk_io_counters(perdisk=True) or {}).items()
             if _is_disk(n)}
    return RawSample(
        cpu_seconds_by_mode={m: float(getattr(times, m, 0.0)) for m in CPU_MODES},
        n_cpus=psutil.cpu_count() or 1,
        mem_total_bytes=float(mem.total), mem_available_bytes=float(mem.available),
        net_rx_by_device={n: float(c.bytes_recv) for n, c in nics.items()},
        net_tx_by_device={n: float(c.bytes_sent) for n, c in nics.items()},
        disk_read_by_device={n: float(c.read_bytes) for n, c in disks.items()},
        disk_written_by_device={n: float(c.write_bytes) for n, c in disks.items()},
        host_time_s=time.time(), boot_time_s=float(psutil.boot_time()))


class LocalHostReader:
    """This machine as one more host: HostStatus from psutil with the same rate logic."""

    def __init__(self, name: str = "localhost", stale_after_s: float = 3.0):
        self.stale_after_s = stale_after_s
        self._state = _HostState(name)

    def poll(self, now_s: float | None = None) -> HostStatus:
        """Read psutil now; never raises (a psutil error makes the status down)."""
        try:
            sample = local_raw_sample()
        except (OSError, RuntimeError) as exc:
            self._state.failed(f"{self._state.name}: psutil: {exc}")
        else:
            self._state.succeeded(sample, sample.host_time_s)
        return self._state.status(time.time() if now_s is None else now_s, self.stale_after_s)


def local_host_rates(tracker: RateTracker, t_s: float | None = None) -> HostRates | None:
    """Rates of this machine since the previous call with the same tracker (None the first
    time), computed exactly as for a scraped host."""
    sample = local_raw_sample()
    return tracker.update(sample, sample.host_time_s if t_s is None else t_s)
