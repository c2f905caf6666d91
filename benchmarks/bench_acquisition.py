"""Benchmark of the acquisition path: emulator -> pty -> current_sensor -> DDS -> subscriber.

Three processes, as on a rack controller: the sensor-board emulator (`sensor_board_sim`,
board clock = wall clock), the `current_sensor` node, and this process as the subscriber.
For each scenario it measures, over the measurement window:
  - frames dropped: frames the board numbered but no subscriber-visible batch carried
    (sequence gaps between batches + frames_lost reported by the node)
  - node CPU: user+system time of the node process / wall time, in % of one core
  - latency: from the sampling instant of the newest frame in a batch (board clock) to the
    batch's arrival in the subscriber, p50 / p99 (includes the emulator's write, the pty,
    decoding, conversion, DDS)

Usage: .venv/bin/python benchmarks/bench_acquisition.py [--duration 60] (or `make bench`)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import rclpy
from rclpy.executors import SingleThreadedExecutor

from rackpower_nodes.tools.launch_env import (
    executable, isolated_ros_env, share_file, stop_process, wait_for_path)
from rackpower_nodes.tools.monitor import SampleMonitor

SCENARIOS = [(64, 1000.0), (16, 10000.0)]
NAMESPACE = "/rack_bench"


def run_scenario(channels: int, rate_hz: float, duration_s: float, tmp: Path) -> dict:
    link = tmp / f"board_{channels}_{int(rate_hz)}"
    sim = subprocess.Popen(
        [str(executable("sensor_board_sim")), "--link", str(link), "--channels", str(channels),
         "--rate", str(rate_hz), "--scale", "0.001", "--waveform", "sine", "--wall-clock"],
        stdout=subprocess.DEVNULL)
    procs = [sim]
    try:
        wait_for_path(link)
        node = subprocess.Popen(
            [str(executable("current_sensor")), "--ros-args", "-r", f"__ns:={NAMESPACE}",
             "--params-file", str(share_file("config", "rack.yaml")),
             "-p", f"serial.port:={link}", "-p", f"board.channels:={channels}",
             "-p", f"board.frame_rate_hz:={rate_hz}", "--log-level", "warn"])
        procs.append(node)
        return _measure(node, duration_s)
    finally:
        for proc in reversed(procs):
            stop_process(proc)


def _measure(node: subprocess.Popen, duration_s: float) -> dict:
    monitor = SampleMonitor(NAMESPACE)
    executor = SingleThreadedExecutor()
    executor.add_node(monitor)
    _spin(executor, 3.0)                     # discovery, start-up backlog
    monitor.reset()
    ps = psutil.Process(node.pid)
    cpu0, t0 = ps.cpu_times(), time.monotonic()
    _spin(executor, duration_s)
    cpu1, t1 = ps.cpu_times(), time.monotonic()
    s = monitor.stats
    monitor.reset()                          # what arrives after the window is not counted
    _spin(executor, 1.5)                     # the last diagnostics
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0) * 100
    p50, p99 = s.latency_percentiles_ms(50, 99)
    result = {
        "frames": s.samples, "dropped": s.frames_missing + s.frames_lost_reported,
        "crc_errors": monitor.diagnostics.get("crc_errors", "?"),
        "fps": s.samples / max(t1 - t0, 1e-9), "cpu": cpu, "p50": p50, "p99": p99,
        "max": max(s.latencies_s) * 1e3 if s.latencies_s else float("nan"),
    }
    executor.remove_node(monitor)
    monitor.destroy_node()
    return result


def _spin(executor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="s per scenario")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="rackpower-bench-") as tmp:
        isolated_ros_env(Path(tmp) / "log")
        with rclpy.init():
            for channels, rate in SCENARIOS:
                print(f"running {channels} ch x {rate:g} Hz for {args.duration:g} s ...",
                      flush=True)
                rows.append(((channels, rate),
                             run_scenario(channels, rate, args.duration, Path(tmp))))
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {psutil.cpu_count()} CPUs, Python {sys.version.split()[0]}\n")
    header = ("scenario", "frames", "frames/s", "dropped", "crc err", "node CPU %",
              "lat p50 ms", "lat p99 ms", "lat max ms")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (channels, rate), r in rows:
        print(f"| {channels} ch x {rate:g} Hz | {r['frames']} | {r['fps']:.0f} | {r['dropped']} "
              f"| {r['crc_errors']} | {r['cpu']:.1f} | {r['p50']:.2f} | {r['p99']:.2f} "
              f"| {r['max']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
