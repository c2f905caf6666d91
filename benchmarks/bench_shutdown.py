"""How long each process of the graph takes to exit after Ctrl-C under the real `ros2 launch`.

    .venv/bin/python benchmarks/bench_shutdown.py [--runs 5] [--double] [--launch-only]
        [--tree PATH]

Each run launches `launch/rack.launch.py use_sim:=true` (the tree's launch file, config and
code, through PYTHONPATH) in a process group of its own, waits until every node is in the graph
and the recorder has written power_samples and power_allocation (test/helpers/graph.py's
GraphWatch), then sends SIGINT to the group as a terminal's Ctrl-C does (with --double a
second one as soon as the recorder logs that it is shutting down; with --launch-only the
SIGINT goes to `ros2 launch` alone, as `kill -INT` or a service manager sends it, and launch
passes one SIGINT on to each process). Every process's pid is
polled (/proc/<pid>/stat) every 2 ms: its exit time is from the first SIGINT to the moment it
is gone or a zombie. Also counted: exit codes other than 0, launch's SIGTERM/SIGKILL
escalations (after 5 s and 10 s), tracebacks in the output, and exit codes launch lost to its
own waitpid race (reported as 255 after "Unknown child process pid": CPython gh-87744,
Python < 3.13), which are not counted as exits != 0.

--tree runs another checkout (e.g. `git worktree add /tmp/before <commit>`) with this venv's
executables, for a before/after table. Prints a markdown table: p50 and max per process.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test")]        # this checkout's code, not the venv's copy

from rackpower_nodes.tools.launch_env import LaunchedGraph, isolated_ros_env  # noqa: E402
from helpers.graph import NODES, GraphWatch  # noqa: E402

POLL_S = 0.002


def _gone(pid: int) -> bool:
    """The process has exited: no /proc entry, or a zombie its parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def one_run(tree: Path, env: dict, tmp: Path, k: int, double: bool, group: bool) -> dict:
    """One launch, one Ctrl-C (two with `double`; to launch alone unless `group`); exit time
    per process name, in s."""
    rack = f"rack_bench_shutdown_{k}"
    graph = LaunchedGraph([str(tree / "launch" / "rack.launch.py"), "use_sim:=true",
                           f"rack:={rack}", f"data_dir:={tmp / 'data'}",
                           f"config:={tree / 'config' / 'rack.yaml'}"], env,
                          tmp / f"launch-{k}.log")
    watch = GraphWatch(rack)
    try:
        graph.wait_until(lambda: watch.up(NODES), 300.0, "graph up")
        running = {r.name.rsplit("-", 1)[0]: r.pid for r in graph.runs if r.code is None}
        load = os.getloadavg()[0]
        graph.interrupt(group)
        t0, second, exits, seen = graph.interrupted_at[0], not double, {}, 0
        while len(exits) < len(running) and time.monotonic() - t0 < 30.0:
            now = time.monotonic()
            for name, pid in running.items():
                if name not in exits and _gone(pid):
                    exits[name] = now - t0
            if not second:
                new, seen = graph.lines[seen:], len(graph.lines)
                if any("recorder]: shutting down" in line for _, line in new):
                    graph.interrupt(group)
                    second = True
            time.sleep(POLL_S)
        code = graph.wait_ended(30.0)
    finally:
        graph.close()
        watch.node.destroy_node()
    out = graph.output
    return {"exits": exits, "codes": {r.name.rsplit("-", 1)[0]: r.code for r in graph.runs},
            "lost": {r.name.rsplit("-", 1)[0] for r in graph.runs if r.code_lost},
            "launch_code": code, "load": load, "traceback": "Traceback" in out,
            "escalated": "'SIGTERM'" in out or "'SIGKILL'" in out}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--double", action="store_true", help="a second Ctrl-C during shutdown")
    parser.add_argument("--launch-only", action="store_true",
                        help="SIGINT to ros2 launch alone, not to its process group")
    parser.add_argument("--tree", type=Path, default=REPO, help="checkout to run (default: this)")
    args = parser.parse_args(argv)
    import rclpy

    tmp = Path(tempfile.mkdtemp(prefix="bench-shutdown-"))
    env = isolated_ros_env(tmp / "log")
    env["PYTHONPATH"] = str(args.tree.resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    runs = []
    with rclpy.init():
        for k in range(args.runs):
            run = one_run(args.tree.resolve(), env, tmp, k, args.double,
                          not args.launch_only)
            runs.append(run)
            print(f"run {k}: load {run['load']:.1f}, launch exit {run['launch_code']}, "
                  + ", ".join(f"{n} {t:.2f} s" for n, t in sorted(run["exits"].items())),
                  flush=True)
    names = sorted({n for r in runs for n in r["exits"]} | {n for r in runs for n in r["codes"]})
    kind = ("double " if args.double else "") + ("SIGINT to ros2 launch alone"
                                                 if args.launch_only else "Ctrl-C (group)")
    print(f"\n{kind}, {len(runs)} runs ({args.tree}), load average "
          f"{np.mean([r['load'] for r in runs]):.1f} at the SIGINT\n")
    print("| process | p50 s | max s | exits != 0 | codes lost by launch |")
    print("|---|---|---|---|---|")
    for name in names:
        t = np.array([r["exits"][name] for r in runs if name in r["exits"]])
        bad = sum(1 for r in runs if r["codes"].get(name) not in (0, None)
                  and name not in r["lost"])
        lost = sum(1 for r in runs if name in r["lost"])
        p50, mx = (f"{np.percentile(t, 50):.2f}", f"{t.max():.2f}") if t.size else ("-", "-")
        print(f"| {name} | {p50} | {mx} | {bad} of {len(runs)} | {lost} |")
    slowest = [max(r["exits"].values()) for r in runs if r["exits"]]
    print(f"\nall processes gone: p50 {np.percentile(slowest, 50):.2f} s, max "
          f"{max(slowest):.2f} s; runs with a traceback: "
          f"{sum(r['traceback'] for r in runs)}; escalated to SIGTERM/SIGKILL: "
          f"{sum(r['escalated'] for r in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
