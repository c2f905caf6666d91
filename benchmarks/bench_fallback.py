"""How fast `pdu_actuator` falls back to safe mode when the forecast stream stops.

    .venv/bin/python benchmarks/bench_fallback.py [--cycles 30]

The actuator runs in its own process against two simulated PDUs (Modbus TCP on loopback),
configured as test/nodes/test_pdu_actuator_node.py configures it (`inputs.forecast_stale_s`
0.2 s); this process publishes power_samples at 20 Hz and power_forecast at 10 Hz (the test's
`Rack`, test/helpers/rack.py). Each cycle: forecasts for 1.5 s (proactive), then none until the
first `safe` allocation. Delay = that allocation's stamp - the last forecast's publish time
(one clock). Target: within 300 ms. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from rackpower_nodes.tools.launch_env import (  # noqa: E402
    executable, isolated_ros_env, stop_process)
from helpers.rack import (  # noqa: E402
    NS, Rack, actuator_params, free_port, pdu_server, stamp)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=30)
    args = parser.parse_args(argv)
    import rclpy

    tmp = Path(tempfile.mkdtemp(prefix="bench-fallback-"))
    env = isolated_ros_env(tmp / "log")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    ports = [free_port(), free_port()]
    params = actuator_params(ports)
    path = tmp / "actuator.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    servers = [pdu_server(p).start() for p in ports]
    proc = subprocess.Popen([str(executable("pdu_actuator")), "--ros-args", "-r",
                             f"__ns:={NS}", "--params-file", str(path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delays, reasons = [], set()
    try:
        with rclpy.init():
            rack = Rack()
            if not rack.run_until(lambda m: m.mode == "proactive", 30.0):
                raise SystemExit("the actuator never came up")
            for _ in range(args.cycles):
                rack.forecasting = True
                rack.run_until(lambda m: False, 1.5)
                rack.forecasting = False
                time.sleep(0.15)                 # a forecast being published may still land
                stopped = rack.last_forecast_t
                if not rack.run_until(lambda m: m.mode == "safe" and stamp(m) > stopped, 5.0):
                    raise SystemExit("no safe allocation after the forecasts stopped")
                first = next(m for m in rack.allocations
                             if m.mode == "safe" and stamp(m) > stopped)
                delays.append((stamp(first) - stopped) * 1e3)
                reasons.add(first.mode_reason.split(" for ")[0])
            rack.close()
    finally:
        stop_process(proc)
        for s in servers:
            s.stop()
    d = np.array(delays)
    print(f"command: python benchmarks/bench_fallback.py --cycles {args.cycles}")
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| cycles | stale after ms | delay p50 ms | delay p90 ms | delay max ms | "
          "within 300 ms |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(d)} | {params['inputs']['forecast_stale_s'] * 1e3:.0f} | "
          f"{np.percentile(d, 50):.0f} | {np.percentile(d, 90):.0f} | {d.max():.0f} | "
          f"{int((d <= 300).sum())}/{len(d)} |")
    print(f"\nreasons: {sorted(reasons)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
