"""node_exporter-compatible HTTP endpoints for simulated hosts, on loopback.

`SimulatedHost` integrates utilisation and byte rates into the counters node_exporter would
show (`advance`), on its own simulated clock, which it exposes as `node_time_seconds`: a
consumer that divides counter deltas by that clock's delta gets the simulated rates exactly,
whatever the wall time between scrapes. `ExporterServer` serves one host's exposition at
``GET /metrics`` and can be told to fail (`set_fault`); `ExporterFleet` runs one server per host.
Like the real node_exporter (Go's net/http) it speaks HTTP/1.1 and keeps a connection open for
the scraper's next request; "down" and `stop` close the open connections with the listener.
The exposition text is produced by prometheus_client (a custom collector and generate_latest).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Self

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from rackpower_nodes.core.telemetry import HostTarget
from rackpower_nodes.sim.tracked_http import TrackedHTTPServer

__all__ = ["FAULTS", "ExporterFleet", "ExporterServer", "SimulatedHost"]

_log = logging.getLogger(__name__)

# How busy and idle CPU time is split over modes; util = 1 - (idle + iowait) / all.
_BUSY_SPLIT = {"user": 0.72, "system": 0.20, "softirq": 0.05, "irq": 0.02, "nice": 0.01}
_IDLE_SPLIT = {"idle": 0.96, "iowait": 0.04}
_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
_CACHE_SHARE = 0.3          # part of MemAvailable that is page cache (not MemFree)
FAULTS = (None, "down", "slow", "garbage", "binary", "http500")
_GARBAGE = b"<html><body><h1>502 Bad Gateway</h1> upstream {not metrics}</body></html>\n"
_BINARY = bytes(range(256)) * 4


class SimulatedHost:
    """Counters of one simulated host, advanced from rates; thread-safe.

    Time is the host's simulated clock in s since the epoch (`time_s`), starting at
    `start_time_s` (default: now) and moved only by `advance`.
    """

    def __init__(self, name: str, n_cpus: int = 16, mem_total_bytes: float = 128 * 2**30,
                 net_devices: tuple[str, ...] = ("eth0",),
                 disk_devices: tuple[str, ...] = ("sda",), start_time_s: float | None = None,
                 lo_bps: float = 20e3):
        if n_cpus < 1 or mem_total_bytes <= 0 or not net_devices or not disk_devices:
            raise ValueError(f"{name}: need n_cpus >= 1, mem_total_bytes > 0 and devices")
        self.name = name
        self.n_cpus = n_cpus
        self.mem_total_bytes = float(mem_total_bytes)
        self.net_devices = tuple(net_devices)
        self.disk_devices = tuple(disk_devices)
        self.lo_bps = lo_bps
        self._lock = threading.Lock()
        self.time_s = time.time() if start_time_s is None else float(start_time_s)
        self._mem_used = 0.1 * self.mem_total_bytes
        self.reset_counters()

    def reset_counters(self) -> None:
        """Emulate a reboot: every counter back to 0, boot time = the current clock."""
        with self._lock:
            self.boot_time_s = self.time_s
            self._cpu = {(c, m): 0.0 for c in range(self.n_cpus) for m in _MODES}
            devices = (*self.net_devices, "lo")
            self._rx = dict.fromkeys(devices, 0.0)
            self._tx = dict.fromkeys(devices, 0.0)
            self._read = dict.fromkeys(self.disk_devices, 0.0)
            self._written = dict.fromkeys(self.disk_devices, 0.0)

    def advance(self, dt_s: float, cpu_util: float, mem_used_bytes: float, net_rx_bps: float,
                net_tx_bps: float, disk_read_bps: float, disk_write_bps: float) -> None:
        """Move the clock by `dt_s` (s) at the given utilisation (0..1), memory in use (bytes)
        and rates (bytes/s, split evenly over the devices; lo gets `lo_bps` on top)."""
        rates = (net_rx_bps, net_tx_bps, disk_read_bps, disk_write_bps)
        if dt_s < 0 or not 0.0 <= cpu_util <= 1.0 or min(rates) < 0:
            raise ValueError(f"{self.name}: dt_s={dt_s}, cpu_util={cpu_util}, rates={rates}")
        if not 0 <= mem_used_bytes <= self.mem_total_bytes:
            raise ValueError(f"{self.name}: mem_used_bytes={mem_used_bytes} outside 0..total")
        with self._lock:
            self.time_s += dt_s
            self._mem_used = float(mem_used_bytes)
            busy, idle = cpu_util * dt_s, (1.0 - cpu_util) * dt_s   # per CPU, s
            for c in range(self.n_cpus):
                for mode, share in _BUSY_SPLIT.items():
                    self._cpu[c, mode] += busy * share
                for mode, share in _IDLE_SPLIT.items():
                    self._cpu[c, mode] += idle * share
            _spread(self._rx, self.net_devices, net_rx_bps * dt_s)
            _spread(self._tx, self.net_devices, net_tx_bps * dt_s)
            self._rx["lo"] += self.lo_bps * dt_s
            self._tx["lo"] += self.lo_bps * dt_s
            _spread(self._read, self.disk_devices, disk_read_bps * dt_s)
            _spread(self._written, self.disk_devices, disk_write_bps * dt_s)

    def collect(self):
        """prometheus_client collector protocol: the node_exporter series of this host."""
        with self._lock:
            cpu = CounterMetricFamily("node_cpu_seconds_total",
                                      "Seconds the CPUs spent in each mode.",
                                      labels=["cpu", "mode"])
            for (c, mode), value in self._cpu.items():
                cpu.add_metric([str(c), mode], value)
            families = [cpu, *self._memory_families(), *self._device_families(),
                        GaugeMetricFamily("node_boot_time_seconds", "Node boot time, in unixtime.",
                                          value=self.boot_time_s),
                        GaugeMetricFamily("node_time_seconds",
                                          "System time in seconds since epoch (1970).",
                                          value=self.time_s)]
        yield from families

    def _memory_families(self):
        avail = self.mem_total_bytes - self._mem_used
        for field, value in (("MemTotal", self.mem_total_bytes), ("MemAvailable", avail),
                             ("MemFree", avail * (1.0 - _CACHE_SHARE))):
            yield GaugeMetricFamily(f"node_memory_{field}_bytes",
                                    f"Memory information field {field}_bytes.", value=value)

    def _device_families(self):
        for name, doc, values in (
                ("node_network_receive_bytes_total", "Network device statistic receive_bytes.",
                 self._rx),
                ("node_network_transmit_bytes_total", "Network device statistic transmit_bytes.",
                 self._tx),
                ("node_disk_read_bytes_total", "The total number of bytes read successfully.",
                 self._read),
                ("node_disk_written_bytes_total",
                 "The total number of bytes written successfully.", self._written)):
            family = CounterMetricFamily(name, doc, labels=["device"])
            for device, value in values.items():
                family.add_metric([device], value)
            yield family

    def exposition(self) -> str:
        """The host's metrics in Prometheus text format 0.0.4."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry).decode("utf-8")


def _spread(counters: dict[str, float], devices: tuple[str, ...], amount: float) -> None:
    for device in devices:
        counters[device] += amount / len(devices)


class ExporterServer:
    """Serves one SimulatedHost at ``http://127.0.0.1:<port>/metrics`` from its own threads.

    Faults (`set_fault`): None (normal), "down" (listening socket closed: connection refused),
    "slow" (answer only after `delay_s`), "garbage" (200 with HTML instead of metrics),
    "binary" (200 with non-text bytes), "http500" (HTTP 500). The port survives "down".
    """

    def __init__(self, host: SimulatedHost, port: int = 0, bind: str = "127.0.0.1"):
        self.host = host
        self.bind = bind
        self.port = port
        self.fault: str | None = None
        self.delay_s = 0.0
        self._server: TrackedHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}/metrics"

    def start(self) -> Self:
        """Start listening (a free port if `port` was 0); returns self."""
        self._started = True
        self._stopping.clear()
        if self.fault != "down" and self._server is None:
            self._open()
        return self

    def stop(self) -> None:
        """Stop listening and wake requests that are being delayed."""
        self._started = False
        self._stopping.set()
        self._close()

    def set_fault(self, fault: str | None, delay_s: float = 5.0) -> None:
        """Switch to a fault mode (see the class docstring) or back to normal with None;
        `delay_s` (s) is how long "slow" holds each answer back."""
        if fault not in FAULTS:
            raise ValueError(f"fault {fault!r}: expected one of {FAULTS}")
        self.delay_s = delay_s
        previous, self.fault = self.fault, fault
        if fault == "down" and previous != "down":
            self._close()
        elif fault != "down" and previous == "down" and self._started:
            self._open()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _open(self) -> None:
        server = TrackedHTTPServer((self.bind, self.port), _handler_for(self))
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"exporter-{self.host.name}", daemon=True)
        self._thread.start()
        _log.debug("%s: serving %s", self.host.name, self.url)

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()
            self._thread.join()

    def respond(self) -> tuple[int, str, bytes]:
        """(status, content type, body) for GET /metrics under the current fault."""
        fault = self.fault
        if fault == "slow" and self._stopping.wait(self.delay_s):
            return HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"stopping\n"
        if fault == "garbage":
            return HTTPStatus.OK, "text/html; charset=utf-8", _GARBAGE
        if fault == "binary":
            return HTTPStatus.OK, "application/octet-stream", _BINARY
        if fault == "http500":
            return HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"internal error\n"
        return HTTPStatus.OK, CONTENT_TYPE_PLAIN_0_0_4, self.host.exposition().encode("utf-8")


def _handler_for(server: ExporterServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"       # keep-alive: every answer has a Content-Length

        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            status, ctype, body = server.respond()
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):   # the client gave up (timeout)
                _log.debug("%s: client left before the answer", server.host.name)

        def log_message(self, fmt: str, *args) -> None:
            _log.debug("%s: " + fmt, server.host.name, *args)

    return Handler


class ExporterFleet:
    """One ExporterServer per SimulatedHost (keyed by host name); a context manager.

    Ports: free ones when `base_port` is 0, else base_port, base_port + 1, ... in host order.
    """

    def __init__(self, hosts: Mapping[str, SimulatedHost], base_port: int = 0):
        self.hosts = dict(hosts)
        self.servers = {name: ExporterServer(host, base_port + i if base_port else 0)
                        for i, (name, host) in enumerate(self.hosts.items())}

    @property
    def urls(self) -> dict[str, str]:
        return {name: server.url for name, server in self.servers.items()}

    def targets(self, timeout_s: float = 0.5) -> list[HostTarget]:
        """HostTargets for a TelemetryCollector, one per server."""
        return [HostTarget(name, url, timeout_s) for name, url in self.urls.items()]

    def start(self) -> Self:
        """Start every server; if one cannot (its port taken: OSError), stop the ones
        already serving before raising, so a failed start leaves no port held."""
        try:
            for server in self.servers.values():
                server.start()
        except OSError:
            self.stop()               # stopping a server that never opened is harmless
            raise
        return self

    def stop(self) -> None:
        """Stop every server side by side (each waits up to a poll interval, 0.5 s, for its
        serving thread: one after another, a dozen of them would hold up an exit)."""
        stoppers = [threading.Thread(target=server.stop, name=f"stop-{name}")
                    for name, server in self.servers.items()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
