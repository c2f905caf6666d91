"""The room coordination core's cost per coordinator period: divide, the priority checker and
ShrinkFirst.update, for rooms of 6 to 384 racks.

    nice -n 10 .venv/bin/python benchmarks/bench_room_divide.py [--calls 200]

Rooms: rows of 6 racks (3680 W, guaranteed 2400 W; rows at 0.8 x the sum of their racks,
the room at 0.8 x the sum of its rows), every rack with 4 priority classes whose demands are
drawn anew each call (seed 100), so that every level saturates at times. The racks acknowledge
every grant at once. Median and p99 wall time per call, ms, markdown on stdout. Speed is
measured here only, never asserted in a test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.core.room import (  # noqa: E402
    RackDemand, ShrinkFirst, divide, load_power_tree, priority_order_violations)


def room(n_racks: int):
    rows = []
    for r in range(0, n_racks, 6):
        racks = [{"rack": f"rack_{i:03d}", "rating_w": 3680.0, "guaranteed_w": 2400.0}
                 for i in range(r, min(r + 6, n_racks))]
        rows.append({"name": f"row_{r // 6}", "rating_w": max(0.8 * 3680.0 * len(racks),
                                                              2400.0 * len(racks)),
                     "children": racks})
    total = sum(row["rating_w"] for row in rows)
    top = max(0.8 * total, 2400.0 * n_racks)
    return load_power_tree({"power_tree": {"name": "room", "rating_w": top, "children": rows}})


def demands(tree, rng, acks) -> dict[str, RackDemand]:
    out = {}
    for rack in tree.rack_names:
        floor = rng.uniform(50.0, 250.0, 4)
        want = floor + rng.uniform(0.0, 1400.0, 4)
        seq, budget = acks.get(rack, (0, float("nan")))
        out[rack] = RackDemand(rack, time.time(), 5.0, (3, 2, 1, 0), tuple(floor), tuple(want),
                               3680.0, 2400.0, acked_seq=seq, acked_budget_w=budget,
                               budget_source="coordinator" if seq else "fallback")
    return out


def measure(n_racks: int, calls: int) -> list[float]:
    tree = room(n_racks)
    rng = np.random.default_rng(100)
    sf = ShrinkFirst(tree, lease_s=15.0)
    acks: dict[str, tuple[int, float]] = {}
    times = {"divide": [], "check": [], "update": []}
    for k in range(calls):
        d = demands(tree, rng, acks)
        t0 = time.perf_counter()
        division = divide(tree, d)
        t1 = time.perf_counter()
        bad = priority_order_violations(tree, d, division)
        t2 = time.perf_counter()
        grants = sf.update(division.budget_w, d, 5.0 * k)
        t3 = time.perf_counter()
        assert not bad, bad
        acks = {r: (g.seq, g.budget_w) for r, g in grants.items()}
        times["divide"].append(t1 - t0)
        times["check"].append(t2 - t1)
        times["update"].append(t3 - t2)
    return [1e3 * float(np.quantile(times[key], q)) for key in times for q in (0.5, 0.99)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--racks", default="6,24,96,384")
    args = ap.parse_args()
    print(f"Per call, ms ({args.calls} calls a room; "
          f"`nice -n 10 .venv/bin/python benchmarks/bench_room_divide.py`):\n")
    print("| racks | divide p50 | divide p99 | checker p50 | checker p99 | "
          "ShrinkFirst p50 | ShrinkFirst p99 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.racks.split(",")):
        row = measure(n, args.calls)
        print(f"| {n} | " + " | ".join(f"{v:.2f}" for v in row) + " |")


if __name__ == "__main__":
    main()
