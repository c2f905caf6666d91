"""CPU and memory of the rack_view node, its own process, fed as the graph feeds it.

    .venv/bin/python benchmarks/bench_rack_view.py [--seconds 60] [--components 16]

This script's node publishes a PowerAllocation of `--components` components at 10 Hz (the
actuator's rate) and subscribes to rack_markers as RViz does; the `rack_view` executable runs
with its defaults (1 Hz). After a warm-up of 10 s the node's CPU time (user + system, psutil)
over `--seconds` gives its share of one core; RSS is read at the end. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time

import psutil


def _allocation(n: int, k: int):
    from rackpower.msg import PowerAllocation

    msg = PowerAllocation(mode="proactive", budget_w=3680.0, breaker_w=4600.0, window_s=2.0,
                          channel_ids=[f"srv{i + 1:02d}" for i in range(n)])
    msg.header.frame_id = "rack_01"
    msg.allocated_w = [230.0] * n
    msg.measured_w = [150.0 + 80.0 * math.sin(0.1 * k + i) for i in range(n)]
    msg.ceiling_w = [400.0] * n
    msg.floor_w = [60.0] * n
    msg.forecast_w = msg.held_w = [math.nan] * n
    msg.priority = [1] * n
    return msg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--components", type=int, default=16)
    args = parser.parse_args()

    import rclpy
    from visualization_msgs.msg import MarkerArray

    from rackpower_nodes.nodes.common import latched_qos
    from rackpower_nodes.tools.launch_env import executable, isolated_ros_env

    env = isolated_ros_env(tempfile.mkdtemp(prefix="bench_rack_view_"))
    proc = subprocess.Popen([str(executable("rack_view")), "--ros-args", "-r",
                             "__ns:=/rack_01"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    arrays: list[int] = []
    try:
        with rclpy.init():
            node = rclpy.create_node("bench_rack_view", namespace="/rack_01")
            pub = node.create_publisher(type(_allocation(1, 0)), "power_allocation",
                                        latched_qos())
            node.create_subscription(MarkerArray, "rack_markers",
                                     lambda m: arrays.append(len(m.markers)), latched_qos())
            k = [0]

            def tick() -> None:
                pub.publish(_allocation(args.components, k[0]))
                k[0] += 1
            node.create_timer(0.1, tick)
            ps = psutil.Process(proc.pid)
            end = time.monotonic() + 10.0
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            cpu0, t0, n0 = sum(ps.cpu_times()[:2]), time.monotonic(), len(arrays)
            end = t0 + args.seconds
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)
            cpu = sum(ps.cpu_times()[:2]) - cpu0
            wall = time.monotonic() - t0
            rss_mb = ps.memory_info().rss / 2**20
            received = len(arrays) - n0
            node.destroy_node()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    print(f"`python benchmarks/bench_rack_view.py --seconds {args.seconds:g} --components "
          f"{args.components}`\n")
    print("| components | allocations in | MarkerArrays out | markers each | CPU (% of a core) "
          "| RSS (MB) |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.components} | 10 Hz | {received / wall:.2f} Hz | "
          f"{arrays[-1] if arrays else 0} | {100 * cpu / wall:.1f} | {rss_mb:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
