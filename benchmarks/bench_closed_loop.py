"""Closed loop on a held-out simulated day: trade-off curves of proactive (served forecaster),
proactive-baseline (no training), reactive and static, compared at matched stranded power.

    .venv/bin/python benchmarks/bench_closed_loop.py --preset ai --train-hours 6 \
        --train-seed 1 --test-seed 7 --test-hours 1 --members persistence,ewma,lightgbm \
        --out /tmp/cl/ai

1. Simulates ``--train-hours`` of the preset with ``--train-seed`` and trains the served
   forecaster's members on it (windows as ``rackpower-train --sim``: the last 15 % of each
   component's time for early stopping and for the served forecaster's offline start).
   The held-out day (``--test-seed``, never seen in training or tuning) is simulated by
   ``rackpower-evaluate`` itself.
2. Saves the served forecaster and the baseline: persistence, which the forecast service
   calibrates online exactly as it does the served one (the peak over the actuation window:
   the last value plus a conformal quantile of the recent peak changes of the component's
   class; ``core/forecast/adaptive.py``): the no-training baseline.
``--preset bsc``: the office rack whose twelve servers replay the BSC traces (``--bsc``), a
   different workload per server in the held-out run than in training.

3. Runs ``rackpower-evaluate --sweep`` over the held-out hours: every mode at every margin of
   ``--fracs`` x ``--min-ws`` (the same structure for all), the table, the matched-point
   ratios, the shortfall by event class, the JSON and the PNG in ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rackpower_nodes.core.forecast.baselines import PersistenceForecaster  # noqa: E402
from rackpower_nodes.core.forecast.challengers import ServedForecaster  # noqa: E402
from rackpower_nodes.core.forecast.features import (  # noqa: E402
    WindowSpec, build_windows, split_by_time)
from rackpower_nodes.core.forecast.registry import save_model  # noqa: E402
from rackpower_nodes.sim.dataset import from_sim  # noqa: E402
from rackpower_nodes.sim.rack_sim import generate  # noqa: E402
from rackpower_nodes.tools import forecast_args  # noqa: E402
from rackpower_nodes.tools.evaluate_cli import main as evaluate_main  # noqa: E402


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
    began = time.perf_counter()
    data = simulate(args, args.train_hours, args.train_seed, test=False)
    train_dir = args.out / "train"
    data.save(train_dir)
    series = from_sim(data)
    spec = WindowSpec(*forecast_args.SPEC_DEFAULTS["sim"])
    ws = build_windows(series, spec, max_windows=args.max_windows, seed=0)
    fit_on, val = split_by_time(ws, 0.85)
    print(f"# {args.preset}: {args.train_hours:g} h train (seed {args.train_seed}), "
          f"{len(fit_on)} + {len(val)} windows in {time.perf_counter() - began:.0f} s",
          flush=True)
    p = argparse.ArgumentParser()
    forecast_args._data_args(p)
    forecast_args._model_args(p)
    flags = p.parse_args(["--sim", str(train_dir), "--threads", str(args.threads),
                          "--no-progress"])
    span = float(ws.t_unix.max() - ws.t_unix.min())
    members = {}
    for name in args.members.split(","):
        t0 = time.perf_counter()
        members[name] = forecast_args.make_forecaster(name, flags, ws.feature_names, span).fit(
            fit_on, val)
        print(f"  {name}: fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    served = ServedForecaster(members=members).fit(fit_on, val)
    print(f"  served start per class: {served.start}", flush=True)
    models = args.out / "models"
    served_path = save_model(served, models, {"offline": served.offline}, {"preset": args.preset})
    baseline_path = save_model(PersistenceForecaster().fit(fit_on, val), models, {},
                               {"preset": args.preset})
    return Path(served_path), Path(baseline_path)


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
    p.add_argument("--members", default="persistence,ewma,lightgbm")
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
