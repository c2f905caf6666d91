"""Benchmark: fleet training wall time, 1 process vs 2 torchrun ranks (gloo, CPU).

Simulated racks (the shipped rack_sim config, training seeds 100, 101, ...), each written as
its own rosbag2 bag (sim/bag_export, namespace ``/rack_NN``), are trained on by
``rackpower_nodes.tools.fleet_train`` with the retraining job's default window spec:

- ``1 proc``: one plain process, ``--threads`` torch threads (the plain trainer, no DDP),
  and the same with 1 thread;
- ``2 ranks``: ``torchrun --standalone --nproc_per_node 2``, 1 thread per rank, the LSTM's
  ``batch_size`` per rank (the global batch doubles);
- ``2 ranks, same global batch``: the same with ``--global-batch`` = the 1-process batch.

Every run trains a fixed number of epochs (patience larger than the epochs), so wall times
compare like with like. Reported: the command's wall time (interpreter start, bag loading,
training, scoring, saving and checks), the fit's own seconds (model.json), and the held-out
MAE (W, the last ``--holdout-s`` of the same days: not a held-out seed, so a sanity figure
only) beside EWMA and persistence on the same windows. Speed is measured, never asserted.

Usage:
    nice -n 10 .venv/bin/python benchmarks/bench_fleet_train.py [--racks 4 --hours 0.5
        --max-windows 3000 --epochs 3 --threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                       # benchmark this checkout


def make_bags(folder: Path, racks: int, hours: float) -> list[str]:
    from rackpower_nodes.sim.bag_export import write_bag
    from rackpower_nodes.sim.rack_sim import generate

    out = []
    for k in range(racks):
        data = generate(hours, seed=100 + k)
        out.append(str(write_bag(data, folder / f"rack_{k + 1:02d}",
                                 namespace=f"/rack_{k + 1:02d}")))
    return out


def run(label: str, cmd: list[str], out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label}: exited {proc.returncode}\n{proc.stderr[-3000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((Path(report["model_dir"]) / "model.json").read_text())
    m = meta["metrics"]
    return {"label": label, "world": report["world_size"],
            "threads": meta["hyperparameters"]["threads"],
            "batch": meta["hyperparameters"]["batch_size"],
            "global": meta["data_info"]["global_batch"], "wall_s": wall,
            "fit_s": meta["state"]["training"]["seconds"],
            "load_s": max(r["load_s"] for r in meta["data_info"]["per_rank"]),
            "exchange_s": meta["data_info"]["timing_s"]["exchange"],
            "epochs": meta["state"]["training"]["epochs"],
            "windows": meta["data_info"]["trained_windows"],
            "lstm": m["challenger"]["mae_w"], "ewma": m["ewma"]["mae_w"],
            "pers": m["persistence"]["mae_w"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--racks", type=int, default=4)
    ap.add_argument("--hours", type=float, default=0.5, help="simulated hours per rack")
    ap.add_argument("--max-windows", type=int, default=3000, help="windows per rack")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256, help="LSTM batch_size (1 process)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads, 1 process")
    ap.add_argument("--holdout-s", type=float, default=300.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
        tmp = Path(tmp)
        bags = make_bags(tmp / "bags", args.racks, args.hours)
        lstm = json.dumps({"max_epochs": args.epochs, "patience": args.epochs + 1,
                           "batch_size": args.batch})
        common = ["-m", "rackpower_nodes.tools.fleet_train", "--bags", *bags, "--lstm", lstm,
                  "--max-windows", str(args.max_windows), "--holdout-s", str(args.holdout_s),
                  "--seed", "100"]
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2"]
        rows = [
            run("1 proc", [sys.executable, *common, "--threads", str(args.threads),
                           "--out", str(tmp / "one")], tmp / "one"),
            run("1 proc, 1 thread", [sys.executable, *common, "--threads", "1",
                                     "--out", str(tmp / "one_1")], tmp / "one_1"),
            run("2 ranks", [*torchrun, *common, "--threads", "1", "--out", str(tmp / "two")],
                tmp / "two"),
            run("2 ranks, same global batch",
                [*torchrun, *common, "--threads", "1", "--global-batch", str(args.batch),
                 "--out", str(tmp / "two_g")], tmp / "two_g"),
        ]
    print(f"\nfleet training, {args.racks} simulated racks x {args.hours} h (seeds 100-"
          f"{99 + args.racks}), <= {args.max_windows} windows per rack, {args.epochs} epochs, "
          f"{os.cpu_count()} CPUs\n")
    print("| run | ranks | threads/rank | batch/rank (global) | trained windows | epochs "
          "| wall s | load s (slowest rank) | exchange s | fit s | fit s/epoch "
          "| held-out MAE W: LSTM / EWMA / persistence |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['world']} | {r['threads']} | {r['batch']} ({r['global']}) "
              f"| {r['windows']} | {r['epochs']} | {r['wall_s']:.1f} | {r['load_s']:.1f} "
              f"| {r['exchange_s']:.1f} | {r['fit_s']:.1f} | {r['fit_s'] / r['epochs']:.1f} "
              f"| {r['lstm']:.3f} / {r['ewma']:.3f} / {r['pers']:.3f} |")
    print(f"\ncommand: nice -n 10 .venv/bin/python benchmarks/bench_fleet_train.py --racks "
          f"{args.racks} --hours {args.hours} --max-windows {args.max_windows} --epochs "
          f"{args.epochs} --batch {args.batch} --threads {args.threads}")


if __name__ == "__main__":
    main()
