"""Cost of inputs a remote party controls: exporter bodies, Redfish answers, serial garbage.

    .venv/bin/python benchmarks/bench_inputs.py [--node-seconds 20] [--old-tree DIR]

Prints markdown tables (benchmarks/RESULTS.md, "Bounded inputs"):
- per scrape, in this process: CPU time and peak Python allocation of `fetch` + parse for a
  real node_exporter body (Debian's prometheus-node-exporter on loopback), the same body in
  1.9 MB of other series, and 8 MB bodies (refused at the 2 MiB cap); the old parse (all of an
  8 MB body through prometheus_client) for comparison;
- the `host_telemetry` node scraping the real exporter and an endpoint serving 8 MB, every
  5 s with a 4.5 s timeout (so that a large body arrives whole on a loaded machine): CPU share
  and peak RSS; with `--old-tree` (a checkout of an older commit, e.g.
  `git archive 1b5a1d6 | tar -x -C DIR`) also that code against a 7 MB body, its old cap being
  8 MB;
- a Redfish answer of 8 MB (refused at 1 MiB) and a Modbus server flooding garbage;
- the frame decoder fed 1 MB of garbage of four kinds, CPU s per MB (and the older tree's).
"""
from __future__ import annotations

import argparse
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))           # benchmark this checkout, not the installed copy

from rackpower_nodes.core import frame_codec  # noqa: E402
from rackpower_nodes.core.telemetry import (  # noqa: E402
    HostTarget, ScrapeError, fetch, parse_node_exporter)

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
MB = 2**20
JUNK = b'junk_series_total{id="0123456789",pad="abcdefghijklmnopqrstuvwxyz"} 12345\n'


def _serve(body: bytes) -> http.server.ThreadingHTTPServer:
    """Loopback HTTP server answering every GET with `body`, close-delimited (no length);
    `httpd.served` counts [requests, bodies sent whole]."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            httpd.served[0] += 1
            self.send_response(200)
            self.end_headers()
            try:
                for i in range(0, len(body), 65536):
                    self.wfile.write(body[i:i + 65536])
                httpd.served[1] += 1
            except OSError:
                pass    # the client stopped at its cap

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.served = [0, 0]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _measure(call, repeat: int = 5) -> tuple[float, float, str]:
    """(CPU ms per call, peak MiB allocated, outcome) of `call`."""
    outcome = "ok"
    tracemalloc.start()
    cpu = time.process_time()
    for _ in range(repeat):
        try:
            call()
        except ScrapeError as exc:
            outcome = exc.reason.split(";")[0]
    cpu_ms = (time.process_time() - cpu) / repeat * 1e3
    peak = tracemalloc.get_traced_memory()[1] / MB
    tracemalloc.stop()
    return cpu_ms, peak, outcome


def _exporter() -> tuple[subprocess.Popen, str]:
    port = 19_000 + os.getpid() % 1000
    proc = subprocess.Popen([NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    for _ in range(100):
        try:
            fetch(HostTarget("real", url, 5.0))
            return proc, url
        except ScrapeError:
            time.sleep(0.1)
    raise SystemExit(f"{NODE_EXPORTER} did not answer on {url}")


def scrape_table(real_url: str) -> None:
    real = fetch(HostTarget("real", real_url, 5.0)).encode()
    lines = real.count(b"\n")
    print(f"real node_exporter body: {len(real)} bytes, {lines} lines\n")
    print("| body | bytes | CPU ms per scrape | peak MiB | outcome |")
    print("|---|---|---|---|---|")
    cases = [("real node_exporter", real), ("real + other series", JUNK * 25_000 + real),
             ("8 MB of other series", JUNK * 110_000)]
    for name, body in cases:
        httpd = _serve(body)
        target = HostTarget("h", f"http://127.0.0.1:{httpd.server_address[1]}/metrics", 30.0)
        ms, peak, outcome = _measure(lambda t=target: parse_node_exporter(fetch(t), "h"))
        httpd.shutdown()
        print(f"| {name} | {len(body)} | {ms:.1f} | {peak:.2f} | {outcome} |")
    from prometheus_client.parser import text_string_to_metric_families
    for name, body, repeat in (("real", real, 20), ("8 MB", JUNK * 110_000, 1)):
        text = body.decode()
        ms, peak, _ = _measure(lambda t=text: sum(1 for _ in text_string_to_metric_families(t)),
                               repeat)
        print(f"| {name}, old path (parse only): all of it through prometheus_client "
              f"| {len(body)} | {ms:.1f} | {peak:.1f} | parsed |")


def node_rows(real_url: str, seconds: float, old_tree: str | None) -> None:
    from rackpower_nodes.tools.launch_env import isolated_ros_env, stop_process

    print("\n| host_telemetry code | hosts | CPU % of one core | peak RSS MiB | big body: "
          "requests, sent whole |")
    print("|---|---|---|---|---|")
    runs = [("this tree", str(REPO), 8 * MB)]
    if old_tree:
        runs.append((f"old ({old_tree})", old_tree, 7 * MB))
    env = isolated_ros_env(tempfile.mkdtemp(prefix="bench_inputs_"))
    for label, tree, size in runs:
        for with_big in (False, True):
            httpd = _serve(JUNK * (size // len(JUNK)))
            names, urls = ["real"], [real_url]
            if with_big:
                names.append("big")
                urls.append(f"http://127.0.0.1:{httpd.server_address[1]}/metrics")
            params = Path(tempfile.mkdtemp()) / "p.yaml"
            params.write_text(yaml.safe_dump({"/**/host_telemetry": {"ros__parameters": {
                "hosts": {"names": names, "urls": urls},
                "poll": {"rate_hz": 0.2, "timeout_s": 4.5}}}}))
            # python -m rather than the installed executable: its entry point may not
            # exist in the older tree
            proc = subprocess.Popen([sys.executable, "-m", "rackpower_nodes.nodes.host_telemetry",
                                     "--ros-args", "--params-file", str(params)],
                                    env={**env, "PYTHONPATH": tree}, cwd=tree,  # -m: cwd first
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ps = psutil.Process(proc.pid)
            time.sleep(3.0)                 # start-up (imports) is not what is measured
            cpu0, t0, rss = sum(ps.cpu_times()[:2]), time.monotonic(), 0
            while time.monotonic() - t0 < seconds:
                rss = max(rss, ps.memory_info().rss)
                time.sleep(0.25)
            share = (sum(ps.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0) * 100
            stop_process(proc)
            httpd.shutdown()
            hosts = f"real + {size // MB} MB body" if with_big else "real"
            served = f"{httpd.served[0]}, {httpd.served[1]}" if with_big else "-"
            print(f"| {label} | {hosts} | {share:.0f} | {rss / MB:.0f} | {served} |")


def remote_rows() -> None:
    from rackpower_nodes.drivers.bmc import BmcError, RedfishPowerCap
    from rackpower_nodes.drivers.pdu import PduCapabilityError, PduError, open_pdu

    print("\n| input | CPU ms | peak MiB | outcome |")
    print("|---|---|---|---|")
    httpd = _serve(b'{"Oem": "' + b"x" * (8 * MB) + b'"}')
    url = f"http://127.0.0.1:{httpd.server_address[1]}/redfish/v1/Chassis/1"
    import redfish.rest.v1  # noqa: F401 - imported before measuring
    for name, call, errors in (
            ("Redfish answer of 8 MB", RedfishPowerCap(url, auth="basic", timeout_s=5).connect,
             BmcError),
            ("Modbus 'PDU' flooding 8 MB of garbage (timeout 0.5 s)",
             open_pdu(f"tcp://127.0.0.1:{_flooder()}", "rackpower_sim", 1, 0.5).connect,
             PduError)):
        tracemalloc.start()
        cpu = time.process_time()
        try:
            call()
            outcome = "accepted"
        except PduCapabilityError:
            outcome = "read whole (then: no power limit offered)"
        except errors as exc:
            outcome = str(exc).split(": ", 2)[-1][:70]
        ms = (time.process_time() - cpu) * 1e3
        peak = tracemalloc.get_traced_memory()[1] / MB
        tracemalloc.stop()
        print(f"| {name} | {ms:.0f} | {peak:.1f} | {outcome} |")
    httpd.shutdown()


def _flooder() -> int:
    import socket

    garbage = os.urandom(8 * MB)
    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = srv.accept()
        conn.recv(260)
        try:
            conn.sendall(garbage)
            time.sleep(2)
        except OSError:
            pass
        conn.close()

    threading.Thread(target=run, daemon=True).start()
    return srv.getsockname()[1]


def decoder_rows(old_tree: str | None) -> None:
    layout = frame_codec.FrameLayout(64)
    codecs = [frame_codec]
    if old_tree:        # the older tree's decoder, loaded from its file
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "old_frame_codec", Path(old_tree) / "rackpower_nodes/core/frame_codec.py")
        codecs.append(importlib.util.module_from_spec(spec))
        sys.modules[spec.name] = codecs[1]        # dataclasses look their module up
        spec.loader.exec_module(codecs[1])
    print("\n| 1 MB of serial garbage (64-channel frames) | CPU s per MB | CRC failures |"
          + (" before: CPU s per MB |" if old_tree else ""))
    print("|---|---|---|" + ("---|" if old_tree else ""))
    header = layout.header_prefix
    for name, burst in (("random bytes", os.urandom(MB)),
                        ("sync words A5 5A", frame_codec.SYNC * (MB // 2)),
                        ("valid headers with bad CRCs", header * (MB // 6)),
                        ("a valid header every frame, bad CRCs",
                         (header + bytes(layout.frame_size - 6)) * (MB // layout.frame_size))):
        cells = []
        for codec in codecs:
            dec = codec.FrameDecoder(codec.FrameLayout(64))
            cpu = time.process_time()
            for i in range(0, len(burst), 65536):
                dec.feed(burst[i:i + 65536])
            cells.append(time.process_time() - cpu)
        row = f"| {name} | {cells[0]:.3f} | {dec.stats.crc_errors} |"
        print(row + (f" {cells[1]:.3f} |" if old_tree else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node-seconds", type=float, default=20.0)
    parser.add_argument("--old-tree", help="checkout of older code to run the node from")
    args = parser.parse_args(argv)
    print(f"command: python benchmarks/bench_inputs.py {' '.join(sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    exporter, real_url = _exporter()
    try:
        scrape_table(real_url)
        if args.node_seconds > 0:
            node_rows(real_url, args.node_seconds, args.old_tree)
    finally:
        exporter.terminate()
        exporter.wait()
    remote_rows()
    decoder_rows(args.old_tree)
    return 0


if __name__ == "__main__":
    sys.exit(main())
