"""Simulated devices as others on the management network meet them: a foreign Modbus client
writing a PDU's allocation register, the Redfish BMC simulator with its credentials and curl
patching a limit, and an HTTP server that answers any body with any framing (for the bounded
readers)."""
from __future__ import annotations

import http.server
import json
import subprocess
import threading

from helpers.rack import NAMES

from rackpower_nodes.sim.bmc import SimBmcServer
from rackpower_nodes.sim.pdu import SimPduServer

USER, PASSWORD = "admin", "rackpower"
# metering only: no allocation register, so the BMCs are the only actuators
MONITOR_MAP = {"name": "metering", "outlets": 24, "points": {
    "outlet_power_w": {"table": "holding", "address": 100, "stride": 2, "type": "float32"}}}
# A client's timeout against a simulated device on loopback where the test is not about
# timeouts: one that no busy test machine reaches (a 0.3 s scrape timed out on CI with both
# cores loaded). Tests of timeouts set their own, shorter than the device's delay.
LOOPBACK_TIMEOUT_S = 5.0
CHUNK = 65536        # the readers' chunk size: a refused body was read up to cap + CHUNK
JUNK_LINE = b'junk_series_total{id="0123456789",pad="abcdefghijklmnopqrstuvwxyz"} 12345\n'

__all__ = ["CHUNK", "JUNK_LINE", "LOOPBACK_TIMEOUT_S", "MONITOR_MAP", "PASSWORD", "USER",
           "BodyServer", "curl_patch", "foreign_write", "junk", "sim_bmc"]


def foreign_write(server: SimPduServer, outlet: int, watts: float) -> None:
    """An allocation written by another Modbus client (pymodbus), as anyone on the management
    network can."""
    from pymodbus.client import ModbusTcpClient

    p = server.map.point("outlet_allocation_w")
    c = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2, retries=0)
    assert c.connect()
    try:
        words = p.encode([watts])[0].tolist()
        assert not c.write_registers(int(p.address_of(outlet)), words, device_id=1).isError()
    finally:
        c.close()


def sim_bmc(port: int = 0, **kwargs) -> SimBmcServer:
    """A simulated BMC for NAMES (a1, b1 on the EnvironmentMetrics schema, a2, b2 on Power),
    limits 40 .. 500 W, USER/PASSWORD; not started. `kwargs` go to SimBmcServer."""
    kwargs.setdefault("api", {"a1": "environment_metrics", "a2": "power_control",
                              "b1": "environment_metrics", "b2": "power_control"})
    kwargs.setdefault("allowable_min_w", 40.0)
    kwargs.setdefault("allowable_max_w", 500.0)
    return SimBmcServer(NAMES, port=port, username=USER, password=PASSWORD, **kwargs)


def curl_patch(url: str, body: dict) -> tuple[int, str]:
    """A PATCH by curl (another Redfish client holding the credentials); (status, body)."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/stdout", "-w", "\n%{http_code}", "-u",
                          f"{USER}:{PASSWORD}", "-X", "PATCH", "-H",
                          "Content-Type: application/json", "--data-raw", json.dumps(body),
                          url], capture_output=True, text=True, timeout=20, check=True).stdout
    text, _, code = out.rpartition("\n")
    return int(code), text


def junk(n_bytes: int) -> bytes:
    """Exposition text of a series rackpower does not use, about `n_bytes` long."""
    return JUNK_LINE * (n_bytes // len(JUNK_LINE) + 1)


class BodyServer:
    """http.server on loopback answering every GET with `body_for(path)`: with Content-Length
    ("length"), close-delimited without one ("close") or chunked ("chunked"); optional headers."""

    def __init__(self, body_for, framing: str = "length", headers: dict | None = None):
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0" if framing == "close" else "HTTP/1.1"

            def do_GET(self):
                outer.requests += 1
                body = body_for(self.path)
                self.send_response(200)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if framing == "length":
                    self.send_header("Content-Length", str(len(body)))
                elif framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for i in range(0, len(body), CHUNK):
                        piece = body[i:i + CHUNK]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece)
                                         if framing == "chunked" else piece)
                    if framing == "chunked":
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass        # the client hung up past its cap, as it should

            def log_message(self, *args):
                pass

        self.requests = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
