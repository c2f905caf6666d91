"""Benchmark of the `recorder` node: a long run at the rack's real rates, every bag counted.

Two processes: this one publishes the rack's topics with the QoS their nodes use
(power_samples 16 channels x 20 samples at 50 Hz and host_telemetry at 2 Hz best effort,
power_forecast 16 x 50 steps at 10 Hz, power_allocation and allocation_error at 10 Hz
reliable, one latched model_update), and the `recorder` executable records them. Afterwards
every bag is read with rosbags' AnyReader and with the `mcap` reader, and the table shows, per
topic, messages published and recorded by each reader, then bags, bytes, MB/s written and the
recorder's CPU (user + system time / wall time, % of one core).

Best-effort topics may lose messages in DDS (none are expected on one machine at these
rates); the reliable ones must match exactly.

Usage: .venv/bin/python benchmarks/bench_recorder.py [--minutes 10] [--rotate-mib 64]
       [--rotate-s 120] [--out FOLDER]
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import rclpy

from rackpower_nodes.tools.launch_env import executable, isolated_ros_env, stop_process

NAMESPACE = "/rack_bench_rec"
CHANNELS, PER_BATCH, HORIZON = 16, 20, 50


class Traffic:
    """The rack's topics at their real rates and QoS, numbered."""

    def __init__(self):
        from rackpower.msg import (
            AllocationError, HostMetrics, HostTelemetry, ModelUpdate, PowerAllocation,
            PowerForecast, PowerSamples)
        from rackpower_nodes.nodes.common import samples_qos
        from rackpower_nodes.nodes.common import errors_qos, latched_qos
        from rackpower_nodes.nodes.predictor import forecast_qos, latched_qos

        self.node = rclpy.create_node("bench_traffic", namespace=NAMESPACE)
        ids = [f"srv{i:02d}" for i in range(CHANNELS)]
        pub = self.node.create_publisher
        self.pubs = {
            "power_samples": pub(PowerSamples, "power_samples", samples_qos(0.25)),
            "host_telemetry": pub(HostTelemetry, "host_telemetry", samples_qos(2.0)),
            "power_forecast": pub(PowerForecast, "power_forecast", forecast_qos()),
            "power_allocation": pub(PowerAllocation, "power_allocation", latched_qos()),
            "allocation_error": pub(AllocationError, "allocation_error", errors_qos()),
            "model_update": pub(ModelUpdate, "model_update", latched_qos())}
        rng = np.random.default_rng(1)
        self.samples = PowerSamples(channel_ids=ids, sample_count=PER_BATCH,
                                    sample_period_s=0.001)
        self.samples.current_a = rng.random(CHANNELS * PER_BATCH).astype(np.float32)
        self.samples.voltage_v = np.full(CHANNELS, 230.0, dtype=np.float32)
        self.forecast = PowerForecast(channel_ids=ids, step_s=0.1, horizon_steps=HORIZON)
        grid = rng.random(CHANNELS * HORIZON).astype(np.float32) * 400
        self.forecast.p50_w, self.forecast.p90_w, self.forecast.p99_w = grid, grid, grid
        self.allocation = PowerAllocation(channel_ids=ids, mode="proactive")
        self.allocation.allocated_w = np.full(CHANNELS, 300.0, dtype=np.float32)
        self.telemetry = HostTelemetry(hosts=[HostMetrics(host_id=i) for i in ids[:8]])
        self.error = AllocationError(channel_id=ids[0], mode="proactive")
        self.pubs["model_update"].publish(ModelUpdate(model_path="/models/v1", version="v1"))
        self.sent = Counter({"model_update": 1})

    def wait_recorded(self, timeout_s: float = 60.0) -> None:
        end = time.monotonic() + timeout_s
        while any(p.get_subscription_count() == 0 for p in self.pubs.values()):
            if time.monotonic() > end:
                raise TimeoutError("the recorder did not subscribe to every topic")
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def run(self, seconds: float) -> None:
        """50 Hz ticks: samples every tick, forecast/allocation/error every 5th, telemetry
        every 25th."""
        start, k = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            time.sleep(max(0.0, start + k / 50.0 - time.monotonic()))
            self.samples.first_sequence = k * PER_BATCH
            self._send("power_samples", self.samples)
            if k % 5 == 0:
                self._send("power_forecast", self.forecast)
                self._send("power_allocation", self.allocation)
                self._send("allocation_error", self.error)
            if k % 25 == 0:
                self._send("host_telemetry", self.telemetry)
            k += 1

    def _send(self, topic: str, msg) -> None:
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pubs[topic].publish(msg)
        self.sent[topic] += 1


def count_bags(bags: list[Path]) -> tuple[Counter, Counter]:
    """Messages per topic (bare name) with AnyReader and with the mcap reader."""
    from mcap.reader import make_reader
    from rosbags.highlevel import AnyReader

    from rackpower_nodes.sources.bags import message_typestore

    any_counts, mcap_counts = Counter(), Counter()
    with AnyReader(bags, default_typestore=message_typestore()) as reader:
        for conn, _, _ in reader.messages():
            any_counts[conn.topic.rsplit("/", 1)[-1]] += 1
    for bag in bags:
        for path in bag.glob("*.mcap"):
            with path.open("rb") as fh:
                for _, channel, _ in make_reader(fh).iter_messages():
                    mcap_counts[channel.topic.rsplit("/", 1)[-1]] += 1
    return any_counts, mcap_counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rotate-mib", type=float, default=64.0, help="rotation.max_bytes, MiB")
    ap.add_argument("--rotate-s", type=float, default=120.0, help="rotation.max_duration_s")
    ap.add_argument("--out", type=Path, help="bag folder (default: a temporary folder)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_recorder_"))
    folder = args.out or tmp / "bags"
    env = isolated_ros_env(tmp / "ros_log")
    rec = subprocess.Popen(
        [str(executable("recorder")), "--ros-args", "-r", f"__ns:={NAMESPACE}",
         "-p", f"output.folder:={folder}",
         "-p", f"rotation.max_bytes:={int(args.rotate_mib * 2**20)}",
         "-p", f"rotation.max_duration_s:={args.rotate_s}", "--log-level", "warn"], env=env)
    with rclpy.init():
        traffic = Traffic()
        try:
            traffic.wait_recorded()
            proc = psutil.Process(rec.pid)
            cpu0, t0 = proc.cpu_times(), time.monotonic()
            traffic.run(args.minutes * 60.0)
            time.sleep(1.0)
            cpu1, wall = proc.cpu_times(), time.monotonic() - t0
        finally:
            code = stop_process(rec, timeout_s=20)
            traffic.node.destroy_node()
    bags = sorted(p for p in folder.iterdir() if p.is_dir())
    any_counts, mcap_counts = count_bags(bags)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100
    print(f"Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}` "
          f"(recorder exit code {code})\n")
    print("| topic | published | AnyReader | mcap reader | missing |\n|---|---|---|---|---|")
    for topic in traffic.pubs:
        sent = traffic.sent[topic]
        print(f"| {topic} | {sent} | {any_counts[topic]} | {mcap_counts[topic]} | "
              f"{sent - any_counts[topic]} |")
    print(f"\n| minutes | bags | bytes | MB/s | recorder CPU % |\n|---|---|---|---|---|\n"
          f"| {args.minutes:g} | {len(bags)} | {size} | {size / wall / 1e6:.3f} | {cpu:.1f} |")
    ok = code == 0 and all(any_counts[t] == mcap_counts[t] for t in traffic.pubs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
