"""Benchmark of the actuation path: PowerSamples -> DDS -> pdu_actuator -> Modbus TCP -> PDU.

Two processes on one machine: this one publishes PowerSamples batches (and, in proactive mode,
a PowerForecast before each) and hosts the simulated PDUs (`SimPduServer`, pymodbus, loopback,
in threads); the `pdu_actuator` executable runs in its own process (reactive or proactive
mode) and drives them over Modbus TCP.

Every batch k carries distinct measured values (each component's base + 0.01 W x k, + 2 W on
odd k so that allocations shrink and grow in turn) and its send time (CLOCK_REALTIME) in the
header; batches go out every `--period` s (>= 110 ms, so each one triggers a control step,
the node steps at most every 95 ms). The PDUs' models record the arrival time of each
allocation register write; since each batch gives a distinct allocation, which batch caused
a write is decoded from the values (the table of expected allocations is computed with the
node's own AllocationController and float32 rounding). Latency = the arrival of the last
outlet write that completes batch k's allocation on both PDUs - batch k's send time
("first write": the first outlet written). A batch whose allocation never arrived in full is
counted as not written. The node's own write latency (from its samples callback to the
PDUs' acknowledgement, last 500 writes) is read from its /diagnostics for comparison, and
"to step" is batch send -> the stamp of the PowerAllocation the step published (DDS and the
node's executor; the step hands the allocation to the PDU worker just before).

Usage: .venv/bin/python benchmarks/bench_actuation.py [--batches 1000] [--warmup 50]
       [--period 0.12] [--scenarios reactive-16,reactive-48,proactive-16] [--csv DIR]

The rig (the timed PDU models, the node's parameters, the table of expected allocations and
this process's publishing node) is in `actuation_rig.py` beside this file.
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
import psutil
import rclpy
import yaml
from actuation_rig import NAMESPACE, _base_w, _Bench, _expected, _measured, _params, _TimedModel

from rackpower_nodes.sim.pdu import SimPduServer
from rackpower_nodes.tools.launch_env import executable, isolated_ros_env, stop_process

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = {"reactive-16": ("reactive", 16), "reactive-48": ("reactive", 48),
             "proactive-16": ("proactive", 16)}


def run_scenario(name: str, args, tmp: Path, env: dict) -> dict:
    mode, n = SCENARIOS[name]
    log: list = []
    models = [_TimedModel(log, j, np.full(24, 2300.0), 4600.0) for j in range(2)]
    servers = [SimPduServer("rackpower_sim", m, port=0, unit_id=1).start() for m in models]
    params = _params(mode, n, [s.port for s in servers])
    names = list(params["components"]["names"])
    comp_of = {}                   # (pdu, model index) -> component
    for i, (pdu, outlet) in enumerate(zip(params["components"]["pdu"],
                                          params["components"]["outlet"])):
        comp_of[(params["pdus"]["names"].index(pdu), outlet - 1)] = i
    base = _base_w(params)
    total = args.warmup + args.batches
    expected = _expected(params, base, total)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
    err_path = tmp / f"{name}.err"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [str(executable("pdu_actuator")), "--ros-args", "-r", f"__ns:={NAMESPACE}",
             "--params-file", str(path), "--log-level", "warn"],
            env=env, stdout=err, stderr=subprocess.STDOUT)
    bench = _Bench(names, mode)
    try:
        # the node comes up and writes its first allocation (driven by a steady batch)
        deadline = time.monotonic() + 60.0
        while not bench.written_once.is_set():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pdu_actuator did not come up: "
                                   f"{err_path.read_text()[-2000:]}")
            bench.publish(_measured(base, 0) - 5.0, mode == "proactive")
            time.sleep(args.period)
        time.sleep(1.0)
        start = len(log)
        sent = np.zeros(total, dtype=np.int64)
        ps = psutil.Process(proc.pid)
        cpu0, t0 = None, None
        t_next = time.monotonic()
        for k in range(total):
            if k == args.warmup:
                cpu0, t0 = ps.cpu_times(), time.monotonic()
                procs0, sys0 = _cpu_snapshot(), psutil.cpu_times()
            t_next += args.period
            sent[k] = bench.publish(_measured(base, k), mode == "proactive")
            time.sleep(max(0.0, t_next - time.monotonic()))
        cpu1, t1 = ps.cpu_times(), time.monotonic()
        beside = _beside(procs0, sys0, {os.getpid(), proc.pid}, t1 - t0)
        time.sleep(1.0)                      # the last writes
        writes = log[start:]
        diag_after = time.monotonic()
        bench.diag.clear()
        while len(bench.diag) < 2 and time.monotonic() - diag_after < 5.0:
            time.sleep(0.05)                 # diagnostics published after the run
        diag = dict(bench.diag)
        modes = dict(bench.modes)
        steps = list(bench.steps)
        window = (sent[args.warmup], sent[-1] + 100_000_000)
        off_mode = [r for t, r in bench.off_mode if window[0] <= t <= window[1]]
    finally:
        bench.close()
        code = stop_process(proc, 10.0)
        for s in servers:
            s.stop()
    result = _latencies(writes, comp_of, expected, sent, args.warmup,
                        csv=Path(args.csv) / f"{name}.csv" if args.csv else None)
    result.update(_step_delays(steps, base, sent, args.warmup))
    result.update(
        beside=beside, off_mode=off_mode, name=name, n=n, mode=mode, exit=code, modes=modes,
        cpu=(cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0) * 100,
        traceback="Traceback" in err_path.read_text(),
        node_p50=_diag_value(diag, "write_latency_ms_p50"),
        node_p99=_diag_value(diag, "write_latency_ms_p99"))
    return result


def _latencies(writes, comp_of, expected, sent, warmup, csv=None) -> dict:
    total, n = expected.shape
    lookup = [dict() for _ in range(n)]
    for k in range(total):
        for i in range(n):
            lookup[i].setdefault(float(expected[k, i]), k)
    first = np.full(total, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.zeros(total, dtype=np.int64)
    seen = np.zeros((total, n), bool)
    unmatched = 0
    end = sent[-1] + 190_000_000     # later, the node sees the inputs stop (stale: safe)
    for t, pdu, index, watts in writes:
        if t > end:
            continue
        for j, w in zip(index.tolist(), watts.tolist()):
            i = comp_of.get((pdu, j))
            k = lookup[i].get(w) if i is not None else None
            if k is None:
                unmatched += 1
                continue
            seen[k, i] = True
            first[k] = min(first[k], t)
            last[k] = max(last[k], t)
    need = np.ones((total, n), bool)
    need[1:] = expected[1:] != expected[:-1]       # unchanged outlets are not rewritten
    complete = np.all(seen | ~need, axis=1)[warmup:]
    any_seen = seen.any(axis=1)[warmup:]
    lat = (last[warmup:] - sent[warmup:])[complete] / 1e6
    lat_first = (first[warmup:] - sent[warmup:])[any_seen] / 1e6
    if csv is not None:
        with open(csv, "w") as f:
            f.write("batch,sent_ns,first_ns,last_ns,complete\n")
            for k in range(total):
                f.write(f"{k},{sent[k]},{first[k] if seen[k].any() else ''},"
                        f"{last[k] if seen[k].any() else ''},"
                        f"{int(np.all(seen[k] | ~need[k]))}\n")
    pct = (lambda a, q: float(np.percentile(a, q)) if a.size else float("nan"))
    return {"batches": total - warmup, "complete": int(complete.sum()),
            "partial": int((any_seen & ~complete).sum()), "missing": int((~any_seen).sum()),
            "unmatched": unmatched, "p50": pct(lat, 50), "p90": pct(lat, 90),
            "p99": pct(lat, 99), "max": float(lat.max()) if lat.size else float("nan"),
            "first_p50": pct(lat_first, 50), "first_p99": pct(lat_first, 99)}


def _diag_value(diag: dict, key: str) -> str:
    """A value of the actuator's allocation status (the write latency is link-wide: from a
    batch's callback to its allocation written to every PDU)."""
    values = sorted({d.get(key, "?") for d in diag.values()}) or ["?"]
    return ", ".join(values)


def _cpu_snapshot() -> dict:
    """pid -> (create time, user + system CPU s, command line) of every process."""
    snap = {}
    for p in psutil.process_iter(["cmdline", "create_time", "cpu_times", "name"]):
        ct = p.info["cpu_times"]
        if ct is not None:
            cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])
            snap[p.pid] = (p.info["create_time"], ct.user + ct.system, cmd)
    return snap


def _beside(before: dict, sys0, skip: set[int], wall_s: float) -> str:
    """What else ran during the window: the whole machine's busy CPU and the other processes
    above 5 % of a core (processes started and ended within the window are only in the
    machine total)."""
    sys1 = psutil.cpu_times()
    busy = ((sum(sys1) - sys1.idle - getattr(sys1, "iowait", 0.0))
            - (sum(sys0) - sys0.idle - getattr(sys0, "iowait", 0.0)))
    mine = 0.0
    others = []
    for pid, (created, cpu, cmd) in _cpu_snapshot().items():
        old = before.get(pid)
        used = cpu - old[1] if old is not None and old[0] == created else cpu
        if pid in skip:
            mine += used
        elif used / wall_s > 0.05:
            others.append((used / wall_s * 100, cmd[:70]))
    text = (f"machine {busy / wall_s * 100:.0f} % of one core busy (of "
            f"{psutil.cpu_count() * 100} %), this benchmark's 2 processes "
            f"{mine / wall_s * 100:.0f} %")
    if others:
        text += "; others: " + "; ".join(f"`{c}` {pct:.0f} %"
                                          for pct, c in sorted(others, reverse=True)[:4])
    return text


def _step_delays(steps, base, sent, warmup) -> dict:
    """Batch send -> the node's PowerAllocation stamp (set right after the control step
    handed the allocation to the PDU worker): the DDS + callback share of the latency."""
    total = sent.size
    key = {float(_measured(base, k)[0]): k for k in range(total)}
    delay = np.full(total, np.nan)
    for stamp, m0 in steps:
        k = key.get(m0)
        if k is not None and np.isnan(delay[k]):
            delay[k] = (stamp - sent[k]) / 1e6
    d = delay[warmup:]
    d = d[np.isfinite(d)]
    return {"stepped": int(d.size),
            "step_p50": float(np.percentile(d, 50)) if d.size else float("nan"),
            "step_p99": float(np.percentile(d, 99)) if d.size else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1000, help="measured batches")
    parser.add_argument("--warmup", type=int, default=50, help="batches before measuring")
    parser.add_argument("--period", type=float, default=0.12,
                        help="s between batches (>= 0.11: each batch steps the node)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--csv", help="folder for per-batch times (<scenario>.csv)")
    args = parser.parse_args(argv)
    if args.period < 0.11:
        parser.error("--period must be >= 0.11 s (the node steps at most every 95 ms)")
    names = [s for s in args.scenarios.split(",") if s]
    for s in names:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}: expected one of {', '.join(SCENARIOS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rackpower-bench-") as tmp:
        env = isolated_ros_env(Path(tmp) / "log")
        env["PYTHONPATH"] = ":".join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        with rclpy.init():
            for s in names:
                print(f"running {s}: {args.warmup} + {args.batches} batches every "
                      f"{args.period * 1e3:.0f} ms ...", flush=True)
                rows.append(run_scenario(s, args, Path(tmp), env))
    print(f"\ncommand: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {psutil.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"load average {' '.join(f'{x:.2f}' for x in psutil.getloadavg())}\n")
    header = ("scenario", "batches", "written", "not written (partial)", "lat p50 ms",
              "lat p90 ms", "lat p99 ms", "lat max ms", "to step p50 / p99 ms",
              "first write p50 / p99 ms",
              "node write p50 / p99 ms", "node CPU %")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['mode']} {r['n']} comp / 2 PDUs | {r['batches']} | {r['complete']} "
              f"| {r['batches'] - r['complete']} ({r['partial']}) | {r['p50']:.2f} "
              f"| {r['p90']:.2f} | {r['p99']:.2f} | {r['max']:.2f} "
              f"| {r['step_p50']:.2f} / {r['step_p99']:.2f} "
              f"| {r['first_p50']:.2f} / {r['first_p99']:.2f} | {r['node_p50']} / {r['node_p99']} "
              f"| {r['cpu']:.1f} |")
    print()
    for r in rows:
        print(f"{r['name']}: modes published {r['modes']}, unmatched outlet writes "
              f"{r['unmatched']}, batches that stepped the node {r['stepped']}, "
              f"node exit code {r['exit']}"
              + (", TRACEBACK in the node's log" if r["traceback"] else ""))
        print(f"  beside it: {r['beside']}")
        if r["off_mode"]:
            print(f"  steps not in {r['mode']} mode during the run: {len(r['off_mode'])}, "
                  f"e.g. {r['off_mode'][:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
