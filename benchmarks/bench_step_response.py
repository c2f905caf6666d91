"""Step response of the allocation: step sizes x modes x actuation delays.

    .venv/bin/python benchmarks/bench_step_response.py [--config config/rack.yaml] [--json out]

The shipped rack (config/rack.yaml's pdu_actuator section: 16 components, 3680 W budget, the
shipped policy) with every component at 150 W except `srv04`, which steps at t = 20 s
(core/step_response.py: controller -> actuation delay -> simulated PDU that serves
min(demand, allocation in force) -> measured). Each row: the time until srv04's allocation in
force covers its new demand for good (s, and in actuation delays) and the energy its demand
lost above the allocation (J). Proactive runs on the forecaster's no-training fallback.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rackpower_nodes.core.step_response import run_step, step_demand  # noqa: E402
from rackpower_nodes.sim.pdu import PduModel  # noqa: E402
from rackpower_nodes.tools.evaluate_cli import actuator_config  # noqa: E402

STEPS_W = ((60.0, 200.0), (60.0, 400.0), (100.0, 150.0), (150.0, 600.0))
MODES = ("reactive", "proactive")
DELAYS_S = (0.1, 0.5, 1.0, 2.0)
STEPPING = "srv04"
OTHERS_W = 150.0
STEP_AT_S = 20.0
RUN_S = 60.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "config" / "rack.yaml")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    acfg = actuator_config(args.config, args.param)
    comps = acfg.components
    names = [c.id for c in comps]
    i = names.index(STEPPING)
    ceilings = np.array([c.ceiling_w for c in comps])
    rows = []
    began = time.perf_counter()
    print(f"# step response: {STEPPING} of the shipped rack steps at t = {STEP_AT_S:g} s, the "
          f"other {len(comps) - 1} components hold {OTHERS_W:g} W; budget "
          f"{acfg.policy.budget_w:.0f} W; policy margins proactive +{acfg.policy.margin_frac:g} "
          f"(>= {acfg.policy.margin_w:g} W), reactive +{acfg.policy.reactive_margin_frac:g} "
          f"(>= {acfg.policy.reactive_margin_w:g} W)\n")
    print("| step W | mode | delay s | time to cover s | delays to cover | energy lost J |")
    print("|---|---|---|---|---|---|")
    for before, after in STEPS_W:
        demand = step_demand(len(comps), [i], before, after, OTHERS_W, STEP_AT_S, RUN_S)
        for mode in MODES:
            for delay in DELAYS_S:
                res, _ = run_step(mode, comps, acfg.policy, demand, i, STEP_AT_S, delay,
                                  lambda: PduModel(ceilings, breaker_w=acfg.policy.breaker_w))
                rows.append({"before_w": before, "after_w": after, "mode": mode,
                             "delay_s": delay, "time_to_cover_s": res.time_to_cover_s,
                             "delays_to_cover": res.delays_to_cover,
                             "energy_lost_j": res.energy_lost_j})
                print(f"| {before:g} -> {after:g} | {mode} | {delay:g} | "
                      f"{res.time_to_cover_s:.1f} | {res.delays_to_cover:.1f} | "
                      f"{res.energy_lost_j:.0f} |", flush=True)
    print(f"\n{len(rows)} runs in {time.perf_counter() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
