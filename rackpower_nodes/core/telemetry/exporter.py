"""node_exporter text: fetching one endpoint over HTTP and parsing the series rackpower uses.

`fetch` reads a target's exposition text (on a kept-alive `Connection` when given),
`parse_node_exporter` turns it into a `RawSample`, `scrape` does both; a failure raises
`ScrapeError` naming the host and the reason.

The parser is the exposition format's sample line (`name{label="value",...} value
[timestamp]`) as regular expressions, for the few series used here: prometheus_client's
general parser took about 2 ms per simulated host's scrape, half of host_telemetry's CPU at
14 hosts x 2 Hz (benchmarks/RESULTS.md, "A light controller"); this one about a tenth of that.
A line of a used series that does not have that shape is garbage, as before.

Bounded inputs: an exporter is a remote party, so the body is read in chunks and refused past
`HostTarget.max_body_bytes` (default 2 MiB; a real node_exporter body is ~58 kB on a 2-CPU
host, larger with more CPUs, disks and interfaces), and only the lines of the series used here
(at most MAX_SAMPLES of them) are parsed: ~8 ms of filtering per MB plus a bounded parse
(benchmarks/RESULTS.md, "Bounded inputs").
"""
from __future__ import annotations

import http.client
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass


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
# one sample line: name, optional {labels} (quoted values may hold any escaped character),
# value, optional integer timestamp (ms)
_QUOTED = r'"(?:[^"\\\n]|\\.)*"'
_SAMPLE = re.compile(r"[ \t]*([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*"
                     r"(?:\{((?:[^\"}]|%s)*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*" % _QUOTED)
_PAIR = r"[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*(%s)[ \t]*" % _QUOTED
_LABEL = re.compile(_PAIR)
_LABELS = re.compile(r"(?:%s,)*(?:%s)?[ \t]*" % (_PAIR, _PAIR))   # the whole {...} body
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
# The common shape of a used line, matched over the whole body at once: labels without
# escapes or spaces (node_exporter writes them so). When every used line has it, parsing is
# one findall plus a float() and a label findall per line; otherwise the line-by-line parser
# above runs, with its exact errors.
_SIMPLE_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\\n]*)"')
_PLAIN_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'            # the same, no groups
_FAST_LINE = re.compile(
    r'^[ \t]*(%s)(?:\{((?:%s(?:,%s)*,?)?)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$'
    % ("|".join(map(re.escape, USED_SERIES)), _PLAIN_PAIR, _PLAIN_PAIR),
    re.MULTILINE)


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


class Connection:
    """A keep-alive HTTP connection to one target, used by one fetch at a time: fetch() opens
    it on first use, keeps it while the server does, and closes it after any error, a
    refused body or a server's `Connection: close` (the next fetch then opens a new one)."""

    def __init__(self) -> None:
        self.http: http.client.HTTPConnection | None = None

    def close(self) -> None:
        conn, self.http = self.http, None
        if conn is not None:
            conn.close()


def fetch(target: HostTarget, timeout_s: float | None = None,
          connection: Connection | None = None) -> str:
    """GET the target's exposition text; the whole exchange takes at most about `timeout_s`
    (default: the target's). With a `connection`, its open connection is reused (a reused one
    the server had closed meanwhile is retried once on a new one); without, a new one is
    opened and closed. Raises ScrapeError on refusal, timeout, non-200, a body over the
    target's max_body_bytes (read in chunks, never more than the cap plus one chunk) or one
    that is not UTF-8 text."""
    timeout_s = target.timeout_s if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    url = urllib.parse.urlsplit(target.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ScrapeError(target.name, f"bad url {target.url!r}")
    own = connection is None
    connection = Connection() if own else connection
    keep = False
    try:
        resp, body = _exchange(connection, target, url, timeout_s, deadline)
        keep = not own and not resp.will_close
    except ConnectionRefusedError:
        raise ScrapeError(target.name, "connection refused") from None
    except TimeoutError:
        raise ScrapeError(target.name, f"timeout after {timeout_s:.3g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ScrapeError(target.name, f"{type(exc).__name__}: {exc}") from None
    finally:
        if not keep:
            connection.close()
    ctype = resp.getheader("Content-Type", "text/plain")
    if not ctype.startswith(("text/", "application/openmetrics-text")):
        raise ScrapeError(target.name, f"garbage: non-text content type {ctype!r}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeError(target.name, "garbage: body is not UTF-8 text") from None


def _exchange(connection: Connection, target: HostTarget, url, timeout_s: float,
              deadline: float) -> tuple[http.client.HTTPResponse, bytes]:
    """One GET on `connection` (opened when closed; a reused one that the server closed is
    tried once more on a new one): the response and its whole body."""
    path = (url.path or "/metrics") + (f"?{url.query}" if url.query else "")
    for retry in (False, True):
        reused = connection.http is not None
        if not reused:
            cls = (http.client.HTTPSConnection if url.scheme == "https"
                   else http.client.HTTPConnection)
            connection.http = cls(url.hostname, url.port, timeout=timeout_s)
        conn = connection.http
        try:
            _shrink_timeout(conn, deadline)
            conn.request("GET", path, headers={"Accept": _ACCEPT})
            _shrink_timeout(conn, deadline)
            resp = conn.getresponse()
            break
        except (ConnectionResetError, BrokenPipeError):   # RemoteDisconnected included
            connection.close()
            if not reused or retry:
                raise
    if resp.status != 200:
        raise ScrapeError(target.name, f"HTTP {resp.status} {resp.reason}")
    body = _read_capped(conn, resp, deadline, target)
    resp.close()                 # read to its end: the connection may send the next request
    return resp, body


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
    try:
        series = _series_at_once(text, host)
    except ValueError:                            # an unusual line: parse line by line
        series = _series_by_line(text, host)
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


_Series = dict[str, list[tuple[dict[str, str], float]]]
# label sets seen, parsed once (the same few hundred come back every scrape of every host);
# the dicts are shared, read only. Emptied when it grows past the bound.
_LABEL_CACHE: dict[str, dict[str, str]] = {}
_LABEL_CACHE_SIZE = 20_000


def _series_at_once(text: str, host: str) -> _Series:
    """The used series by one findall over `text`; ValueError when a used line does not have
    the common shape (or its value is not a number): the caller then parses line by line.
    ScrapeError past MAX_SAMPLES."""
    found = _FAST_LINE.findall(text)
    if len(found) > MAX_SAMPLES:
        raise ScrapeError(host, f"garbage: more than {MAX_SAMPLES} samples of the series "
                                f"rackpower uses")
    if len(found) != len(_USED_LINE.findall(text)):
        raise ValueError("a used line of another shape")
    series: _Series = {}
    cache = _LABEL_CACHE
    if len(cache) > _LABEL_CACHE_SIZE:
        cache.clear()
    for name, labels, value in found:
        number = float(value)
        if math.isfinite(number):                # NaN/Inf samples count as absent
            parsed = cache.get(labels)
            if parsed is None:
                parsed = cache[labels] = dict(_SIMPLE_PAIR.findall(labels))
            series.setdefault(name, []).append((parsed, number))
    return series


def _series_by_line(text: str, host: str) -> _Series:
    """The used series, line by line; ScrapeError('garbage ...') naming a line that is not
    a sample line."""
    series: _Series = {}
    for line in _used_lines(text, host).splitlines():
        if not line:
            continue
        name, labels, value = _parse_line(line, host)
        if math.isfinite(value):                 # NaN/Inf samples count as absent
            series.setdefault(name, []).append((labels, value))
    return series


def _parse_line(line: str, host: str) -> tuple[str, dict[str, str], float]:
    """(name, labels, value) of one sample line; ScrapeError('garbage ...') naming the line
    when it is not one."""
    m = _SAMPLE.fullmatch(line)
    labels: dict[str, str] = {}
    if m is not None and m.group(2):
        if _LABELS.fullmatch(m.group(2)) is None:
            m = None
        else:
            for key, quoted in _LABEL.findall(m.group(2)):
                raw = quoted[1:-1]
                labels[key] = (re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group()], raw)
                               if "\\" in raw else raw)
    try:
        if m is None:
            raise ValueError("not a sample line")
        return m.group(1), labels, float(m.group(3))
    except ValueError:
        raise ScrapeError(host, f"garbage: not exposition text ({line[:80]!r})") from None


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


def scrape(target: HostTarget, clock: Callable[[], float] = time.time,
           connection: Connection | None = None) -> Scrape:
    """Fetch (on `connection` when given, kept alive) and parse one target. Raises
    ScrapeError."""
    start = time.monotonic()
    text = fetch(target, connection=connection)
    t_s = clock()
    sample = parse_node_exporter(text, target.name)
    return Scrape(target.name, t_s, sample, time.monotonic() - start)
