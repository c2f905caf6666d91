"""`make demo`: the sensor-board emulator and the `current_sensor` node as separate processes.

The emulator writes 64 channels at 1 kHz to a pty, with a little line noise injected (corrupt
bytes, garbage bursts) and one cable pull; the node reads it over the pty and publishes over DDS;
this process subscribes like any consumer and prints what arrived.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor

from rackpower_nodes.launch_env import (
    executable, isolated_ros_env, share_file, stop_process, wait_for_path)
from rackpower_nodes.monitor import SampleMonitor

NAMESPACE = "/rack_01"


def _parse(argv):
    parser = argparse.ArgumentParser(prog="rackpower-demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of acquisition")
    parser.add_argument("--rate", type=float, default=1000.0, help="board frame rate, Hz")
    parser.add_argument("--channels", type=int, default=64, help="board channels")
    parser.add_argument("--unplug-at", type=float, default=4.0,
                        help="pull the sensor cable after this many seconds (0: never)")
    return parser.parse_args(argv)


def _spin_for(executor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


def main(argv=None) -> int:
    args = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="rackpower-demo-") as tmp:
        env = isolated_ros_env(Path(tmp) / "log")
        link = Path(tmp) / "board"
        sim_cmd = [str(executable("sensor_board_sim")), "--link", str(link),
                   "--channels", str(args.channels), "--rate", str(args.rate),
                   "--scale", "0.001", "--waveform", "sine", "--wall-clock",
                   "--corrupt-prob", "0.001", "--garbage-prob", "0.0005", "--seed", "7"]
        if args.unplug_at > 0:
            sim_cmd += ["--unplug-every", str(args.unplug_at), "--unplug-for", "1.0"]
        node_cmd = [str(executable("current_sensor")), "--ros-args", "-r", f"__ns:={NAMESPACE}",
                    "--params-file", str(share_file("config", "rack.yaml")),
                    "-p", f"serial.port:={link}", "-p", f"board.channels:={args.channels}",
                    "-p", f"board.frame_rate_hz:={args.rate}"]
        print(f"rackpower demo: {args.channels} channels at {args.rate:g} Hz for "
              f"{args.duration:g} s (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})", flush=True)
        sim = subprocess.Popen(sim_cmd, env=env)
        procs = [sim]
        try:
            wait_for_path(link)
            node = subprocess.Popen(node_cmd, env=env)
            procs.append(node)
            return _watch(args, node)
        finally:
            for proc in reversed(procs):
                stop_process(proc)


def _watch(args, node_proc: subprocess.Popen) -> int:
    with rclpy.init():
        monitor = SampleMonitor(NAMESPACE)
        executor = SingleThreadedExecutor()
        executor.add_node(monitor)
        _spin_for(executor, 2.0)      # discovery and the first batches
        monitor.reset()
        _spin_for(executor, args.duration)
        if node_proc.poll() is not None:
            print(f"current_sensor exited early with {node_proc.returncode}", file=sys.stderr)
            return 1
        _report(monitor)
        ok = monitor.stats.messages > 0
        monitor.destroy_node()
    return 0 if ok else 1


def _report(monitor: SampleMonitor) -> None:
    s, d = monitor.stats, monitor.diagnostics
    span = (s.last_receive_s or 0) - (s.first_receive_s or 0)
    p50, p99 = s.latency_percentiles_ms(50, 99)
    print("\n== what the subscriber received ==")
    print(f"batches {s.messages}, samples per channel {s.samples} "
          f"({s.samples / max(span, 1e-9):.0f} frames/s over {span:.1f} s)")
    print(f"frames lost (reported by node) {s.frames_lost_reported}, "
          f"sequence breaks seen {s.sequence_breaks}")
    print(f"newest-sample-to-subscriber latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print("\n== node diagnostics ==")
    for key in ("_message", "port_state", "reconnects", "frame_rate_hz", "frames", "crc_errors",
                "header_errors", "sequence_gaps", "frames_lost", "bytes_discarded",
                "last_frame_age_s", "clock_drift_ppm"):
        print(f"  {key.strip('_'):18s} {d.get(key, '?')}")
    print("\n== mean power per component ==")
    for cid, watts in monitor.stats.mean_power_w().items():
        print(f"  {cid:8s} {watts:8.1f} W")


if __name__ == "__main__":
    sys.exit(main())
