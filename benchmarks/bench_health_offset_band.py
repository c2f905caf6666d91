"""How many drawn sensor offsets a reference meter cannot tell from its own drift (issue 14).

The sensor check compares a channel with its PDU outlet meter, and calls an offset only
beyond the meters' stability band (``checks.stability``: 0.2 % of the load, what a class-1
meter's drift can fill). An offset that ends the monitored day inside that band, at the
component's typical load, cannot be told from the meter's own drift there; only hours at a
much lower load (a narrower band) could show it. This draws the evaluation's faults the way
``rackpower-health-eval`` does (``draw_faults`` with ``day_kinds``, onsets 1-8 h, 24 h days,
the classes in turn over the presets) for many seeds, keeps the sensor offsets, and counts
those whose size at the day's end (linear growth) is at most the band times the
component's median draw on the training day (seed 100). No monitor runs: this is about the
faults, not the detector. It is not a hard bound: a GPU server that idles for hours after
the onset narrows its band to ~2 W there.

Usage (about 1 min, three simulated training days):
    nice -n 10 .venv/bin/python benchmarks/bench_health_offset_band.py --days 2000
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.core.health import HealthConfig  # noqa: E402
from rackpower_nodes.tools.health_eval_data import (  # noqa: E402
    day_kinds, draw_faults, sim_frame)

H = 3600.0
PRESETS = ("office", "ai", "mixed")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--days", type=int, default=2000, help="fault days per preset")
    p.add_argument("--seed", type=int, default=500000, help="first fault day's seed")
    p.add_argument("--hours", type=float, default=24.0)
    a = p.parse_args(argv)
    band = HealthConfig().checks.stability
    print(f"command: bench_health_offset_band.py --days {a.days} --seed {a.seed} "
          f"--hours {a.hours:g}; stability band {100 * band:g} % of the load\n")
    print("| preset | component kind | offsets drawn | ending inside the band | share |")
    print("|---|---|---|---|---|")
    total = inside = 0
    for pi, preset in enumerate(PRESETS):
        train, _ = sim_frame(preset, 100, a.hours)
        load = dict(zip(train.names, np.nanmedian(train.board_mean_w, axis=0)))
        kind_of = dict(zip(train.names, train.kinds))
        rows: dict[str, list[int]] = {}
        for day in range(a.days):
            kinds = day_kinds(pi * a.days + day, 3)
            if "sensor_offset" not in kinds:
                continue
            for f in draw_faults(preset, a.seed + day, kinds, (1 * H, 8 * H)):
                if f.kind != "sensor_offset":
                    continue
                grown = 1.0 if f.growth_s <= 0 else min(1.0, (a.hours * H - f.onset_s)
                                                         / f.growth_s)
                hit = abs(f.magnitude) * grown <= band * load[f.component]
                key = "8-GPU server" if f.component.startswith("gpu") else kind_of[f.component]
                row = rows.setdefault(key, [0, 0])
                row[0] += 1
                row[1] += hit
        for key, (n, k) in sorted(rows.items()):
            print(f"| {preset} | {key} | {n} | {k} | {100.0 * k / n:.1f} % |")
            total += n
            inside += k
    print(f"\n{inside} of {total} drawn offsets ({100.0 * inside / max(total, 1):.1f} %) end "
          f"the day inside the band at their component's median draw")
    return 0


if __name__ == "__main__":
    sys.exit(main())
