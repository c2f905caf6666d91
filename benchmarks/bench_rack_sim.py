"""Benchmark of the rack simulator's fast mode: hours of a rack generated and written to disk.

For each scenario it times :func:`rackpower_nodes.sim.rack_sim.generate` (power of every
component at the given rate plus 1 Hz host telemetry) and, separately, SimData.save (the
compressed .npz and JSON sidecar), and checks that a second run with the same seed gives
bit-identical power. Target: 24 h of the 16-component rack at 10 Hz in at most 120 s. It also
times ``--preset-hours`` (2 h) of the ai and mixed presets (GPU servers and the batch
scheduler) at the same rate; target: well under a minute each.

Usage: .venv/bin/python benchmarks/bench_rack_sim.py [--hours 24] [--rate-hz 10] [--seed 1]
       [--preset-hours 2]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.sim.rack_sim import DEFAULT_CONFIG, generate, preset_config


def run(hours: float, rate_hz: int, seed: int, config: Path, repeat_check: bool,
        label: str = "office") -> dict:
    began = time.perf_counter()
    data = generate(hours, seed, rate_hz, config)
    gen_s = time.perf_counter() - began
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        data.save(tmp)
        save_s = time.perf_counter() - began
        size_mb = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 1e6
    same = None
    if repeat_check:
        same = bool(np.array_equal(generate(hours, seed, rate_hz, config).power_w, data.power_w))
    samples = data.power_w.size
    return {"preset": label, "hours": hours, "components": len(data.names), "rate_hz": rate_hz,
            "samples": samples, "gen_s": gen_s, "rate": samples / gen_s, "save_s": save_s,
            "size_mb": size_mb, "same": same, "peak_w": float(data.total_w.max()),
            "budget_w": data.meta["budget_w"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--rate-hz", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--preset-hours", type=float, default=2.0,
                        help="hours of the ai and mixed presets to time (0: skip)")
    parser.add_argument("--no-repeat", action="store_true",
                        help="skip the same-seed repeat run (bit-identity check)")
    args = parser.parse_args(argv)
    scenarios = [(1.0, args.rate_hz), (args.hours, args.rate_hz)]
    rows = [run(h, r, args.seed, args.config, not args.no_repeat and h == args.hours)
            for h, r in scenarios]
    if args.preset_hours > 0:
        rows += [run(args.preset_hours, args.rate_hz, args.seed, preset_config(p),
                     not args.no_repeat, p) for p in ("ai", "mixed")]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, "
          f"{platform.machine()}, seed {args.seed}")
    head = ("| preset | hours simulated | components | rate Hz | samples | wall s (generate) "
            "| samples/s | wall s (save) | files MB | same seed identical | peak W / budget W |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        same = "-" if r["same"] is None else ("yes" if r["same"] else "NO")
        print(f"| {r['preset']} | {r['hours']:g} | {r['components']} | {r['rate_hz']} "
              f"| {r['samples']:,} | {r['gen_s']:.2f} | {r['rate']:,.0f} | {r['save_s']:.2f} "
              f"| {r['size_mb']:.1f} | {same} | {r['peak_w']:.0f} / {r['budget_w']:.0f} |")
    slow = [r for r in rows if r["hours"] >= 24 and r["gen_s"] > 120.0 * r["hours"] / 24]
    slow += [r for r in rows if r["preset"] != "office" and r["gen_s"] > 30.0 * r["hours"] / 2]
    return 1 if slow or any(r["same"] is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
