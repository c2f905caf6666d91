"""Cost per 10 Hz step of the feed-loss evaluation's parts, on the office rack's 16 components.

    .venv/bin/python benchmarks/bench_feed_loss.py [--steps 600]

`FeedRack.apply` (two feed breakers) runs once per step of `tools/feed_eval.py`, and so does
the controller: the plain one (one rack budget, water-filling) and the feed-aware one (the
feed limits kept by progressive filling, and each feed's contingency computed ahead every
step). The demand is 10 minutes of the office day from 13:00 (seed 100, a tuning seed), the
controller in reactive mode, as `feed_eval` runs it; a simulated day is 864,000 steps.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


from rackpower_nodes.core.allocation import AllocationController
from rackpower_nodes.sim.feeds import FeedRack, load_feeds
from rackpower_nodes.sim.feeds.scenario import feed_plan
from rackpower_nodes.sim.rack_sim import generate, load_config
from rackpower_nodes.tools.evaluate_data import actuator_config

REPO = Path(__file__).resolve().parents[1]


def _per_step(fn, steps: int) -> float:
    began = time.perf_counter()
    for k in range(steps):
        fn(k)
    return (time.perf_counter() - began) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args(argv)
    acfg = actuator_config(REPO / "config" / "rack.yaml", [])
    names = [c.id for c in acfg.components]
    data = generate(13.0 + args.steps / 36000.0 + 0.001, seed=100)
    first = int(13 * 3600 * data.rate_hz)
    demand = data.power_w[first:first + args.steps][:, [data.names.index(n) for n in names]]
    feeds = load_feeds(REPO / "config" / "rack_feeds.yaml", load_config(None)).reordered(names)
    plan = feed_plan(feeds, 3.0)
    rack = FeedRack(feeds)
    t0 = data.start_unix

    def controller(ctrl):
        return lambda k: ctrl.step(t0 + 0.1 * k, demand[k], None)

    rows = [
        ("FeedRack.apply (2 feeds)", _per_step(lambda k: rack.apply(demand[k], 0.1),
                                                args.steps)),
        ("controller step, plain budget", _per_step(controller(AllocationController(
            acfg.components, acfg.policy, "reactive")), args.steps)),
        ("controller step, feed-aware (with contingencies)", _per_step(controller(
            AllocationController(acfg.components, acfg.policy, "reactive", feeds=plan)),
            args.steps)),
    ]
    print(f"command: python benchmarks/bench_feed_loss.py --steps {args.steps}")
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| what | ms per step | a simulated day at 10 Hz, min |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.3f} | {t * 864000 / 60:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
