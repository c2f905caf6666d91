"""Benchmark: time from a foreign write (or a device restart) to the device holding the
allocation again, with the PDU link's read-back verification (`drivers/pdu_link/`).

The rack's devices run in their own process, as the simulator's do: two Modbus TCP PDUs
(`SimPduServer`, 24 outlets each, outlets 1-8 in use) and one Redfish endpoint with 12
chassis (`SimBmcServer`, half EnvironmentMetrics, half legacy Power). This process drives
them as `pdu_actuator` does: one `PduLink` over 14 targets (16 components on the PDUs'
outlets, the first 12 also capped through their BMCs), a constant allocation of 230 W each
(3680 W, the budget) submitted at 10 Hz, every target read back every `--verify-s`.

The device process also plays the foreign writer: it writes an allocation register with its
own pymodbus client (2300 W) or PATCHes a BMC limit with `requests` (800 W), then polls its
own state every 0.5 ms until the value is no longer the foreign one, and reports the time
since the write was acknowledged. A restart is `SimPduServer.reboot()` (connections dropped,
every outlet back to 2300 W: 36.8 kW on 16 outlets), timed from the call until every outlet
in use holds its allocation again.

Usage: .venv/bin/python benchmarks/bench_verification.py [--writes 100] [--reboots 10]
           [--verify-s 0.5] [--bmc-delay-ms 0]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))          # benchmark this checkout

from rackpower_nodes.drivers.bmc import RedfishPowerCap  # noqa: E402
from rackpower_nodes.drivers.pdu import open_pdu  # noqa: E402
from rackpower_nodes.drivers.pdu_link import PduLink, PduTarget  # noqa: E402

SERVERS = [f"srv{i:02d}" for i in range(1, 13)]
USER, PASSWORD = "admin", "rackpower"
OUTLETS = 8                  # outlets in use on each PDU
ALLOC_W = 230.0
BUDGET_W = 16 * ALLOC_W

_DEVICES = r"""
import json, sys, time
import numpy as np, requests
from pymodbus.client import ModbusTcpClient
from rackpower_nodes.sim.bmc import SimBmcServer
from rackpower_nodes.sim.pdu import PduModel, SimPduServer

names = sys.argv[1].split(","); outlets = int(sys.argv[2])
api = {n: ("environment_metrics", "power_control")[k % 2] for k, n in enumerate(names)}
pdus = [SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 1e6)).start()
        for _ in range(2)]
bmc = SimBmcServer(names, api=api, allowable_min_w=50.0, allowable_max_w=800.0,
                   username="admin", password="rackpower").start()
bmc.set_delay(float(sys.argv[3]))
print(json.dumps({"pdus": [p.port for p in pdus], "bmc": bmc.url}), flush=True)
clients = [ModbusTcpClient("127.0.0.1", port=p.port, timeout=5, retries=0) for p in pdus]
http = requests.Session(); http.auth = ("admin", "rackpower")
point = pdus[0].map.point("outlet_allocation_w")

def until(read, foreign, t0):
    while read() == foreign:
        time.sleep(0.0005)
    return time.perf_counter() - t0, read()

for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "pdu":
        i, k, w = int(arg[0]), int(arg[1]), float(arg[2])
        c = clients[i]
        if not c.connected:
            c.connect()
        r = c.write_registers(int(point.address_of(k)), point.encode([w])[0].tolist(),
                              device_id=1)
        assert not r.isError(), r
        dt, v = until(lambda: pdus[i].model.allocation_w[k - 1], w, time.perf_counter())
    elif cmd == "bmc":
        n, w = arg[0], float(arg[1])
        if api[n] == "environment_metrics":
            path, body = "EnvironmentMetrics", {"PowerLimitWatts": {"SetPoint": w}}
        else:
            path, body = "Power", {"PowerControl": [{"PowerLimit": {"LimitInWatts": w}}]}
        r = http.patch(f"{bmc.chassis_url(n)}/{path}", json=body, timeout=10)
        assert r.status_code == 200, r.text
        dt, v = until(lambda: bmc.limit_w(n), w, time.perf_counter())
    elif cmd == "reboot":
        i = int(arg[0]); t0 = time.perf_counter()
        pdus[i].reboot()
        alloc = lambda: pdus[i].model.allocation_w[:outlets]
        while np.any(alloc() == 2300.0):
            time.sleep(0.0005)
        dt, v = time.perf_counter() - t0, float(alloc().max())
    print(json.dumps({"dt": dt, "value": v}), flush=True)
"""


def _link(ports: list[int], bmc_url: str, verify_s: float) -> PduLink:
    targets = [PduTarget(f"pdu-{'ab'[i]}", open_pdu(f"tcp://127.0.0.1:{port}", "rackpower_sim",
                                                     timeout_s=1.0),
                         np.arange(1, OUTLETS + 1), np.arange(OUTLETS) + i * OUTLETS)
               for i, port in enumerate(ports)]
    targets += [PduTarget(f"bmc:{n}", RedfishPowerCap(f"{bmc_url}/redfish/v1/Chassis/{n}",
                                                      username=USER, password=PASSWORD,
                                                      timeout_s=2.0),
                          np.array([1]), np.array([i]), min_change_w=5.0, resolution_w=1.0,
                          kind="bmc")
                for i, n in enumerate(SERVERS)]
    link = PduLink(targets, 2 * OUTLETS, BUDGET_W, np.full(2 * OUTLETS, 400.0), retry_s=0.5,
                   verify_s=verify_s)
    errors = link.connect_all()
    if errors:
        raise SystemExit("; ".join(errors))
    return link


def _ask(proc: subprocess.Popen, line: str) -> dict:
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def _row(fault: str, results: list[dict], expect: float) -> dict:
    t = np.array([r["dt"] for r in results]) * 1e3
    ok = sum(1 for r in results if r["value"] == expect)
    return {"fault": fault, "n": len(t), "p50 ms": float(np.percentile(t, 50)),
            "p99 ms": float(np.percentile(t, 99)), "max ms": float(t.max()),
            "over 1 s": int(np.sum(t > 1000.0)), "back to the allocation": ok}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=100, help="foreign writes per kind")
    parser.add_argument("--reboots", type=int, default=10)
    parser.add_argument("--verify-s", type=float, default=0.5)
    parser.add_argument("--bmc-delay-ms", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.getLogger("rackpower_nodes").setLevel(logging.ERROR)   # each fault is logged
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen([sys.executable, "-c", _DEVICES, ",".join(SERVERS), str(OUTLETS),
                             str(args.bmc_delay_ms / 1e3)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    rng = np.random.default_rng(args.seed)
    want = np.full(2 * OUTLETS, ALLOC_W)
    stop = threading.Event()
    try:
        ports = json.loads(proc.stdout.readline())
        link = _link(ports["pdus"], ports["bmc"], args.verify_s)
        link.write_now(want)
        link.start()
        pump = threading.Thread(target=lambda: [link.submit(want)
                                                for _ in iter(lambda: stop.wait(0.1), True)],
                                daemon=True)
        pump.start()
        time.sleep(1.0)                  # sessions and connections settle
        pdu_w, bmc_w, boots = [], [], []
        for _ in range(args.writes):
            pdu_w.append(_ask(proc, f"pdu {rng.integers(2)} {rng.integers(1, OUTLETS + 1)} "
                                    f"2300"))
            bmc_w.append(_ask(proc, f"bmc {SERVERS[rng.integers(len(SERVERS))]} 800"))
        for k in range(args.reboots):
            boots.append(_ask(proc, f"reboot {k % 2}"))
            time.sleep(0.5)              # the link reconnects to the other targets too
        stop.set()
        status = link.status().pdus
        link.close()
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    rows = [_row("foreign write, PDU register (2300 W)", pdu_w, ALLOC_W),
            _row("foreign write, BMC limit (800 W)", bmc_w, ALLOC_W),
            _row("PDU reboot to its defaults (16 x 2300 W)", boots, ALLOC_W)]
    totals = {k: sum(p[k] for p in status)
              for k in ("foreign_values", "corrections", "reboots", "readbacks")}
    print(f"command: .venv/bin/python benchmarks/bench_verification.py --writes {args.writes} "
          f"--reboots {args.reboots} --verify-s {args.verify_s:g} "
          f"--bmc-delay-ms {args.bmc_delay_ms:g}")
    print(f"2 PDUs + 12 BMCs read back every {args.verify_s:g} s, load average "
          f"{os.getloadavg()[0]:.2f}; link counters {json.dumps(totals)}")
    print("| fault | n | p50 ms | p99 ms | max ms | over 1 s | back to the allocation |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fault']} | {r['n']} | {r['p50 ms']:.0f} | {r['p99 ms']:.0f} | "
              f"{r['max ms']:.0f} | {r['over 1 s']} | {r['back to the allocation']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
