"""Bounded inputs (issue 11, item 5): whatever a remote party sends, rackpower reads no more
than a cap plus one chunk, spends bounded work on it, and fails with an error naming the
source. Against real servers on loopback: http.server for node_exporter bodies and Redfish
answers, a raw TCP Modbus server that misbehaves, and a real pty for serial garbage."""
from __future__ import annotations

import gzip
import json
import os
import re
import socket
import socketserver
import threading
import time
import tracemalloc
import tty

import numpy as np
import pymodbus.client  # noqa: F401 - imported before tracing: module code is not an answer
import pytest
import redfish.rest.v1  # noqa: F401 - the same
from helpers.devices import CHUNK, BodyServer, junk

from rackpower_nodes.core import frame_codec, telemetry
from rackpower_nodes.core.acquisition import Acquisition
from rackpower_nodes.core.frame_codec import FrameDecoder, FrameLayout, encode_frames
from rackpower_nodes.core.sensor_config import sensor_config_from_params
from rackpower_nodes.core.telemetry import (
    HostTarget, ScrapeError, TelemetryCollector, fetch, parse_node_exporter)
from rackpower_nodes.drivers import bmc
from rackpower_nodes.drivers.bmc import BmcError, RedfishPowerCap
from rackpower_nodes.drivers.pdu import PduError, open_pdu
from rackpower_nodes.drivers.port_reader import READ_CHUNK_BYTES, PortReader
from rackpower_nodes.drivers.serial_port import PySerialPort

MB = 2**20


@pytest.fixture
def serve():
    servers = []

    def start(body_for, framing="length", headers=None) -> BodyServer:
        servers.append(BodyServer(body_for, framing, headers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _peak_bytes(call) -> tuple[int, BaseException | None]:
    """Peak Python allocation (bytes) while `call` runs, and what it raised."""
    tracemalloc.start()
    try:
        call()
        raised = None
    except Exception as exc:  # noqa: BLE001 - returned to the test, which checks its type
        raised = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, raised


# -- node_exporter bodies -------------------------------------------------------------------
@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
def test_an_8_mb_exporter_body_is_refused_at_the_cap(serve, framing):
    body = junk(8 * MB)
    srv = serve(lambda path: body, framing)
    target = HostTarget("srv09", f"http://127.0.0.1:{srv.port}/metrics", timeout_s=30.0)
    assert target.max_body_bytes == 2 * MB == telemetry.MAX_BODY_BYTES
    peak, err = _peak_bytes(lambda: fetch(target))
    assert isinstance(err, ScrapeError) and err.host == "srv09"
    assert str(err).startswith("srv09: body too large") and "2097152-byte cap" in str(err)
    if framing == "length":
        assert "Content-Length 8388" in str(err)      # refused before reading the body
    else:
        read = int(re.search(r"stopped after reading (\d+) bytes", str(err)).group(1))
        assert 2 * MB < read <= 2 * MB + CHUNK
    assert peak < 3 * MB < len(body)                   # never the whole body, never text


def test_the_cap_is_per_target(serve):
    srv = serve(lambda path: junk(300_000))
    url = f"http://127.0.0.1:{srv.port}/metrics"
    with pytest.raises(ScrapeError, match=r"h: body too large: Content-Length \d+ bytes, more "
                                          r"than the 100000-byte cap \(poll.max_body_bytes\)"):
        fetch(HostTarget("h", url, 10.0, max_body_bytes=100_000))
    assert len(fetch(HostTarget("h", url, 10.0, max_body_bytes=400_000))) > 300_000


def test_a_real_body_in_junk_under_the_cap_parses_to_the_same_sample(serve, node_exporter):
    real = fetch(node_exporter).encode()
    assert len(real) < 200_000                          # 50-150 kB on real hosts
    padded = junk(MB) + real + junk(MB - 300_000)
    assert len(padded) < telemetry.MAX_BODY_BYTES
    srv = serve(lambda path: padded, "chunked")
    got = parse_node_exporter(fetch(HostTarget("p", f"http://127.0.0.1:{srv.port}/m", 10.0)))
    want = parse_node_exporter(real.decode())
    assert got.n_cpus == want.n_cpus > 0 and got.mem_total_bytes == want.mem_total_bytes
    assert got.cpu_seconds_by_mode.keys() == want.cpu_seconds_by_mode.keys()


def test_collector_reports_the_oversized_host_and_keeps_the_others(serve, node_exporter):
    srv = serve(lambda path: junk(8 * MB), "close")
    big = HostTarget("big", f"http://127.0.0.1:{srv.port}/metrics", timeout_s=5.0)
    with TelemetryCollector([node_exporter, big], stale_after_s=1.0) as collector:
        statuses = {s.host: s for s in collector.poll(now_s=time.time() + 2.0)}
    assert statuses["real"].up and statuses["real"].last_error == ""
    assert not statuses["big"].up and statuses["big"].stale
    assert statuses["big"].last_error.startswith("big: body too large: more than the 2097152")


# -- Redfish answers ------------------------------------------------------------------------
def _redfish(path: str) -> bytes:
    return json.dumps({"@odata.id": path, "Links": {
        "Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}}).encode()


@pytest.mark.parametrize("framing,huge_path", [("length", "/redfish/v1/"),
                                               ("chunked", "/redfish/v1/Chassis/1")])
def test_a_huge_redfish_answer_is_refused(serve, framing, huge_path):
    pad = json.dumps({"@odata.id": huge_path, "Oem": "x" * (8 * MB)}).encode()
    srv = serve(lambda path: pad if path == huge_path else _redfish(path), framing,
                {"Content-Type": "application/json"})
    url = f"http://127.0.0.1:{srv.port}/redfish/v1/Chassis/1"
    cap = RedfishPowerCap(url, username="u", password="p", auth="basic", timeout_s=10.0)
    peak, err = _peak_bytes(cap.connect)
    assert isinstance(err, BmcError), err
    assert f"BMC {url}: GET {huge_path}" in str(err) and "1048576-byte cap" in str(err)
    if framing == "chunked":
        read = int(re.search(r"stopped after (\d+) bytes", str(err)).group(1))
        assert bmc.MAX_BODY_BYTES < read <= bmc.MAX_BODY_BYTES + CHUNK
    assert peak < 2 * MB < len(pad) and not cap.connected


def test_a_gzip_bomb_from_a_bmc_is_refused_by_its_decoded_size(serve):
    bomb = gzip.compress(b" " * (64 * MB))
    assert len(bomb) < 100_000
    srv = serve(lambda path: bomb if "Chassis" in path else gzip.compress(_redfish(path)),
                "length",
                {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    url = f"http://127.0.0.1:{srv.port}/redfish/v1/Chassis/1"
    cap = RedfishPowerCap(url, auth="basic", timeout_s=10.0)
    peak, err = _peak_bytes(cap.connect)
    assert isinstance(err, BmcError) and "1048576-byte cap" in str(err), err
    assert peak < 2 * MB


# -- Modbus responses -----------------------------------------------------------------------
class MisbehavingModbus(socketserver.ThreadingTCPServer):
    """A Modbus TCP 'PDU' on loopback that answers every request in one wrong way."""

    daemon_threads = allow_reuse_address = True

    def __init__(self, mode: str):
        self.mode = mode
        rng = np.random.default_rng(11)           # the same garbage on every run
        self.flood = {"length_65535": rng.bytes(MB), "random_flood": rng.bytes(8 * MB),
                      "bad_protocol_flood": b"\0\0\0\1\0\6\1\3\2\0\0" * 50_000}.get(mode)
        super().__init__(("127.0.0.1", 0), _ModbusHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _ModbusHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock, mode = self.request, self.server.mode
        try:
            head = sock.recv(7, socket.MSG_WAITALL)
            pdu = sock.recv(int.from_bytes(head[4:6], "big") - 1, socket.MSG_WAITALL)
        except OSError:
            return
        tid, unit, fc = head[:2], head[6], pdu[0]
        count = int.from_bytes(pdu[3:5], "big")

        def adu(body: bytes, length: int | None = None) -> bytes:
            size = len(body) + 1 if length is None else length
            return tid + b"\0\0" + size.to_bytes(2, "big") + bytes([unit]) + body

        answers = {
            "short": adu(bytes([fc, 2 * count]) + b"\x52"),          # byte count > data
            "empty": adu(bytes([fc, 0])),                             # no registers
            "too_many": adu(bytes([fc, 2 * count + 20]) + b"\x52\x50" * (count + 10)),
            "wrong_function": adu(bytes([4, 2 * count]) + b"\x52\x50" * count),
            "unknown_function": adu(bytes([0x55, 2, 0, 0])),
            "wrong_unit": tid + b"\0\0\0\5" + bytes([unit + 1, fc, 2, 0x52, 0x50]),
        }
        try:
            if mode in answers:
                sock.sendall(answers[mode])
                time.sleep(5)
            elif self.server.flood is not None:       # made before the client's allocations
                if mode == "length_65535":            # are traced
                    sock.sendall(adu(b"", length=65535))
                sock.sendall(self.server.flood)
                time.sleep(5)
            elif mode == "silent":
                time.sleep(5)
        except OSError:
            pass            # the client gave up and closed: expected


@pytest.mark.parametrize("mode,reason", [
    ("silent", "No response received"), ("hang_up", "Connection unexpectedly closed"),
    ("short", "Unable to decode"), ("empty", "malformed answer: 0 values for 1 requested"),
    ("too_many", "malformed answer: 11 values for 1 requested"),
    ("wrong_function", "answer with function code 4, expected 3"),
    ("unknown_function", "Unable to decode"), ("wrong_unit", "No response received"),
    ("length_65535", ""), ("bad_protocol_flood", "No response received"),
    ("random_flood", "No response received"),
])
def test_a_misbehaving_modbus_server_is_an_error_naming_the_pdu(mode, reason):
    server = MisbehavingModbus(mode)
    url = f"tcp://127.0.0.1:{server.server_address[1]}"
    pdu = open_pdu(url, "rackpower_sim", unit_id=1, timeout_s=0.5)
    try:
        peak, err = _peak_bytes(pdu.connect)
    finally:
        pdu.close()
        server.shutdown()
        server.server_close()
    assert isinstance(err, PduError), err
    assert str(err).startswith(f"PDU {url} unit 1: holding register 0: ") and reason in str(err)
    assert not pdu.connected and peak < 32 * MB


# -- serial garbage bursts ------------------------------------------------------------------
LAYOUT = FrameLayout(64)


def _good_frames(first: int, n: int) -> bytes:
    seq = np.arange(first, first + n)
    return encode_frames(LAYOUT, seq, 1_000_000 + seq * 1000, np.ones((n, 64), int))


GARBAGE = {
    "random": lambda: os.urandom(MB),
    "sync_words": lambda: frame_codec.SYNC * (MB // 2),
    "headers_with_bad_crc": lambda: LAYOUT.header_prefix * (MB // 6),
}


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_a_1_mb_garbage_burst_costs_bounded_work_and_memory(kind, monkeypatch):
    crcs = []
    monkeypatch.setattr(frame_codec.decoder, "crc16", lambda data: crcs.append(len(data)) or 0)
    burst = GARBAGE[kind]()
    dec = FrameDecoder(LAYOUT)
    for i in range(0, len(burst), READ_CHUNK_BYTES):      # as the port reader hands it over
        assert len(dec.feed(burst[i:i + READ_CHUNK_BYTES])) == 0
        assert dec.pending_bytes < LAYOUT.frame_size
    # at most one CRC of one frame per candidate header, and a header is 6 bytes long
    assert len(crcs) <= len(burst) // len(LAYOUT.header_prefix)
    assert sum(crcs) <= len(crcs) * LAYOUT.frame_size
    if kind != "headers_with_bad_crc":
        assert len(crcs) < 100
    assert dec.stats.bytes_discarded > len(burst) - LAYOUT.frame_size


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_frames_after_a_garbage_burst_on_a_real_pty_are_decoded(kind):
    master, slave = os.openpty()
    tty.setraw(slave)
    config = sensor_config_from_params({
        "serial.port": os.ttyname(slave), "board.channels": 64, "board.frame_rate_hz": 1000.0,
        "channels.components": ["srv01"], "channels.board_index": [0],
        "channels.scale_a_per_count": [0.01], "voltage.nominal_v": [230.0],
        "publish.rate_hz": 20.0, "buffer.seconds": 1.0})
    acq, reads, opened = Acquisition(config), [], threading.Event()

    def on_data(data: bytes, host_ns: int) -> None:
        reads.append(len(data))
        acq.ingest(data, host_ns)

    reader = PortReader(PySerialPort(os.ttyname(slave)), on_data,
                        lambda st: opened.set() if st.state == "open" else None)
    reader.start()
    try:
        assert opened.wait(30), "the pty did not open"
        garbage = GARBAGE[kind]()
        stream = _good_frames(0, 100) + garbage + _good_frames(100, 200)
        for i in range(0, len(stream), 4096):
            os.write(master, stream[i:i + 4096])      # blocks while the reader catches up
        end = time.monotonic() + 60
        while acq.stats().frames < 300 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        reader.stop()
        os.close(master)
        os.close(slave)
    stats = acq.stats()
    assert stats.frames == 300 and stats.frames_lost == 0, stats
    assert max(reads) <= READ_CHUNK_BYTES and sum(reads) == len(stream)
    assert stats.bytes_discarded == len(garbage)
