"""Host telemetry from Prometheus node_exporter endpoints: the pure part of `host_telemetry`.

`TelemetryCollector.poll()` scrapes every configured host concurrently (`fetch` over HTTP,
`parse_node_exporter` with prometheus_client's parser), turns the counters into rates with one
`RateTracker` per host and reports a `HostStatus` per host. A failing host never raises: its
status says why (`last_error` names the host and the reason) and goes stale after a while.

Rate interval: a rate is a counter delta divided by the host's own clock delta
(`node_time_seconds`, which the exporter reads while collecting) when both scrapes carry it and
it advanced; otherwise by the delta of the scrape arrival times. The host clock makes rates
immune to network and scheduling jitter, and makes the simulator deterministic; a host clock
step (NTP) distorts one interval.

Counter resets (host reboot, exporter restart, device removed): a counter that decreases, or
`node_boot_time_seconds` moving forward by more than 2 s, gives no rate (None) for that
interval and sets `counter_reset`; the next interval is computed from the new values. Rates are
never negative.
Rates of absent series are None; consumers publish None as NaN.

Bounded inputs: an exporter is a remote party, so the body is read in chunks and refused past
`HostTarget.max_body_bytes` (default 2 MiB; a real node_exporter body is ~58 kB on a 2-CPU
host, larger with more CPUs, disks and interfaces), and only the lines of the series used here
(at most MAX_SAMPLES of them) reach prometheus_client's parser: ~8 ms of filtering per MB
plus a bounded parse (benchmarks/RESULTS.md, "Bounded inputs").
"""
from __future__ import annotations

import http.client
import logging
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Self

from prometheus_client.parser import text_string_to_metric_families

from rackpower_nodes.core.calendar import phases as calendar_phases

__all__ = [
    "MAX_BODY_BYTES", "MAX_SAMPLES", "USED_SERIES", "HostRates", "HostStatus", "HostTarget",
    "LocalHostReader", "RateTracker", "RawSample", "Scrape", "ScrapeError",
    "TelemetryCollector", "calendar_features", "fetch", "local_host_rates", "local_raw_sample",
    "parse_node_exporter", "scrape",
]

_log = logging.getLogger(__name__)

MAX_BODY_BYTES = 2 * 2**20       # default cap of a response body, bytes; larger ones are refused
MAX_SAMPLES = 20_000             # most lines of the used series parsed per scrape (about 0.2 s)
_READ_CHUNK = 65536              # bytes per read; a refused body was read up to cap + this
# The series parse_node_exporter uses; every other line is dropped before parsing.
USED_SERIES = ("node_cpu_seconds_total", "node_memory_MemTotal_bytes",
               "node_memory_MemAvailable_bytes", "node_network_receive_bytes_total",
               "node_network_transmit_bytes_total", "node_disk_read_bytes_total",
               "node_disk_written_bytes_total", "node_time_seconds", "node_boot_time_seconds")
_USED_LINE = re.compile(r"^[ \t]*(?:%s)[ \t{].*$" % "|".join(map(re.escape, USED_SERIES)),
                        re.MULTILINE)
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
IDLE_MODES = ("idle", "iowait")
NET_EXCLUDE = frozenset({"lo"})
# Whole disks only: partitions, device-mapper, md RAID, loop, RAM and zram devices would count
# the same bytes twice or are not disks.
_DISK_EXCLUDE = re.compile(
    r"^((ram|loop|fd|zram|md|sr)\d+|dm-\d+|(h|s|v|xv)d[a-z]+\d+|(nvme\d+n\d+|mmcblk\d+)p\d+)$")
_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
# node_boot_time_seconds moving forward by more than this (s) is a reboot; the kernel's value
# wanders by ~1 s when the wall clock is adjusted.
_BOOT_JITTER_S = 2.0
_POLL_MARGIN_S = 0.5             # poll() waits this long past the largest target timeout


class ScrapeError(Exception):
    """One host could not be scraped or its answer was not node_exporter text."""

    def __init__(self, host: str, reason: str):
        super().__init__(f"{host}: {reason}")
        self.host = host
        self.reason = reason


@dataclass(frozen=True)
class HostTarget:
    """A node_exporter endpoint, e.g. ``http://127.0.0.1:9100/metrics``; timeout in s, the
    largest body accepted in bytes."""

    name: str
    url: str
    timeout_s: float = 0.5
    max_body_bytes: int = MAX_BODY_BYTES


@dataclass(frozen=True)
class RawSample:
    """Counter and gauge values of one scrape. Absent series are None (empty mapping for
    per-device counters). CPU seconds are summed over CPUs; byte counters are per device."""

    cpu_seconds_by_mode: Mapping[str, float]   # s, summed over CPUs
    n_cpus: int
    mem_total_bytes: float | None = None
    mem_available_bytes: float | None = None
    net_rx_by_device: Mapping[str, float] | None = None       # bytes, lo excluded
    net_tx_by_device: Mapping[str, float] | None = None       # bytes, lo excluded
    disk_read_by_device: Mapping[str, float] | None = None    # bytes, whole disks
    disk_written_by_device: Mapping[str, float] | None = None  # bytes, whole disks
    host_time_s: float | None = None    # node_time_seconds: host clock at collection, s
    boot_time_s: float | None = None    # node_boot_time_seconds, s since the epoch

    net_rx_bytes = property(lambda self: _total(self.net_rx_by_device))
    net_tx_bytes = property(lambda self: _total(self.net_tx_by_device))
    disk_read_bytes = property(lambda self: _total(self.disk_read_by_device))
    disk_written_bytes = property(lambda self: _total(self.disk_written_by_device))


def _total(by_device: Mapping[str, float] | None) -> float | None:
    return float(sum(by_device.values())) if by_device else None


@dataclass(frozen=True)
class Scrape:
    """A parsed scrape; `t_s` is time.time() when the response arrived, `duration_s` the
    time from request to parsed sample."""

    host: str
    t_s: float
    sample: RawSample
    duration_s: float


@dataclass(frozen=True)
class HostRates:
    """Utilisation and rates over one scrape interval. None: unknown for this interval."""

    cpu_util: float | None            # 0..1, busy share of all CPU time
    mem_used_fraction: float | None   # 0..1, 1 - MemAvailable / MemTotal
    mem_used_bytes: float | None      # bytes, MemTotal - MemAvailable
    net_rx_bps: float | None          # bytes/s received, all devices but lo
    net_tx_bps: float | None          # bytes/s transmitted
    disk_read_bps: float | None       # bytes/s read, whole disks
    disk_write_bps: float | None      # bytes/s written
    interval_s: float                 # s the rates are averaged over
    counter_reset: bool = False       # a counter went backwards: its rate is None


def fetch(target: HostTarget, timeout_s: float | None = None) -> str:
    """GET the target's exposition text; the whole exchange takes at most about `timeout_s`
    (default: the target's). Raises ScrapeError on refusal, timeout, non-200, a body over
    the target's max_body_bytes (read in chunks, never more than the cap plus one chunk) or one
    that is not UTF-8 text."""
    timeout_s = target.timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    url = urllib.parse.urlsplit(target.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ScrapeError(target.name, f"bad url {target.url!r}")
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(url.hostname, url.port, timeout=timeout_s)
    try:
        path = (url.path or "/metrics") + (f"?{url.query}" if url.query else "")
        conn.request("GET", path, headers={"Accept": _ACCEPT})
        _shrink_timeout(conn, deadline)
        resp = conn.getresponse()
        if resp.status != 200:
            raise ScrapeError(target.name, f"HTTP {resp.status} {resp.reason}")
        body = _read_capped(conn, resp, deadline, target)
    except ConnectionRefusedError:
        raise ScrapeError(target.name, "connection refused") from None
    except TimeoutError:
        raise ScrapeError(target.name, f"timeout after {timeout_s:.3g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ScrapeError(target.name, f"{type(exc).__name__}: {exc}") from None
    finally:
        conn.close()
    ctype = resp.getheader("Content-Type", "text/plain")
    if not ctype.startswith(("text/", "application/openmetrics-text")):
        raise ScrapeError(target.name, f"garbage: non-text content type {ctype!r}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeError(target.name, "garbage: body is not UTF-8 text") from None


def _shrink_timeout(conn: http.client.HTTPConnection, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    if conn.sock is not None:
        conn.sock.settimeout(remaining)


def _read_capped(conn, resp, deadline: float, target: HostTarget) -> bytes:
    """The body, read in chunks of _READ_CHUNK bytes; ScrapeError past target.max_body_bytes."""
    cap = target.max_body_bytes
    length = resp.getheader("Content-Length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise ScrapeError(target.name, f"body too large: Content-Length {length} bytes, more "
                                       f"than the {cap}-byte cap (poll.max_body_bytes)")
    body = bytearray()
    while True:
        _shrink_timeout(conn, deadline)
        chunk = resp.read1(_READ_CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > cap:
            raise ScrapeError(target.name, f"body too large: more than the {cap}-byte cap "
                                           f"(poll.max_body_bytes); stopped after reading "
                                           f"{len(body)} bytes")


def parse_node_exporter(text: str, host: str = "?") -> RawSample:
    """Extract the series rackpower uses from exposition text. Only the lines of USED_SERIES
    are parsed (comments and other series are dropped first). Raises ScrapeError('garbage
    ...') when those lines do not parse, number more than MAX_SAMPLES or have no
    node_cpu_seconds_total."""
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    used = _used_lines(text, host)
    try:
        for family in text_string_to_metric_families(used):
            for s in family.samples:
                if math.isfinite(s.value):       # NaN/Inf samples count as absent
                    series.setdefault(s.name, []).append((s.labels, float(s.value)))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ScrapeError(host, f"garbage: not exposition text ({exc})") from None
    cpu = series.get("node_cpu_seconds_total")
    if not cpu:
        raise ScrapeError(host, "garbage: no node_cpu_seconds_total")
    modes = dict.fromkeys(CPU_MODES, 0.0)
    for labels, value in cpu:
        mode = labels.get("mode", "unknown")
        modes[mode] = modes.get(mode, 0.0) + value
    return RawSample(
        cpu_seconds_by_mode=modes, n_cpus=len({labels.get("cpu") for labels, _ in cpu}),
        mem_total_bytes=_scalar(series, "node_memory_MemTotal_bytes"),
        mem_available_bytes=_scalar(series, "node_memory_MemAvailable_bytes"),
        net_rx_by_device=_per_device(series, "node_network_receive_bytes_total", _is_net),
        net_tx_by_device=_per_device(series, "node_network_transmit_bytes_total", _is_net),
        disk_read_by_device=_per_device(series, "node_disk_read_bytes_total", _is_disk),
        disk_written_by_device=_per_device(series, "node_disk_written_bytes_total", _is_disk),
        host_time_s=_scalar(series, "node_time_seconds"),
        boot_time_s=_scalar(series, "node_boot_time_seconds"))


def _used_lines(text: str, host: str) -> str:
    """The lines of USED_SERIES in `text` (about 8 ms per MB); ScrapeError past MAX_SAMPLES."""
    lines = []
    for match in _USED_LINE.finditer(text):
        if len(lines) == MAX_SAMPLES:
            raise ScrapeError(host, f"garbage: more than {MAX_SAMPLES} samples of the series "
                                    f"rackpower uses")
        lines.append(match.group())
    return "\n".join(lines) + "\n"


def _is_net(device: str) -> bool:
    return device not in NET_EXCLUDE


def _is_disk(device: str) -> bool:
    return not _DISK_EXCLUDE.match(device)


def _scalar(series, name: str) -> float | None:
    values = series.get(name)
    return values[0][1] if values else None


def _per_device(series, name: str, keep: Callable[[str], bool]) -> dict[str, float] | None:
    if name not in series:
        return None
    return {lab.get("device", ""): v for lab, v in series[name] if keep(lab.get("device", ""))}


def scrape(target: HostTarget, clock: Callable[[], float] = time.time) -> Scrape:
    """Fetch and parse one target. Raises ScrapeError."""
    start = time.monotonic()
    text = fetch(target)
    t_s = clock()
    sample = parse_node_exporter(text, target.name)
    return Scrape(target.name, t_s, sample, time.monotonic() - start)


class RateTracker:
    """Turns successive RawSamples of one host into HostRates (see the module docstring)."""

    def __init__(self) -> None:
        self._prev: RawSample | None = None
        self._prev_t_s = 0.0

    def update(self, sample: RawSample, t_s: float) -> HostRates | None:
        """Rates since the previous sample; None for the first one (or a non-advancing clock).
        `t_s` is the arrival time in s, used when the host clock is unavailable."""
        prev, prev_t_s = self._prev, self._prev_t_s
        self._prev, self._prev_t_s = sample, t_s
        if prev is None:
            return None
        dt = _interval(prev, sample, t_s - prev_t_s)
        if dt is None:
            return None
        rebooted = (prev.boot_time_s is not None and sample.boot_time_s is not None
                    and sample.boot_time_s - prev.boot_time_s > _BOOT_JITTER_S)
        cpu_util, cpu_reset = _cpu_util(prev, sample)
        rates = {name: _rate(getattr(prev, attr), getattr(sample, attr), dt)
                 for name, attr in (("net_rx_bps", "net_rx_by_device"),
                                    ("net_tx_bps", "net_tx_by_device"),
                                    ("disk_read_bps", "disk_read_by_device"),
                                    ("disk_write_bps", "disk_written_by_device"))}
        reset = rebooted or cpu_reset or any(r is _RESET for r in rates.values())
        if rebooted:
            cpu_util, rates = None, dict.fromkeys(rates)
        rates = {k: None if r is _RESET else r for k, r in rates.items()}
        used_fraction, used_bytes = _memory(sample)
        return HostRates(cpu_util=cpu_util, mem_used_fraction=used_fraction,
                         mem_used_bytes=used_bytes, interval_s=dt, counter_reset=reset, **rates)


_RESET = object()   # marker: a counter decreased


def _interval(prev: RawSample, cur: RawSample, arrival_dt: float) -> float | None:
    if prev.host_time_s is not None and cur.host_time_s is not None:
        host_dt = cur.host_time_s - prev.host_time_s
        if host_dt > 0:
            return host_dt
    return arrival_dt if arrival_dt > 0 else None


def _cpu_util(prev: RawSample, cur: RawSample) -> tuple[float | None, bool]:
    """(utilisation, reset). Idle and iowait are taken together: the kernel may move time
    between them, so iowait alone can go backwards without a reset. Decreases within float
    rounding of the summed counters are no reset."""
    if prev.n_cpus != cur.n_cpus:
        return None, True
    before, after = prev.cpu_seconds_by_mode, cur.cpu_seconds_by_mode
    deltas = {m: after.get(m, 0.0) - before.get(m, 0.0) for m in before.keys() | after.keys()}
    idle = sum(v for m, v in deltas.items() if m in IDLE_MODES)
    busy = sum(v for m, v in deltas.items() if m not in IDLE_MODES)
    tolerance = 1e-9 * (1.0 + sum(before.values()))
    if idle < -tolerance or busy < -tolerance:
        return None, True
    idle, busy = max(idle, 0.0), max(busy, 0.0)
    if idle + busy <= 0:
        return None, False
    return busy / (idle + busy), False


def _rate(prev: Mapping[str, float] | None, cur: Mapping[str, float] | None, dt: float):
    """Bytes/s over the devices present in both samples; None if none is; _RESET if any
    counter decreased."""
    if not prev or not cur:
        return None
    common = prev.keys() & cur.keys()
    if not common:
        return None
    deltas = [cur[d] - prev[d] for d in common]
    return _RESET if min(deltas) < 0 else sum(deltas) / dt


def _memory(sample: RawSample) -> tuple[float | None, float | None]:
    total, avail = sample.mem_total_bytes, sample.mem_available_bytes
    if total is None or avail is None or total <= 0:
        return None, None
    used = min(total, max(0.0, total - avail))
    return used / total, used


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

    def poll(self, now_s: float | None = None) -> list[HostStatus]:
        """Scrape every host once; one HostStatus per target, in target order. Never raises
        for a host failure. `now_s` (default: the clock) decides staleness."""
        with self._lock:
            for target in self._targets:
                st = self._hosts[target.name]
                if st.in_flight is None:
                    st.in_flight = self._pool.submit(scrape, target, self._clock)
            wait([st.in_flight for st in self._hosts.values()], timeout=self._poll_timeout_s)
            for st in self._hosts.values():
                _settle(st)
            now_s = self._clock() if now_s is None else now_s
            return [st.status(now_s, self.stale_after_s) for st in self._hosts.values()]

    def close(self) -> None:
        """Stop the worker threads (running scrapes end by their own timeouts)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _settle(st: _HostState) -> None:
    """Record the outcome of the host's scrape, or a timeout if it is still running."""
    fut = st.in_flight
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


def calendar_features(t_unix: float, tz_offset_s: int = 0) -> dict[str, float]:
    """Calendar features of a Unix time in a zone `tz_offset_s` east of UTC: hour_of_day
    (0..24, fractional), day_of_week (0 = Monday .. 6), tod_sin/tod_cos (phase of the day),
    dow_sin/dow_cos (phase of the week, Monday 00:00 = 0) and is_weekend (0 or 1)."""
    local = datetime.fromtimestamp(t_unix, tz=timezone(timedelta(seconds=tz_offset_s)))
    day_s = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond * 1e-6
    dow = local.weekday()
    tod_sin, tod_cos, dow_sin, dow_cos = map(float, calendar_phases(t_unix + tz_offset_s)[0])
    return {"hour_of_day": day_s / 3600, "day_of_week": dow,
            "tod_sin": tod_sin, "tod_cos": tod_cos, "dow_sin": dow_sin, "dow_cos": dow_cos,
            "is_weekend": float(dow >= 5)}


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
