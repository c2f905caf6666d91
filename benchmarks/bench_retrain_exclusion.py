"""Benchmark: does leaving flagged faulty data out of a retrain give a better model?

Four servers of the shipped office rack (config/rack_sim.yaml cut to srv01/04/07/10, 2 Hz,
1 s model steps) run ``--hours`` h (seed ``--seed``, 100-199: training) with faults injected
into what the board records: a sensor offset (+``--offset-w`` W, step) on srv04 from 1 h, a
PSU losing efficiency (+8 %, growing over 1 h) on srv07 from 1.5 h, fan wear (+30 W over 2 h)
on srv10 from 2 h; none is repaired before the run ends. The retrain pipeline (the job process
the retrain_scheduler runs) trains an LSTM four times on it:

- ``clean``: on the same run without the faults (what could be had at best);
- ``unflagged``: on the faulty run, nothing flagged (what retraining did before);
- ``flagged, true onset``: the faults flagged from their true onset, margin 0;
- ``flagged, late``: flagged from onset + ``--delay-s`` (a detector's delay), widened by
  ``--margin-s`` before that, as the retrain_scheduler does (health.margin_s).

Each model is scored on a fault-free held-out run (seed ``--eval-seed``, 1000+: after the
repair; never trained or tuned on), beside persistence: MAE and mean signed error (W) over
all windows and over the three faulted servers.

Usage:
    nice -n 10 .venv/bin/python benchmarks/bench_retrain_exclusion.py [--hours 6]
        [--seed 120] [--eval-seed 1000] [--offset-w 150] [--delay-s 1800] [--margin-s 900]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))                                   # benchmark this checkout

SERVERS = ("srv01", "srv04", "srv07", "srv10")
SPEC = {"step_s": 1.0, "history_steps": 16, "horizon_steps": 10, "coarse": [5], "stride": 2}
LSTM = {"hidden_size": 32, "max_epochs": 6, "batch_size": 256, "patience": 2}


def rack_config() -> dict:
    raw = copy.deepcopy(yaml.safe_load((REPO / "config" / "rack_sim.yaml").read_text()))
    raw["components"] = [c for c in raw["components"] if c["name"] in SERVERS]
    for job in raw.get("schedule", {}).get("jobs", []):
        job["hosts"] = [h for h in job.get("hosts", []) if h in SERVERS]
    raw.setdefault("schedule", {})["jobs"] = [j for j in raw["schedule"].get("jobs", [])
                                              if j["hosts"]]
    return raw


def faults(offset_w: float):
    from rackpower_nodes.sim.faults.spec import FaultSpec

    return (FaultSpec("sensor_offset", "srv04", 3600.0, 0.0, offset_w, growth="step"),
            FaultSpec("psu_efficiency", "srv07", 5400.0, 3600.0, 0.08),
            FaultSpec("fan_wear", "srv10", 7200.0, 7200.0, 30.0))


def recorded(data):
    """The run as the recorder would store it: the board's readings, sensor faults included."""
    return dataclasses.replace(data, power_w=np.asarray(data.board_power_w, np.float32),
                               faults=())


def retrain(root: Path, name: str, folder: Path, flags, margin_s: float, seed: int) -> Path:
    from rackpower_nodes.core import retrain as rt
    from rackpower_nodes.core.model_registry import ModelRegistry

    reg = ModelRegistry(root / name)
    settings = {"bag_folder": "", "metric": "mae", "margin_frac": 0.02, "max_seconds": 1500.0,
                "max_rss_mb": 4000.0,
                "job": {"spec": SPEC, "lstm": LSTM, "threads": 1, "nice": 5,
                        "holdout_s": 600.0, "seed": seed, "exclusion": {"margin_s": margin_s}}}
    pipe = rt.RetrainPipeline(reg, settings)
    pipe.start(sources=[{"kind": "sim", "path": str(folder)}], flagged=flags)
    while (outcome := pipe.poll()) is None:
        time.sleep(0.5)
    if outcome.status == "failed":
        raise SystemExit(f"{name}: retrain failed: {outcome.reason}")
    entry = reg.entry(outcome.version)
    excluded = entry["trained_on"]["excluded"]
    print(f"{name}: {entry['trained_on']['windows']} training windows, "
          f"{excluded['windows']} left out", file=sys.stderr)
    return reg.root / entry["path"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=120)
    p.add_argument("--eval-seed", type=int, default=1000)
    p.add_argument("--offset-w", type=float, default=150.0)
    p.add_argument("--delay-s", type=float, default=1800.0)
    p.add_argument("--margin-s", type=float, default=900.0)
    p.add_argument("--train-seed", type=int, default=0)
    args = p.parse_args(argv)
    if not 100 <= args.seed <= 199 or args.eval_seed < 1000:
        raise SystemExit("--seed must be 100-199 (training), --eval-seed 1000+ (held out)")

    from rackpower_nodes.core import retrain as rt
    from rackpower_nodes.core.forecast.features import WindowSpec, build_windows
    from rackpower_nodes.core.forecast.registry import load_model
    from rackpower_nodes.core.health.types import FlaggedInterval
    from rackpower_nodes.sim.dataset import from_sim
    from rackpower_nodes.sim.rack_sim import generate

    cfg, specs = rack_config(), faults(args.offset_w)
    t0 = time.perf_counter()
    clean = generate(args.hours, seed=args.seed, rate_hz=2, config=cfg)
    faulty = recorded(generate(args.hours, seed=args.seed, rate_hz=2, config=cfg, faults=specs))
    held = generate(args.hours, seed=args.eval_seed, rate_hz=2, config=cfg)
    start = clean.start_unix
    truth = [FlaggedInterval(f.component, start + f.onset_s, float("inf"), f.kind)
             for f in specs]
    late = [dataclasses.replace(f, start_unix=f.start_unix + args.delay_s) for f in truth]
    models = {}
    with tempfile.TemporaryDirectory(prefix="bench_excl_") as tmp:
        root = Path(tmp)
        clean_dir, faulty_dir = clean.save(root / "clean"), faulty.save(root / "faulty")
        runs = (("clean", clean_dir, [], 0.0), ("unflagged", faulty_dir, [], 0.0),
                ("flagged, true onset", faulty_dir, truth, 0.0),
                (f"flagged, late (+{args.delay_s:.0f} s, margin {args.margin_s:.0f} s)",
                 faulty_dir, late, args.margin_s))
        for name, folder, flags, margin in runs:
            path = retrain(root / "reg", name.split(",")[0].replace(" ", "_") + str(len(models)),
                           folder, flags, margin, args.train_seed)
            models[name] = load_model(path)
        spec = WindowSpec(**{k: tuple(v) if k == "coarse" else v for k, v in SPEC.items()})
        test = build_windows(from_sim(held, step_s=1.0), spec)
        _, test = rt.holdout_split(test, 0.5 * args.hours * 3600.0)   # its second half
        y = test.y * test.scale_w[:, None]
        faulted = np.isin(test.component, [f.component for f in specs])
        rows = []
        preds = {k: m.predict(test.x, test.last)[:, :, m.quantiles.index(0.5)
                                                 if 0.5 in m.quantiles else 0]
                 * test.scale_w[:, None] for k, m in models.items()}
        preds["persistence"] = np.repeat((test.last * test.scale_w)[:, None], y.shape[1], 1)
        for name, pred in preds.items():
            err = pred - y
            rows.append((name, np.abs(err).mean(), err.mean(), np.abs(err[faulted]).mean(),
                         err[faulted].mean()))
    print(f"\n{args.hours:g} h training run (seed {args.seed}), faults: "
          + ", ".join(f"{f.kind} on {f.component} from {f.onset_s / 3600:g} h" for f in specs)
          + f"; scored on the second half of a fault-free {args.hours:g} h run (seed "
          f"{args.eval_seed}), {len(test)} windows x {y.shape[1]} steps\n")
    print("| model | MAE all, W | bias all, W | MAE faulted servers, W | "
          "bias faulted servers, W |")
    print("|---|---|---|---|---|")
    for name, mae, bias, fmae, fbias in rows:
        print(f"| {name} | {mae:.2f} | {bias:+.2f} | {fmae:.2f} | {fbias:+.2f} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
