"""The simulated BMC's HTTP transport: a threading HTTP/1.1 server that hands requests over.

`_HttpServer` (a `sim.tracked_http.TrackedHTTPServer`) keeps track of its open connections
so that a stop or a BMC reboot can drop them, binds IPv6 hosts and logs handler errors only
at debug level. `_Handler` frames each request (a body of at most `_MAX_BODY` bytes, no chunked
encoding), asks the service (`SimBmcServer`) for the answer, waits the injected delay and
sends the JSON reply with a Content-Length, keeping the connection alive.
"""
from __future__ import annotations

import json
import logging
import socket
import socketserver
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from typing import Protocol

from rackpower_nodes.sim.bmc.redfish import _error_doc, _Reply
from rackpower_nodes.sim.tracked_http import TrackedHTTPServer

_log = logging.getLogger(__name__)

_MAX_BODY = 64 * 1024


class _Service(Protocol):
    """What the transport asks of the BMC: the answer to a request and the delay before it."""

    def _handle(self, method: str, target: str, headers: Mapping[str, str],
                body: bytes) -> _Reply: ...

    def _delay(self) -> float: ...


class _HttpServer(TrackedHTTPServer):
    """TrackedHTTPServer (it knows its open connections, to close them on stop) that binds
    IPv6 hosts, skips the reverse DNS lookup and reports handler errors only to the log."""

    request_queue_size = 64        # a rack's worth of clients connecting at once (default 5)

    def __init__(self, address: tuple[str, int], sim: _Service):
        self.sim = sim
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        _log.debug("simulated BMC: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: every answer has a Content-Length (none for 204)."""

    protocol_version = "HTTP/1.1"
    server_version = "rackpower-sim-bmc/1"
    server: _HttpServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        _log.debug("simulated BMC %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        sim = self.server.sim
        body = self._body()
        if body is None:
            reply = _Reply(400, _error_doc(400, "GeneralError", "A request body needs a valid "
                                           f"Content-Length of at most {_MAX_BODY} bytes."))
            self.close_connection = True
        else:
            reply = sim._handle(method, self.path, self.headers, body)
        delay = sim._delay()
        if delay > 0:
            time.sleep(delay)
        self._send(reply)

    def _body(self) -> bytes | None:
        """The request body (b"" when none); None when it cannot be framed."""
        if self.headers.get("Transfer-Encoding"):
            return None
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.strip().isdigit() or int(length) > _MAX_BODY:
            return None
        return self.rfile.read(int(length))

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        payload = b""
        if reply.status != 204:
            payload = json.dumps(reply.doc if reply.doc is not None else {}).encode()
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("OData-Version", "4.0")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
