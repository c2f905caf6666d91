"""Benchmark: writing one allocation as 12 servers' BMC power limits over Redfish.

The simulated BMCs (`rackpower_nodes.sim.bmc.SimBmcServer`, one HTTP endpoint, a chassis per
server, half on the EnvironmentMetrics schema and half on the legacy Power schema) run in
their own process; this process drives them through the PDU link (`drivers/pdu_link/`)
with `RedfishPowerCap` clients, as `pdu_actuator`'s worker does. Each write moves every
limit by 40 W (all down, then all up on the next write; beyond the dead band), so each is 12
PATCH requests in one pass. Measured: the wall time of `PduLink.write_now`, with the link's
requests side by side (its default, up to 8 at once) and one at a time (the pool cut to 1
worker), and with the BMC answering at once or after a delay (`--delay-ms`, a real BMC takes
tens to hundreds of ms per request).

Usage: .venv/bin/python benchmarks/bench_power_caps.py [--writes 200] [--delay-ms 0,50]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from rackpower_nodes.drivers import pdu_link
from rackpower_nodes.drivers.bmc import RedfishPowerCap
from rackpower_nodes.drivers.pdu_link import PduLink, PduTarget

REPO = Path(__file__).resolve().parents[1]
SERVERS = [f"srv{i:02d}" for i in range(1, 13)]
USER, PASSWORD = "admin", "rackpower"

_SERVER_SCRIPT = """
import sys, time
from rackpower_nodes.sim.bmc import SimBmcServer
names = sys.argv[1].split(",")
api = {n: ("environment_metrics", "power_control")[k % 2] for k, n in enumerate(names)}
srv = SimBmcServer(names, api=api, allowable_min_w=50.0, allowable_max_w=800.0,
                   username="admin", password="rackpower").start()
srv.set_delay(float(sys.argv[2]))
print(srv.port, flush=True)
sys.stdin.read()
srv.stop()
"""


def _start_server(delay_s: float) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER_SCRIPT, ",".join(SERVERS),
                             str(delay_s)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def _run(url: str, writes: int, workers: int) -> np.ndarray:
    saved = pdu_link.MAX_WORKERS
    pdu_link.MAX_WORKERS = workers
    try:
        targets = [PduTarget(f"bmc:{n}", RedfishPowerCap(f"{url}/redfish/v1/Chassis/{n}",
                                                         username=USER, password=PASSWORD,
                                                         timeout_s=5.0),
                             np.array([1]), np.array([i]), min_change_w=5.0, kind="bmc")
                   for i, n in enumerate(SERVERS)]
        link = PduLink(targets, len(SERVERS), 12 * 400.0, np.full(len(SERVERS), 800.0))
    finally:
        pdu_link.MAX_WORKERS = saved
    errors = link.connect_all()
    if errors:
        raise SystemExit("; ".join(errors))
    base = np.linspace(200.0, 300.0, len(SERVERS))
    times = []
    for k in range(writes + 5):
        want = base + (20.0 if k % 2 else -20.0)
        t0 = time.perf_counter()
        ok = link.write_now(want)
        dt = time.perf_counter() - t0
        if not ok:
            raise SystemExit(f"write {k} not acknowledged: {link.health()}")
        if k >= 5:                       # first writes: sessions warm up
            times.append(dt * 1e3)
    link.close()
    return np.array(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--delay-ms", default="0,50",
                        help="comma-separated BMC response delays to run, ms")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    for delay_ms in [float(d) for d in args.delay_ms.split(",") if d]:
        proc, url = _start_server(delay_ms / 1e3)
        try:
            for label, workers in (("side by side (8)", pdu_link.MAX_WORKERS),
                                   ("one at a time", 1)):
                t = _run(url, args.writes, workers)
                rows.append({"bmc delay ms": delay_ms, "requests": label,
                             "writes": len(t), "p50 ms": float(np.percentile(t, 50)),
                             "p99 ms": float(np.percentile(t, 99)), "max ms": float(t.max())})
        finally:
            proc.stdin.close()
            proc.wait(timeout=10)
    print(f"command: .venv/bin/python benchmarks/bench_power_caps.py --writes {args.writes} "
          f"--delay-ms {args.delay_ms}")
    print(f"12 BMC power limits per write (12 PATCH requests), "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| BMC delay ms | requests | writes | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bmc delay ms']:g} | {r['requests']} | {r['writes']} | {r['p50 ms']:.1f} "
              f"| {r['p99 ms']:.1f} | {r['max ms']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
