"""The simulator's HTTP servers answer without a Nagle stall: every connection TCP_NODELAY."""
from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler

from rackpower_nodes.sim.tracked_http import TrackedHTTPServer


def test_every_connection_is_tcp_nodelay():
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()                 # headers, then the body: two writes
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = TrackedHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for _ in range(2):                     # a new connection, then another one
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
            for _ in range(2):                 # kept alive: both requests on it
                conn.request("GET", "/")
                assert conn.getresponse().read() == b"ok\n"
            conn.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert len(seen) == 4
    assert all(seen), f"TCP_NODELAY per request: {seen}"

