"""Benchmark of the forecasters: inference latency for a rack, and training time.

Inference: one ``predict`` call for all components at once (default 48), timed over 1000
calls after 50 warm-up calls, torch limited to one thread (the predictor node's setting):
p50 / p99 / max in ms, for the LSTM and every baseline. The LSTM's bare forward pass is timed
too, and the served forecaster over all four (its online ``forecast`` call, one step per call,
forecasts maturing). Target: LSTM p99 <= 5 ms for 48 components.

Training: the LSTM (and optionally LightGBM) fitted on a window set with the thread limit of
``--threads``: windows, epochs, seconds. The window set is either synthetic (``--windows``;
schedule-driven power plus noise) or built from a simulator folder (``--sim DIR`` written by
``rackpower-sim fast``, through the dataset and feature functions `rackpower-train` uses).
Target: 24 h of 16 components at 100 ms steps in <= 10 min on 2 cores.

Floor (``--floor``): how far below persistence any forecaster can get on the simulated rack.
The simulator is run twice with the same seed, once as configured and once with its fast
noise switched off (workload jitter, power AR(1) and white noise, power spikes: every random
process has its own generator, so the rest of the day is identical). It prints the 5 s-ahead
persistence MAE of each variant and the MAE of oracles that know the noise-free power:
O1 its future change plus the noise persisted, O2 its future value plus the best linear
prediction of the noise from the noise's own past (fitted on the first half of the day,
scored on the second), O3 its value now (no future) plus the same noise prediction.

Usage:
    .venv/bin/python benchmarks/bench_forecast.py --floor [--floor-seed 2 --floor-hours 24]
    .venv/bin/python benchmarks/bench_forecast.py [--components 48] [--calls 1000]
        [--history 30 --features 27 --horizon 50] [--windows 200000 | --sim DIR]
        [--threads 2] [--max-epochs 40 --patience 5] [--lightgbm] [--skip-train]

The defaults are those rackpower-train uses for simulator data (forecast_cli.SPEC_DEFAULTS:
history 30 steps, coarse 10/100/300 steps, so 27 features; horizon 50) and its LSTM defaults.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.core.forecast.baselines import (
    EwmaForecaster, LightGbmForecaster, LightGbmParams, PersistenceForecaster)
from rackpower_nodes.core.forecast.forecaster import (
    Forecaster, LstmForecaster, LstmParams)
from rackpower_nodes.core.forecast.features import WindowSet, WindowSpec
from rackpower_nodes.core.forecast.metrics import format_table




def synthetic_windows(n: int, history: int, features: int, horizon: int,
                      seed: int = 0) -> WindowSet:
    """n windows of a square-wave power schedule with noise; extra features are noisy copies
    of power and a schedule phase. Memory: n * history * features * 4 bytes."""
    rng = np.random.default_rng(seed)
    period = 300
    start = rng.integers(0, 10 * period, n)
    t = start[:, None] + np.arange(history + horizon)[None]
    phase = 2 * np.pi * (t % period) / period
    power = (np.where(np.sin(phase) > 0, 0.8, 0.3) + rng.normal(0, 0.02, t.shape)).astype(
        np.float32)
    x = np.empty((n, history, features), np.float32)
    x[:, :, 0] = power[:, :history]
    if features > 1:
        x[:, :, 1] = np.sin(phase[:, :history])
    for f in range(2, features):
        x[:, :, f] = power[:, :history] + rng.normal(0, 0.1, (n, history)).astype(np.float32)
    names = ["power", "phase"] + [f"f{i}" for i in range(2, features)]
    return WindowSet(x, power[:, history:], np.full(n, 400.0), power[:, history - 1],
                            np.array([f"srv{i % 16:02d}" for i in range(n)]),
                            np.arange(n, dtype=np.float64), names[:features],
                            WindowSpec(0.1, history, horizon, coarse=()))


def time_calls(fn, calls: int, warmup: int = 50) -> np.ndarray:
    """Wall time per call in ms over ``calls`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def bench_inference(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)
    small = synthetic_windows(2000, args.history, args.features, args.horizon, seed=1)
    models: list[Forecaster] = [
        LstmForecaster(LstmParams(max_epochs=1, threads=1, hidden_size=args.hidden,
                                  num_layers=args.layers)),
        PersistenceForecaster(), EwmaForecaster(),
        LightGbmForecaster(LightGbmParams(n_estimators=200, early_stopping=0, threads=1))]
    for m in models:
        m.fit(small)
    # time predict with the calibration offsets a model trained with validation data carries
    models[0].calibration = np.zeros((args.horizon, len(models[0].quantiles)), np.float32)
    torch.set_num_threads(1)
    x, last = small.x[:args.components], small.last[:args.components]
    rows = []
    for m in models:
        call = m.predict
        rows.append(_latency_row(f"{m.name}.predict", time_calls(lambda f=call: f(x, last),
                                                                 args.calls)))
    lstm = models[0]
    xs, base = lstm._scale(x.copy()), torch.from_numpy(last)
    with torch.inference_mode():
        rows.insert(1, _latency_row("lstm forward only", time_calls(
            lambda: lstm.module(xs, base), args.calls)))
    rows.append(_latency_row("served.forecast (online)", time_served(models, x, last,
                                                                     args.calls)))
    return rows


def time_served(models: list[Forecaster], x: np.ndarray, last: np.ndarray, calls: int
                ) -> np.ndarray:
    """ms per ``forecast`` of the served forecaster over ``models`` (what the predictor calls
    each step: every member predicts, the step's values mature earlier forecasts, the online
    selection and bias follow, the served quantiles are recorded), one new step per call, the
    components in four classes (``srv``, ``gpu``, ``tor``, ``stor``), after the horizon's
    worth of warm-up steps so that every call matures a full horizon of forecasts."""
    from rackpower_nodes.core.forecast.challengers import ServedForecaster
    from rackpower_nodes.core.forecast.peak import class_of

    served = ServedForecaster(members={m.name: m for m in models})
    served.adopt_members()
    served.select_start(None)
    n = len(x)
    keys = [f"{('srv', 'srv', 'gpu', 'tor', 'stor')[i % 5]}{i:02d}" for i in range(n)]
    classes = [class_of(k) for k in keys]
    step_s = float(served.spec["step_s"])
    wobble = np.random.default_rng(3).normal(0.0, 0.01, (calls + 2 * served.horizon_steps, n))
    tick = iter(range(len(wobble)))

    def call() -> None:
        k = next(tick)
        served.forecast(k * step_s, keys, x, np.clip(last + wobble[k], 0.0, None), classes)

    return time_calls(call, calls, warmup=2 * served.horizon_steps)


def _latency_row(what: str, ms: np.ndarray) -> dict:
    return {"what": what, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


def bench_training(args: argparse.Namespace) -> list[dict]:
    t0 = time.perf_counter()
    if args.sim:
        from rackpower_nodes.tools.forecast_cli import load_windows_for_bench
        train, val = load_windows_for_bench(args.sim, args.threads)
        print(f"windows from {args.sim} built in {time.perf_counter() - t0:.1f} s\n")
    else:
        train = synthetic_windows(args.windows, args.history, args.features, args.horizon)
        val = synthetic_windows(max(args.windows // 10, 100), args.history, args.features,
                                args.horizon, seed=2)
    rows = []
    params = LstmParams(hidden_size=args.hidden, num_layers=args.layers, threads=args.threads,
                        max_epochs=args.max_epochs, patience=args.patience,
                        batch_size=args.batch_size,
                        samples_per_epoch=args.samples_per_epoch, max_train_s=args.max_train_s)
    models: list[Forecaster] = [LstmForecaster(params)]
    if args.lightgbm:
        models.append(LightGbmForecaster(LightGbmParams(threads=args.threads)))
    for m in models:
        t0 = time.perf_counter()
        m.fit(train, val)
        seconds = time.perf_counter() - t0
        epochs = m.training.get("epochs", 1)
        rows.append({"model": m.name, "windows": len(train.y), "val_windows": len(val.y),
                     "shape": "x".join(map(str, train.x.shape[1:])) + f"->{train.y.shape[1]}",
                     "epochs": epochs, "seconds": seconds, "s_per_epoch": seconds / epochs})
    return rows


def _quiet_config(raw: dict, jitter: bool, power_noise: bool) -> dict:
    """A copy of a simulator config with workload jitter and/or power noise switched off."""
    import copy
    cfg = copy.deepcopy(raw)
    if not jitter:
        for w in cfg["workloads"].values():
            if "jitter" in w:
                w["jitter"]["sigma"] = 0.0
            elif "constant" not in w:
                w["jitter"] = {"sigma": 0.0}
    if not power_noise:
        for d in cfg["dynamics"].values():
            d.update(noise_w=0.0, white_w=0.0, spike_rate_per_h=0.0)
    return cfg


def bench_floor(args: argparse.Namespace, lead_steps: int = 50, stride: int = 20,
                warmup: int = 149) -> list[dict]:
    """Persistence MAE (W) of each noise variant over the whole run, and the oracles' MAE (W)
    and ratio to persistence on its second half, ``lead_steps`` 0.1 s steps ahead."""
    import yaml
    from rackpower_nodes.sim.rack_sim import generate
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "rack_sim.yaml")
                         .read_text())
    runs = {}
    for label, jit, noise in (("as configured", True, True), ("no jitter", False, True),
                              ("no power noise", True, False), ("noise-free", False, False)):
        data = generate(args.floor_hours, seed=args.floor_seed, rate_hz=10,
                        config=_quiet_config(raw, jit, noise))
        runs[label] = data.power_w.astype(np.float64)
    full, clean = runs["as configured"], runs["noise-free"]
    ends = np.arange(warmup - 1, len(full) - 1 - lead_steps, stride)
    rows = [{"what": f"persistence, {label}", "mae_w": float(np.abs(
        p[ends + lead_steps] - p[ends]).mean())} for label, p in runs.items()]
    y, noise = full[ends + lead_steps], full - clean
    o1 = np.abs(y - (full[ends] + clean[ends + lead_steps] - clean[ends]))
    o2, o3 = np.empty_like(o1), np.empty_like(o1)
    half = len(ends) // 2
    for c in range(full.shape[1]):
        sums = np.concatenate([[0.0], np.cumsum(noise[:, c])])
        x = np.column_stack([np.ones(len(ends)), noise[ends, c]] + [
            (sums[ends + 1] - sums[ends + 1 - k]) / k for k in (5, 20, 50, 100)])
        beta = np.linalg.lstsq(x[:half], noise[ends[:half] + lead_steps, c], rcond=None)[0]
        o2[:, c] = np.abs(y[:, c] - clean[ends + lead_steps, c] - x @ beta)
        o3[:, c] = np.abs(y[:, c] - clean[ends, c] - x @ beta)
    pers = np.abs(y - full[ends])[half:].mean()
    rows.append({"what": "persistence, as configured, second half", "mae_w": float(pers),
                 "vs_persistence": 1.0})
    for label, err in (("O1 noise-free future + noise persisted", o1),
                       ("O2 noise-free future + best linear noise", o2),
                       ("O3 noise-free now + best linear noise", o3)):
        rows.append({"what": label, "mae_w": float(err[half:].mean()),
                     "vs_persistence": float(err[half:].mean() / pers)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--components", type=int, default=48)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--history", type=int, default=30, help="history steps")
    parser.add_argument("--features", type=int, default=27)
    parser.add_argument("--horizon", type=int, default=50, help="horizon steps")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--windows", type=int, default=200_000, help="synthetic train windows")
    parser.add_argument("--sim", default=None, help="train on this rackpower-sim fast folder")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--max-epochs", type=int, default=LstmParams().max_epochs)
    parser.add_argument("--patience", type=int, default=LstmParams().patience)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples-per-epoch", type=int, default=0)
    parser.add_argument("--max-train-s", type=float, default=0.0)
    parser.add_argument("--lightgbm", action="store_true", help="also time LightGBM training")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--floor", action="store_true", help="only the oracle floor table")
    parser.add_argument("--floor-seed", type=int, default=2)
    parser.add_argument("--floor-hours", type=float, default=24.0)
    args = parser.parse_args(argv)
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    if args.floor:
        print(f"## Floor: 5 s ahead, simulated rack, seed {args.floor_seed}, "
              f"{args.floor_hours:g} h, 0.1 s steps, windows every 2 s\n")
        print(format_table(bench_floor(args), ["what", "mae_w", "vs_persistence"], "{:.3f}"))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} default threads\n")
    rows = bench_inference(args)
    print(f"## Inference: {args.components} components, history {args.history} x "
          f"{args.features} features, horizon {args.horizon}, hidden {args.hidden}, "
          f"1 thread, {args.calls} calls\n")
    print(format_table(rows, ["what", "p50_ms", "p99_ms", "max_ms"], "{:.3f}") + "\n")
    if not args.skip_train:
        rows = bench_training(args)
        print(f"## Training ({args.threads} threads)\n")
        print(format_table(rows, ["model", "windows", "val_windows", "shape", "epochs",
                                  "seconds", "s_per_epoch"], "{:.1f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
