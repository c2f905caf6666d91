"""One fault class on every component of a kind, every day (issue 14).

The evaluation CLI injects three faults a day on components drawn from the whole rack, so a
class lands on the components where it is hardest only a few times per run. This puts one
fault of ``--kind`` a day on each of its targets, sized and timed from the plan's ranges
(``sim.faults.plan.draw_fault`` on ``RANGES[kind]``; onsets 1-8 h), and watches 24 h with the
health model learned on the fault-free training day (seed 100, as ``rackpower-health-eval``):

- ``fan_wear`` (default) on the 8-GPU servers of the ai (4) and mixed (3) racks: 5-25 W,
  growth 4-16 h, linear or exponential;
- ``disk_retries`` on the storage nodes (2 per rack, office, ai and mixed): 0.5-4 retries a
  minute, growth 1-8 h, ejected 1-6 h after;
- ``sensor_offset`` on the 8-GPU servers: 3-25 W of either sign, growth 1-12 h.

With ``--magnitudes`` it measures the detection limit instead: each drawn fault (its onset,
its sign, its seed) is replaced by a *step* of each given size, and counts as found only within
``--within-h`` hours of its onset (sensitivity per size, the same draws for every size).

Per fault: detected before it would stop the component or not, the delay from onset and the
cause named; per day the false alarms on the rack's other components and on the targets
before their onsets.

Usage (about 5 s per simulated day on one core):
    nice -n 10 .venv/bin/python benchmarks/bench_health_targeted.py --seeds 90001-90007
    nice -n 10 .venv/bin/python benchmarks/bench_health_targeted.py --kind disk_retries \
        --presets office,ai,mixed --seeds 120001-120005
    nice -n 10 .venv/bin/python benchmarks/bench_health_targeted.py --kind fan_wear \
        --seeds 140101-140105 --magnitudes 5,7.5,10,15,25 --within-h 4
    (options: [--kind fan_wear|disk_retries|sensor_offset] [--presets ai,mixed]
     [--seeds A-B or A,B,...] [--magnitudes M,M,... [--within-h H]] [--set KEY=VALUE])
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.core.health import HealthConfig, HealthModel, HealthMonitor  # noqa: E402
from rackpower_nodes.sim.faults.plan import draw_fault  # noqa: E402
from rackpower_nodes.sim.faults.spec import FaultSpec  # noqa: E402
from rackpower_nodes.tools.health_eval_data import (  # noqa: E402
    fault_marks, replay, sim_frame)
from rackpower_nodes.tools.health_eval_metrics import score_day  # noqa: E402

H = 3600.0


def seeds_of(text: str) -> list[int]:
    if "-" in text:
        a, b = (int(v) for v in text.split("-"))
        return list(range(a, b + 1))
    return [int(v) for v in text.split(",")]


#: which components each class is put on
TARGETS = {"fan_wear": lambda name, kind: name.startswith("gpu"),
           "disk_retries": lambda name, kind: kind == "storage",
           "sensor_offset": lambda name, kind: name.startswith("gpu")}
#: what a magnitude counts in, per class
UNITS = {"fan_wear": "W", "disk_retries": "per_min", "sensor_offset": "W"}


def drawn_faults(kind: str, targets: list[str], seed: int, preset: str) -> list[FaultSpec]:
    """One fault of ``kind`` per target, drawn by the plan's own draw from ``seed`` and the
    preset (two presets' days of one seed get different faults)."""
    rng = np.random.default_rng([seed, zlib.crc32(preset.encode())])
    return [draw_fault(kind, g, rng, 1 * H, 8 * H) for g in targets]


def as_step(f: FaultSpec, magnitude: float, within_h: float) -> FaultSpec:
    """``f`` as a step of ``magnitude`` (``f``'s sign kept), due ``within_h`` h after onset."""
    return dataclasses.replace(f, magnitude=abs(magnitude) * (-1.0 if f.magnitude < 0 else 1.0),
                               growth="step", growth_s=0.0,
                               failure_s=f.onset_s + within_h * H)


def learned(preset: str, kind: str, cfg: HealthConfig) -> tuple[HealthModel, list[str]]:
    """The model learned on ``preset``'s fault-free training day and ``kind``'s targets."""
    model = HealthModel.fit([sim_frame(preset, 100, 24)[0]], cfg)
    return model, [n for n, k in zip(model.names, model.kinds) if TARGETS[kind](n, k)]


def watch_day(model: HealthModel, cfg: HealthConfig, preset: str, seed: int,
              faults: list[FaultSpec]):
    """A day of ``preset`` (``seed``) with ``faults``, watched by ``model``: the faults'
    outcomes, the false alarms and the day's start (Unix s)."""
    frame, start = sim_frame(preset, seed, 24, faults)
    mon = HealthMonitor(frame.names, frame.kinds, model, cfg)
    marks = fault_marks(replay(mon, frame, 60.0))
    got, wrong = score_day(faults, marks, start, float(frame.t_unix[-1]), preset, seed)
    return got, wrong, start


def limits(a, cfg) -> int:
    """Detection within ``a.within_h`` h of a step of each size in ``a.magnitudes``."""
    sizes = [float(v) for v in a.magnitudes.split(",")]
    found = {m: [] for m in sizes}
    delays = {m: [] for m in sizes}
    false = 0
    for preset in a.presets.split(","):
        model, targets = learned(preset, a.kind, cfg)
        for seed in seeds_of(a.seeds):
            drawn = drawn_faults(a.kind, targets, seed, preset)
            for size in sizes:
                faults = [as_step(f, size, a.within_h) for f in drawn]
                got, wrong, _ = watch_day(model, cfg, preset, seed, faults)
                found[size] += [o.detected for o in got]
                delays[size] += [o.delay_s / 60 for o in got if o.detected]
                false += len(wrong)
    print(f"| {UNITS[a.kind]} (step) | faults | found within {a.within_h:g} h | % "
          "| delay median / p90 (min) |")
    print("|---|---|---|---|---|")
    for size in sizes:
        hits, d = found[size], delays[size]
        timing = (f"{np.median(d):.0f} / {np.percentile(d, 90):.0f}" if d else "-")
        print(f"| {size:g} | {len(hits)} | {sum(hits)} | {100.0 * np.mean(hits):.0f} | "
              f"{timing} |")
    print(f"\nfalse alarms (other components, targets before onset): {false}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kind", default="fan_wear", choices=sorted(TARGETS))
    p.add_argument("--presets", default="ai,mixed")
    p.add_argument("--seeds", default="90001-90007")
    p.add_argument("--magnitudes", default="",
                   help="step sizes to measure the detection limit at (comma separated)")
    p.add_argument("--within-h", type=float, default=4.0,
                   help="with --magnitudes: hours after onset a fault must be found in")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a health setting other than its default (repeatable), to compare")
    a = p.parse_args(argv)
    cfg = HealthConfig.from_mapping({k: float(v) for k, v in
                                     (kv.split("=", 1) for kv in a.set)})
    limit = f" --magnitudes {a.magnitudes} --within-h {a.within_h:g}" if a.magnitudes else ""
    limit += "".join(f" --set {kv}" for kv in a.set)
    print(f"command: bench_health_targeted.py --kind {a.kind} --presets {a.presets} "
          f"--seeds {a.seeds}{limit}\n")
    if a.magnitudes:
        return limits(a, cfg)
    size = UNITS[a.kind]
    print(f"| preset | seed | component | {size} | growth | growth_h | onset_h | fails_after_h "
          "| delay_min | cause |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    found = total = false = 0
    for preset in a.presets.split(","):
        model, targets = learned(preset, a.kind, cfg)
        for seed in seeds_of(a.seeds):
            faults = drawn_faults(a.kind, targets, seed, preset)
            got, wrong, start = watch_day(model, cfg, preset, seed, faults)
            for f, o in zip(faults, got):
                total += 1
                found += o.detected
                delay = f"{o.delay_s / 60:.0f}" if o.detected else "missed"
                print(f"| {preset} | {seed} | {f.component} | {f.magnitude:.1f} | {f.growth} | "
                      f"{f.growth_s / H:.1f} | {f.onset_s / H:.1f} | "
                      f"{(f.failure_s - f.onset_s) / H:.1f} | {delay} | {o.cause} |")
            false += len(wrong)
            for m in wrong:
                print(f"| {preset} | {seed} | {m.component} | false alarm at "
                      f"{(m.t_unix - start) / H:.1f} h | {m.cause} | | | | | |")
    print(f"\ndetected {found} of {total} ({100.0 * found / max(total, 1):.1f} %); "
          f"false alarms {false}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
