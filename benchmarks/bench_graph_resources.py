"""CPU and memory of the rack's node graph against the simulator, per node process and total.

    flock /tmp/rackpower-sim.lock nice -n 10 .venv/bin/python benchmarks/bench_graph_resources.py \
        [--composed] [--burn N] [--warmup 40] [--window 60] [--tree PATH] [--model DIR]

Starts the graph on `config/rack.yaml` against `rackpower-sim live` (64 board channels at
1 kHz, 16 components, forecasts at 10 Hz, allocations at 10 Hz): by default with the real
`ros2 launch launch/rack.launch.py use_sim:=true` (each node in its own process, rack_view
included, as the launch file's defaults), with --composed the simulator and the single
process `rackpower_nodes.nodes.composed` (what `rack_composed` runs) with the same parameter
file and the overrides the launch file passes. It waits until every node is in the graph and
the recorder has written samples and allocations, lets it warm up `--warmup` s, then measures
over `--window` s: each process's CPU (user + system time from psutil, over the window, in %
of one core, its child processes' included), RSS (peak of a sample every 2 s) and, at the
end, USS and PSS (psutil.memory_full_info). The simulator is measured too but is not part of
the graph's total.

--burn N starts N busy-loop processes for the window (a CPU burner on each of the machine's
cores with N = its core count) and reports what the graph said meanwhile: the modes and
mode reasons of every power_allocation, each node's /diagnostics levels and last message,
the sensor's frames lost and frame rate, and the predictor's fallback components.

--model DIR serves that model directory (`rackpower-train`'s output, e.g. the demo's
build/demo-model/lstm-*) in the predictor instead of the config's persistence fallback:
torch loaded, the LSTM's inference every cycle.

--tree runs another checkout (e.g. `git worktree add /tmp/before <commit>`) with this venv's
executables (PYTHONPATH), for a before/after table.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test")]        # this checkout's code, not the venv's copy

from graph_watch import GraphReport, start_composed, start_launch  # noqa: E402
from helpers.graph import NODES, GraphWatch  # noqa: E402

RSS_EVERY_S = 2.0
MB = 1024 * 1024


BURNER = [sys.executable, "-c", "while True: pass"]


def _cpu_s(proc: psutil.Process) -> float:
    """CPU time of `proc` and of every child process it started: those still running and
    those it has waited for (a health learner's fit, a retrain job, a model loader)."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system
    return total


def measure(pids: dict[str, int], window_s: float) -> dict[str, dict]:
    """CPU % of one core over `window_s`, peak RSS and final USS/PSS per named pid."""
    procs = {name: psutil.Process(pid) for name, pid in pids.items()}
    cpu0 = {name: _cpu_s(p) for name, p in procs.items()}
    rss = dict.fromkeys(procs, 0)
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < window_s:
        for name, p in procs.items():
            rss[name] = max(rss[name], p.memory_info().rss)
        time.sleep(min(RSS_EVERY_S, max(0.0, window_s - (now - t0))))
    wall = time.monotonic() - t0
    out = {}
    for name, p in procs.items():
        full = p.memory_full_info()
        out[name] = {"cpu": 100.0 * (_cpu_s(p) - cpu0[name]) / wall,
                     "rss": max(rss[name], full.rss) / MB, "uss": full.uss / MB,
                     "pss": getattr(full, "pss", float("nan")) / MB}
    return out


def print_table(rows: dict[str, dict], sim: str) -> None:
    print("| process | CPU % of one core | RSS MB (peak) | USS MB | PSS MB |")
    print("|---|---|---|---|---|")
    for name in sorted(rows, key=lambda n: (n == sim, n)):
        r = rows[name]
        label = f"{name} (simulator, not in the total)" if name == sim else name
        print(f"| {label} | {r['cpu']:.1f} | {r['rss']:.0f} | {r['uss']:.0f} | {r['pss']:.0f} |")
    graph = [r for n, r in rows.items() if n != sim]
    print(f"| **graph total** | **{sum(r['cpu'] for r in graph):.1f}** | "
          f"**{sum(r['rss'] for r in graph):.0f}** | **{sum(r['uss'] for r in graph):.0f}** | "
          f"**{sum(r['pss'] for r in graph):.0f}** |")


def _reason_kind(reason: str) -> str:
    """A mode reason with its numbers left out, so that reasons of one kind count together."""
    return re.sub(r"\d+(\.\d+)?", "#", reason)


def print_report(report: GraphReport) -> None:
    modes = Counter(m for m, _ in report.modes)
    print(f"\npower_allocation over the window: {sum(modes.values())} messages; modes: "
          + (", ".join(f"{m!r} x{n}" for m, n in modes.most_common()) or "none"))
    reasons = Counter(_reason_kind(r) for (_, r) in report.modes if r)
    for reason, n in reasons.most_common(5):
        print(f"- mode reason x{n}: {reason}")
    print("\n| node | statuses | OK | WARN | ERROR | STALE | not OK (last message) | "
          "notable values |")
    print("|---|---|---|---|---|---|---|---|")
    by_node: dict[str, list[str]] = {}
    for name in report.levels:
        by_node.setdefault(name.split(":")[0], []).append(name)
    for node in sorted(by_node):
        names = by_node[node]
        lv = [sum(report.levels[n][k] for n in names) for k in range(4)]
        bad = sorted({f"{n.split(': ', 1)[-1]}: {report.last[n]['message'][:60]}" for n in names
                      if report.worst[n] > 0})
        notable = ", ".join(dict.fromkeys(
            f"{k}={v}" for n in names for k, v in report.last[n]["values"].items()
            if k in report.NOTABLE))
        print(f"| {node} | {len(names)} | {lv[0]} | {lv[1]} | {lv[2]} | {lv[3]} | "
              f"{'; '.join(bad[:4]) + (' ...' if len(bad) > 4 else '')} | {notable} |")
    lost = report.frames_lost_delta()
    if lost is not None:
        frames, lost_n = lost
        share = 100.0 * lost_n / max(1, frames + lost_n)
        print(f"\ncurrent_sensor over the window: {frames} frames read, {lost_n} lost "
              f"({share:.1f} %)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--composed", action="store_true", help="one process for all nodes")
    parser.add_argument("--burn", type=int, default=0, help="busy-loop processes in the window")
    parser.add_argument("--warmup", type=float, default=40.0, help="s after the graph is up")
    parser.add_argument("--window", type=float, default=60.0, help="measuring window, s")
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout to run (default: this)")
    parser.add_argument("--rack", default="rack_bench_res")
    parser.add_argument("--model", default="",
                        help="a model directory for the predictor (model:=; default: none, "
                             "the config's persistence fallback)")
    args = parser.parse_args(argv)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from rackpower_nodes.tools.launch_env import isolated_ros_env

    tree = args.tree.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench-graph-res-"))
    env = isolated_ros_env(tmp / "log")
    env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    with rclpy.init():
        started = (start_composed if args.composed else start_launch)(
            tree, args.rack, env, tmp, str(Path(args.model).resolve()) if args.model else "")
        watch = GraphWatch(args.rack)
        report = GraphReport(watch.node, args.rack)
        burners: list[subprocess.Popen] = []
        stoppers = []
        unended = ""
        try:
            started.wait_until(lambda: watch.up(NODES), 300.0, "graph up")
            executor = SingleThreadedExecutor()
            executor.add_node(watch.node)
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            stoppers.append(lambda: (executor.shutdown(), spinner.join(5.0)))
            time.sleep(args.warmup)
            pids = started.pids()
            # processes of their own (not forked from this one, whose rclpy signal handlers
            # they would inherit), killed with SIGKILL after the window
            burners = [subprocess.Popen(BURNER) for _ in range(args.burn)]
            report.start()
            rows = measure(pids, args.window)
            report.stop()
            load = os.getloadavg()[0]
        finally:
            for b in burners:
                b.kill()
                b.wait()
            for stop in stoppers:
                stop()
            try:
                started.close()
            except AssertionError as exc:     # the graph did not end: the window still counts
                unended = f"did not end by itself, killed: {str(exc).splitlines()[0]}"
                print(exc, file=sys.stderr)
        kind = "composed (one process)" if args.composed else "separate processes (ros2 launch)"
        print(f"\n{kind}, {args.window:g} s window after {args.warmup:g} s warm-up, "
              f"{args.burn} burners, load average {load:.1f}, {os.cpu_count()} cores, "
              f"tree {tree}\n")
        print_table(rows, "rack_sim")
        print_report(report)
        print(f"\nstopped: {unended or started.ending}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
