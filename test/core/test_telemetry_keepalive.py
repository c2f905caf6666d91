"""Fetching node_exporter text over kept-alive HTTP connections: one per host, reused while
the exporter keeps it open, renewed when it closed it."""
from __future__ import annotations

import time

from rackpower_nodes.core.telemetry import Connection, HostTarget, TelemetryCollector, fetch

TEXT = """\
node_cpu_seconds_total{cpu="0",mode="idle"} 100
node_cpu_seconds_total{cpu="0",mode="user"} 50
node_memory_MemTotal_bytes 1000
node_memory_MemAvailable_bytes 250
node_time_seconds 1.7e9
"""


class _KeepAliveExporter:
    """HTTP/1.1 on loopback answering TEXT; counts the TCP connections it accepted. With
    `drop_after_each`, it closes every connection after its answer without saying so (as
    an exporter's idle timeout does between two scrapes)."""

    def __init__(self, drop_after_each: bool = False):
        import http.server
        import threading

        outer = self
        self.connections, self.requests = 0, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                outer.connections += 1
                super().setup()

            def do_GET(self):
                outer.requests += 1
                body = TEXT.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = drop_after_each

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_scrapes_of_a_host_reuse_one_kept_alive_connection():
    exporter = _KeepAliveExporter()
    try:
        with TelemetryCollector([HostTarget("ka", exporter.url, 5.0)]) as collector:
            statuses = [collector.poll()[0] for _ in range(4)]
    finally:
        exporter.close()
    assert all(s.up for s in statuses) and statuses[-1].rates is not None
    assert exporter.requests == 4 and exporter.connections == 1


def test_a_kept_connection_the_exporter_closed_is_retried_on_a_new_one():
    exporter = _KeepAliveExporter(drop_after_each=True)
    connection = Connection()
    target = HostTarget("ka", exporter.url, 5.0)
    try:
        texts = []
        for _ in range(3):
            texts.append(fetch(target, connection=connection))
            time.sleep(0.05)            # the server's close reaches this side first
    finally:
        connection.close()
        exporter.close()
    assert texts == [TEXT] * 3
    assert exporter.requests == 3 and exporter.connections == 3
