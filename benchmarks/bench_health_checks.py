"""Benchmark of the physical checks alone (`PhysicalChecks`, no learned baseline).

Per simulated day (24 h, presets office/ai/mixed in turn by seed) one fault drawn by
`sim.faults.random_faults` (onset 2-18 h, sizes from its RANGES table), fed to the checks as
`sim.faults.health_frame` rows in 60 s chunks (the PDU meter is the reference). A fault is
*detected* when a finding on its component reaches score >= 1 after onset; the *cause* is
the one named then. Sensor faults should be named by these checks; component faults
(psu_efficiency, fan_wear, disk_retries, runaway_process) should never fire them (that is
the sensor-vs-component decision). False alarms: any finding >= 1 on a component without a
fault, counted per rack-week, on the fault-free days and on the other components of the
faulty days.

Usage (training seeds; the held-out run uses seeds from 1000 and was not tuned on):
  nice .venv/bin/python benchmarks/bench_health_checks.py --seeds 100 160
  nice .venv/bin/python benchmarks/bench_health_checks.py --seeds 1000 1060
  (--kinds sensor_offset,sensor_gain to draw only some kinds)
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from rackpower_nodes.core.health import COMPONENT_FAULTS, SENSOR_FAULTS
from rackpower_nodes.core.health.checks import PhysicalChecks
from rackpower_nodes.sim.faults.frames import health_frame
from rackpower_nodes.sim.faults.plan import random_faults
from rackpower_nodes.sim.rack_sim import generate

PRESETS = ("office", "ai", "mixed")
OWN = SENSOR_FAULTS + ("outlet_dropout",)       # the classes these checks name


def run_day(seed: int, kinds, hours: float = 24.0):
    preset = PRESETS[seed % 3]
    faults = random_faults(preset, seed, kinds=kinds) if kinds else []
    fr = health_frame(generate(hours, seed=seed, preset=preset, faults=faults), seed=seed)
    checks = PhysicalChecks(fr.names, fr.kinds)
    first: dict[str, tuple[float, str]] = {}
    t0 = time.perf_counter()
    for i in range(0, len(fr), 60):
        t = float(fr.t_unix[min(i + 60, len(fr)) - 1] - fr.t_unix[0])
        for f in checks.update(fr.rows(i, i + 60)):
            if f is not None and f.score >= 1.0:
                first.setdefault(f.component, (t, f.cause))
    return preset, faults, first, time.perf_counter() - t0, len(fr.names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs=2, default=(100, 160), metavar=("FROM", "TO"))
    ap.add_argument("--clean-every", type=int, default=4,
                    help="every n-th seed is also run fault-free (false alarms)")
    ap.add_argument("--kinds", default=",".join(OWN + COMPONENT_FAULTS[:-1]),
                    help="comma-separated fault kinds to draw from (default: all)")
    args = ap.parse_args()
    rows: dict[str, list] = {}
    false_alarms, comp_days, secs = 0, 0.0, []
    for seed in range(*args.seeds):
        preset, faults, first, dt, m = run_day(seed, tuple(args.kinds.split(",")))
        secs.append(dt)
        spec = faults[0]
        hit = first.get(spec.component)
        rows.setdefault(spec.kind, []).append((hit[0] - spec.onset_s, hit[1]) if hit and
                                              hit[0] >= spec.onset_s else None)
        false_alarms += sum(1 for c in first if c != spec.component)
        comp_days += (m - 1) / m
        if seed % args.clean_every == 0:
            _, _, first, dt, m = run_day(seed, ())
            false_alarms += len(first)
            comp_days += 1.0
            secs.append(dt)
    print(f"seeds {args.seeds[0]}-{args.seeds[1] - 1}, one fault per 24 h day, checks fed in "
          f"60 s chunks ({np.mean(secs):.2f} s per rack-day on this machine)\n")
    print("| fault | n | fired | median delay h | p90 delay h | cause right | "
          "sensor vs component right |")
    print("|---|---|---|---|---|---|---|")
    for kind in OWN + COMPONENT_FAULTS[:-1]:
        got = rows.get(kind, [])
        if not got:
            continue
        fired = [g for g in got if g is not None]
        delays = np.array([g[0] for g in fired]) / 3600.0
        right = sum(1 for g in fired if g[1] == kind)
        if kind in COMPONENT_FAULTS and kind != "outlet_dropout":
            split = sum(1 for g in got if g is None or g[1] not in SENSOR_FAULTS)
        else:
            split = sum(1 for g in fired if (g[1] in SENSOR_FAULTS) == (kind in SENSOR_FAULTS))
        med = f"{np.median(delays):.2f}" if len(delays) else "-"
        p90 = f"{np.percentile(delays, 90):.2f}" if len(delays) else "-"
        print(f"| {kind} | {len(got)} | {len(fired)} | {med} | {p90} | {right}/{len(fired)} "
              f"| {split}/{len(got)} |")
    weeks = comp_days / 7.0
    print(f"\nfalse alarms: {false_alarms} in {comp_days:.1f} component-days "
          f"({false_alarms / weeks * 16 if weeks else 0:.2f} per rack-week of 16 components)")


if __name__ == "__main__":
    main()
