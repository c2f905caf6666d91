"""Closed loop on a held-out simulated day: trade-off curves of proactive (served forecaster),
proactive-baseline (no training), reactive and static, compared at matched stranded power.

    .venv/bin/python benchmarks/bench_closed_loop.py --preset ai --train-hours 6 \
        --train-seed 1 --test-seed 7 --test-hours 1 --out /tmp/cl/ai

1. Simulates ``--train-hours`` of the preset with ``--train-seed`` and trains on it, with
   ``rackpower-train --model served,persistence`` (the product's command, with its default
   members EWMA, LightGBM and the LSTM; ``--members`` and ``--max-windows`` pass through):
   the served forecaster, its start per component class chosen on the last 15 % of each
   component's time, and the baseline, persistence, which the forecast service calibrates
   online exactly as it does the served one (the peak over the actuation window: the last
   value plus a conformal quantile of the recent peak changes of the component's class;
   ``core/forecast/adaptive.py``): the no-training baseline. The held-out day
   (``--test-seed``, never seen in training or tuning) is simulated by
   ``rackpower-evaluate`` itself.
``--preset bsc``: the office rack whose twelve servers replay the BSC traces (``--bsc``), a
   different workload per server in the held-out run than in training.

2. Runs ``rackpower-evaluate --sweep`` over the held-out hours: every mode at every margin of
   ``--fracs`` x ``--min-ws`` (the same structure for all), the table, the matched-point
   ratios, the shortfall by event class, the JSON and the PNG in ``--out``.
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

from rackpower_nodes.sim.rack_sim import generate  # noqa: E402
from rackpower_nodes.tools.evaluate_cli import main as evaluate_main  # noqa: E402
from rackpower_nodes.tools.forecast_cli import train_main  # noqa: E402


def bsc_config(folder: Path, shift: int) -> dict:
    """The office rack with srv01..srv12 replaying BSC traces: server ``k`` replays machine
    ``k mod 3`` running workload ``(k + shift) mod 7`` (machines and workloads sorted by name,
    as the folder holds them); a different ``shift`` gives every server a workload it did not
    replay before."""
    import yaml

    machines = sorted(p for p in folder.iterdir() if p.is_dir())
    workloads = sorted(p.stem for p in machines[0].glob("*.csv"))
    cfg = yaml.safe_load((REPO / "config" / "rack_sim.yaml").read_text())
    servers = [c for c in cfg["components"] if c["kind"] == "server"]
    for k, comp in enumerate(servers):
        comp.pop("workload", None)
        path = machines[k % len(machines)] / f"{workloads[(k + shift) % len(workloads)]}.csv"
        comp["trace"] = {"format": "bsc", "path": str(path.resolve())}
    return cfg


def simulate(args, hours: float, seed: int, test: bool):
    if args.preset == "bsc":
        return generate(hours, seed=seed, config=bsc_config(args.bsc, 3 if test else 0))
    return generate(hours, seed=seed, preset=args.preset)


def train(args) -> tuple[Path, Path]:
    """Simulate the training hours and fit the served forecaster and the baseline with
    ``rackpower-train`` itself (``--model served,persistence``: the same windows, the start per
    component class chosen on the last 15 % of each component's time), so that proactive is
    what the product trains. Returns their model directories."""
    began = time.perf_counter()
    data = simulate(args, args.train_hours, args.train_seed, test=False)
    train_dir = args.out / "train"
    data.save(train_dir)
    print(f"# {args.preset}: {args.train_hours:g} h train (seed {args.train_seed}) simulated in "
          f"{time.perf_counter() - began:.0f} s", flush=True)
    models = args.out / "models"
    before = set(models.iterdir()) if models.is_dir() else set()
    began = time.perf_counter()
    members = ["--members", args.members] if args.members else []
    rc = train_main(["--sim", str(train_dir), "--model", "served,persistence", *members,
                     "--max-windows", str(args.max_windows), "--threads", str(args.threads),
                     "--out", str(models), "--no-progress"])
    if rc != 0:
        raise SystemExit(f"rackpower-train failed (exit {rc})")
    made = sorted(set(models.iterdir()) - before)
    served = [m for m in made if m.name.startswith("served-")]
    baseline = [m for m in made if m.name.startswith("persistence-")]
    if len(served) != 1 or len(baseline) != 1:
        raise SystemExit(f"rackpower-train left {[m.name for m in made]} in {models}")
    start = json.loads((served[0] / "model.json").read_text())["state"]["start"]
    share = {k: f"{np.mean(np.asarray(v) != 0):.0%}" for k, v in start.items()}
    print(f"  trained in {time.perf_counter() - began:.0f} s; the served start's share of "
          f"contexts and steps not persistence, per class: {share}", flush=True)
    return served[0], baseline[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="ai",
                   help="office, ai, mixed, or bsc (the office rack replaying --bsc traces)")
    p.add_argument("--bsc", type=Path, default=REPO.parent / "shared" / "data" / "bsc-power")
    p.add_argument("--train-hours", type=float, default=6.0)
    p.add_argument("--train-seed", type=int, default=1)
    p.add_argument("--test-seed", type=int, default=7)
    p.add_argument("--test-hours", type=float, default=1.0)
    p.add_argument("--from-h", type=float, default=0.0, help="held-out hours start here")
    p.add_argument("--members", default=None,
                   help="the served forecaster's challengers (rackpower-train --members; "
                        "default: its own)")
    p.add_argument("--max-windows", type=int, default=300_000)
    p.add_argument("--threads", type=int, default=1,
                   help="torch and LightGBM threads (LightGBM with 2 was 15x slower than with 1 "
                        "on a loaded 2-core machine)")
    p.add_argument("--fracs", default="0.02,0.05,0.1,0.2,0.4")
    p.add_argument("--min-ws", default="10")
    p.add_argument("--delays", default="1")
    p.add_argument("--models", type=Path, nargs=2, default=None, metavar=("SERVED", "BASE"),
                   help="skip training: these model directories")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    served, baseline = args.models if args.models else train(args)
    print(f"# served {served}, baseline {baseline}", flush=True)
    began = time.perf_counter()
    if args.preset == "bsc":
        held_out = simulate(args, args.test_hours, args.test_seed, test=True)
        held_out.save(args.out / "test")
        day = ["--sim", str(args.out / "test"), "--config", str(REPO / "config" / "rack.yaml")]
    else:
        day = ["--preset", args.preset, "--hours", str(args.test_hours), "--from-h",
               str(args.from_h), "--seed", str(args.test_seed)]
    rc = evaluate_main(["--sweep", *day,
                        "--model", str(served), "--baseline-model", str(baseline),
                        "--delays", args.delays, "--fracs", args.fracs, "--min-ws", args.min_ws,
                        "--json", str(args.out / "sweep.json"),
                        "--plot", str(args.out / "sweep.png"), "--threads", "1", "-v"])
    print(f"\nsweep: {time.perf_counter() - began:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
