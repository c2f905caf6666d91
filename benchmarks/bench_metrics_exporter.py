"""CPU and memory of the metrics_exporter node, its own process, fed as the graph feeds it.

    .venv/bin/python benchmarks/bench_metrics_exporter.py [--seconds 30] [--components 16]
        [--horizon 50] [--scrape-s 1.0]

This script's node publishes, in the rack's namespace, a PowerAllocation of `--components`
components at 10 Hz (the actuator's rate), a PowerForecast of `--horizon` steps at 10 Hz (the
predictor's), one ComponentHealth per component each second (the health monitor's) and a
/diagnostics array each second with one status per component plus five (the nodes' 1 Hz
statuses); it scrapes /metrics every `--scrape-s` s as Prometheus would. After a warm-up of
10 s the exporter's CPU time (user + system, psutil) over `--seconds` gives its share of one
core; RSS is read at the end; each scrape's wall time is kept. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import math
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import psutil

NAMESPACE = "/rack_bench_metrics"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stamp(msg, t: float) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t * 1e9), 10**9)


class _Feed:
    """The publishers and the messages they send, built once and re-stamped each time."""

    def __init__(self, node, n: int, horizon: int):
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        from rackpower.msg import ComponentHealth, PowerAllocation, PowerForecast
        from rackpower_nodes.nodes.common import float32_array, forecast_qos, latched_qos

        names = [f"srv{i + 1:02d}" for i in range(n)]
        measured = 150.0 + 80.0 * np.sin(np.arange(n))
        self.alloc = PowerAllocation(
            mode="proactive", budget_w=3680.0, breaker_w=4600.0, window_s=1.0,
            channel_ids=names, allocated_w=float32_array(measured * 1.2),
            measured_w=float32_array(measured), floor_w=float32_array(np.full(n, 60.0)),
            ceiling_w=float32_array(np.full(n, 400.0)), held_w=float32_array(measured * 1.2),
            forecast_w=float32_array(measured * 1.1), priority=[1] * n,
            total_allocated_w=float(measured.sum() * 1.2), total_measured_w=float(measured.sum()),
            slack_w=3680.0 - float(measured.sum() * 1.2), forecast_model="lstm 1",
            pdu_written=True)
        base = np.repeat(measured[:, None], horizon, axis=1)
        self.forecast = PowerForecast(
            step_s=0.1, horizon_steps=horizon, channel_ids=names,
            p50_w=float32_array(base), p90_w=float32_array(base * 1.05),
            p99_w=float32_array(base * 1.1), model_name="lstm", model_version="1",
            inference_ms=3.0)
        self.health = [ComponentHealth(component_id=c, state="ok", score=0.1) for c in names]
        statuses = [DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{NAMESPACE}/health_monitor: {c}", hardware_id=c,
            message="ok", values=[KeyValue(key="state", value="ok")]) for c in names]
        statuses += [DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{NAMESPACE}/pdu_actuator: PDU pdu-{k}",
            hardware_id=f"pdu-{k}", message="connected",
            values=[KeyValue(key="kind", value="pdu"), KeyValue(key="connected", value="True")])
            for k in "ab"]
        statuses += [DiagnosticStatus(
            level=DiagnosticStatus.OK, name=f"{NAMESPACE}/{what}", hardware_id="x",
            message="ok", values=[KeyValue(key="write_latency_ms_p50", value="3.1")])
            for what in ("pdu_actuator: allocation", "predictor: forecaster", "recorder: rec")]
        self.diag = DiagnosticArray(status=statuses)
        self.pubs = {
            "alloc": node.create_publisher(PowerAllocation, "power_allocation", latched_qos()),
            "forecast": node.create_publisher(PowerForecast, "power_forecast", forecast_qos()),
            "health": node.create_publisher(ComponentHealth, "component_health", QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=n, reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL)),       # as health_monitor's
            "diag": node.create_publisher(DiagnosticArray, "/diagnostics", 10)}

    def fast(self) -> None:
        now = time.time()
        _stamp(self.alloc, now)
        _stamp(self.forecast, now - 0.05)
        self.pubs["alloc"].publish(self.alloc)
        self.pubs["forecast"].publish(self.forecast)

    def slow(self) -> None:
        now = time.time()
        for msg in self.health:
            _stamp(msg, now - 0.5)
            self.pubs["health"].publish(msg)
        self.pubs["diag"].publish(self.diag)


def _spin(node, seconds: float, url: str, scrape_s: float, scrapes: list) -> None:
    import rclpy

    end = time.monotonic() + seconds
    next_scrape = time.monotonic()
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.02)
        if time.monotonic() >= next_scrape:
            next_scrape += scrape_s
            began = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    body = reply.read()
            except OSError:                  # not listening yet (warm-up)
                continue
            scrapes.append((time.perf_counter() - began, body))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--components", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=50)
    parser.add_argument("--scrape-s", type=float, default=1.0)
    args = parser.parse_args()

    import rclpy

    from rackpower_nodes.tools.launch_env import executable, isolated_ros_env

    env = isolated_ros_env(tempfile.mkdtemp(prefix="bench_metrics_"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen([str(executable("metrics_exporter")), "--ros-args", "-r",
                             f"__ns:={NAMESPACE}", "-p", f"http.port:={port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scrapes: list[tuple[float, bytes]] = []
    try:
        with rclpy.init():
            node = rclpy.create_node("bench_metrics_feed", namespace=NAMESPACE)
            feed = _Feed(node, args.components, args.horizon)
            node.create_timer(0.1, feed.fast)
            node.create_timer(1.0, feed.slow)
            ps = psutil.Process(proc.pid)
            _spin(node, 10.0, url, args.scrape_s, [])
            cpu0, t0 = sum(ps.cpu_times()[:2]), time.monotonic()
            _spin(node, args.seconds, url, args.scrape_s, scrapes)
            cpu = sum(ps.cpu_times()[:2]) - cpu0
            wall = time.monotonic() - t0
            rss_mb = ps.memory_info().rss / 2**20
            node.destroy_node()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    times_ms = np.array([t for t, _ in scrapes]) * 1e3 if scrapes else np.array([math.nan])
    last = scrapes[-1][1].decode() if scrapes else ""
    size_kb = len(last) / 1024 if scrapes else math.nan
    # what the last scrape held: every input must have arrived for the figures to count
    series = sum(1 for line in last.splitlines() if line and not line.startswith("#"))
    health = last.count("rackpower_component_health_state{")
    forecasts = last.count("rackpower_component_forecast_watts{")
    print(f"`python benchmarks/bench_metrics_exporter.py --seconds {args.seconds:g} "
          f"--components {args.components} --horizon {args.horizon} --scrape-s "
          f"{args.scrape_s:g}`\n")
    print("| components | horizon | scrape every | CPU (% of a core) | RSS (MB) | scrape p50 "
          "(ms) | scrape max (ms) | /metrics (kB) | samples | health / forecast series |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.components} | {args.horizon} | {args.scrape_s:g} s | "
          f"{100 * cpu / wall:.1f} | {rss_mb:.0f} | {np.median(times_ms):.1f} | "
          f"{times_ms.max():.1f} | {size_kb:.1f} | {series} | {health} / {forecasts} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
