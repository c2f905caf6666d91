"""Benchmark of the redundant-feed allocation (core/allocation/feeds.py).

1. What the loss rule leaves: two feeds of 30 A x 230 V (6900 W breakers, budgets 5520 W at
   0.8), 24 servers of 1000 W, all asking for their ceiling; the total allocated in normal
   operation and in the contingency, by the share of dual-corded servers (the rest split
   evenly over A and B, single-corded) and the time to cap (the tolerated overload from the
   simulator's trip curve, 30 s thermal constant, magnetic at 10x).
2. Cost of one control step's feed work (`feed_fill` + `contingency_w` for both feeds) by
   the number of components, random demands and priorities (median and p99 over 200 draws).

Usage: .venv/bin/python benchmarks/bench_feeds.py
"""
from __future__ import annotations

import math
import time

import numpy as np

from rackpower_nodes.core.allocation import (
    FeedPlan, contingency_w, feed_fill, feed_load_w, tolerated_multiple)

BREAKER_W = 30.0 * 230.0
N = 24


def _plan(n_dual: int, n: int, cap_time_s: float) -> FeedPlan:
    split = np.zeros((n, 2))
    split[:n_dual] = 0.5
    split[n_dual:, 0] = (np.arange(n - n_dual) % 2 == 0)
    split[n_dual:, 1] = 1.0 - split[n_dual:, 0]
    return FeedPlan(("A", "B"), [BREAKER_W] * 2, [0.8 * BREAKER_W] * 2, split,
                    tolerated_multiple(cap_time_s), cap_time_s)


def capacity_table() -> None:
    print("| dual-corded | time to cap, s | tolerated overload | normal total, W | "
          "survivor at loss, x rating | contingency total, W |")
    print("|---|---|---|---|---|---|")
    floor, ceiling, prio = np.full(N, 100.0), np.full(N, 1000.0), np.arange(N) % 3
    for dual in (N, N // 2, 0):
        for cap_time in (0.5, 2.0, 3.0, 10.0, 30.0, 60.0):
            plan = _plan(dual, N, cap_time)
            alloc = feed_fill(ceiling, floor, ceiling, prio, math.inf, plan)
            worst = max(feed_load_w(plan, alloc, {g}).max() for g in plan.names) / BREAKER_W
            cont = contingency_w(alloc, floor, ceiling, prio, plan)
            low = min(float(c.sum()) for c in cont.values())
            print(f"| {dual}/{N} | {cap_time:g} | {plan.overload_multiple:.2f} | "
                  f"{alloc.sum():.0f} | {worst:.2f} | {low:.0f} |")


def timing_table() -> None:
    rng = np.random.default_rng(100)
    print("| components | feed_fill + contingencies, ms p50 | p99 |")
    print("|---|---|---|")
    for n in (8, 24, 48, 96):
        plan = _plan(n // 2, n, 2.0)
        times = []
        for _ in range(200):
            ceiling = rng.uniform(300.0, 1500.0, n)
            floor = ceiling * 0.2
            demand = rng.uniform(0.0, 1.2, n) * ceiling
            prio = rng.integers(0, 4, n)
            t0 = time.perf_counter()
            alloc = feed_fill(demand, floor, ceiling, prio, math.inf, plan)
            contingency_w(alloc, floor, ceiling, prio, plan)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"| {n} | {np.percentile(times, 50):.2f} | {np.percentile(times, 99):.2f} |")


if __name__ == "__main__":
    capacity_table()
    print()
    timing_table()
