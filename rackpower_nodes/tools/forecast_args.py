"""The options of ``rackpower-train`` and ``rackpower-eval``: data, windows and models.

The flags both commands share (:func:`_data_args`, :func:`_model_args`), the data source they
name, read into series by the readers of ``rackpower_nodes.sources`` (bags, BSC and plain CSV)
and ``rackpower_nodes.sim.dataset`` (simulator folders) and cut into windows
(:func:`load_windows`) with each source's defaults (:data:`SPEC_DEFAULTS`, overridden by the
flags or a saved model's spec: :func:`window_spec`), and the forecasters the flags configure
(:func:`make_forecaster`). A problem a person can fix raises :class:`CliError`.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
from pathlib import Path

from rackpower_nodes.core.forecast.baselines import (
    EwmaForecaster, EwmaParams, LightGbmForecaster, LightGbmParams, PersistenceForecaster)
from rackpower_nodes.core.forecast.base import Forecaster
from rackpower_nodes.core.forecast.challengers import ServedForecaster
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows, seen_features
from rackpower_nodes.core.forecast.forecaster import LstmForecaster, LstmParams
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sources.bags import from_bag
from rackpower_nodes.sources.csv_files import from_bsc_csv, from_plain_csv

__all__ = ["MODELS", "SERVED", "SPEC_DEFAULTS", "CliError", "load_series", "load_windows",
           "make_forecaster", "window_spec"]

_log = logging.getLogger("rackpower_forecast")

MODELS = ("lstm", "persistence", "ewma", "lightgbm")
SERVED = "served"       # persistence and --members as challengers (core/forecast/challengers)
# per source: (step_s, history_steps, horizon_steps, coarse, stride). At 0.1 s the 30 s
# statistics (coarse 300) estimate the load level under the few-second noise; on the simulated
# rack they took the 5 s-ahead MAE from 0.876x to 0.861x persistence's, while 50 history steps
# instead of 30 changed nothing (0.851x vs 0.852x) at 2.7x the training time
# (benchmarks/RESULTS.md).
SPEC_DEFAULTS = {"sim": (0.1, 30, 50, (10, 100, 300), 20),
                 "bag": (0.1, 30, 50, (10, 100, 300), 20),
                 "plain": (0.1, 30, 50, (10, 100, 300), 20), "bsc": (2.0, 15, 3, (5, 15), 1)}


class CliError(Exception):
    """A command-line problem a person can fix; printed without a traceback."""


def _data_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", type=Path, help="rackpower-sim fast folder")
    src.add_argument("--bsc", type=Path, help="BSC CSV file or folder of <server>/*.csv")
    src.add_argument("--plain", type=Path, help="plain CSV (time_s,component,power_w,...)")
    src.add_argument("--bag", type=Path, help="rosbag2 folder or file")
    p.add_argument("--namespace", default=None, help="rack namespace inside a bag")
    p.add_argument("--step-s", type=float, default=None, help="model step, s (per source)")
    p.add_argument("--history-steps", type=int, default=None)
    p.add_argument("--horizon-steps", type=int, default=None)
    p.add_argument("--coarse", default=None, help="coarse resolutions in steps, e.g. 10,100")
    p.add_argument("--stride", type=int, default=None, help="steps between windows")
    p.add_argument("--max-windows", type=int, default=300_000,
                   help="cap on windows (random sample; memory ~ 4*history*24 B each)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and training")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch, LightGBM)")
    p.add_argument("--log-level", default="INFO")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LSTM")
    d = LstmParams()
    for flag, attr, typ in [("--hidden", "hidden_size", int), ("--layers", "num_layers", int),
                            ("--dropout", "dropout", float), ("--lr", "lr", float),
                            ("--batch-size", "batch_size", int), ("--epochs", "max_epochs", int),
                            ("--patience", "patience", int),
                            ("--max-train-s", "max_train_s", float),
                            ("--samples-per-epoch", "samples_per_epoch", int)]:
        g.add_argument(flag, dest=attr, type=typ, default=getattr(d, attr),
                       help=f"default {getattr(d, attr)}")
    p.add_argument("--features", default=None,
                   help="comma list of features (fnmatch patterns) the LSTM reads; default: "
                        "'power' for --bsc, all otherwise")
    g.add_argument("--lr-decay", dest="lr_decay", type=float, default=None,
                   help="learning-rate factor after an epoch without progress; default "
                        f"1 (constant) for --bsc, {d.lr_decay} otherwise")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="keep the LSTM's p90/p99 as trained (default: conformal offsets "
                        "fitted on the validation windows)")
    p.add_argument("--ewma-alpha", type=float, default=EwmaParams().alpha)
    p.add_argument("--lgbm-trees", type=int, default=LightGbmParams().n_estimators)
    p.add_argument("--members", default="ewma,lightgbm,lstm",
                   help="--model served: its challengers beside persistence (comma list of "
                        "ewma, lightgbm, lstm; default all three)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _source(args: argparse.Namespace) -> tuple[str, Path]:
    for kind in ("sim", "bsc", "plain", "bag"):
        if getattr(args, kind) is not None:
            return kind, getattr(args, kind)
    raise CliError("no data source: give --sim, --bsc, --plain or --bag")


def window_spec(args: argparse.Namespace, base: dict | None = None):
    """WindowSpec from the source's defaults, a saved model's spec (``base``) and flags."""
    step, hist, hor, coarse, stride = SPEC_DEFAULTS[_source(args)[0]]
    if base:
        step, hist, hor = base["step_s"], base["history_steps"], base["horizon_steps"]
        coarse, stride = tuple(base.get("coarse", coarse)), base.get("stride", stride)
    if args.coarse is not None:
        coarse = tuple(int(k) for k in args.coarse.split(",") if k.strip())
    return WindowSpec(step_s=args.step_s or step, history_steps=args.history_steps or hist,
                      horizon_steps=args.horizon_steps or hor, coarse=coarse,
                      stride=args.stride or stride)


def load_series(args: argparse.Namespace, step_s: float) -> list:
    """ComponentSeries of the chosen source (sources/, sim/dataset.py)."""
    kind, path = _source(args)
    if not path.exists():
        raise CliError(f"--{kind} {path}: no such file or folder")
    if kind == "sim":
        return from_sim(path, step_s=step_s)
    if kind == "plain":
        return from_plain_csv(path, step_s=step_s)
    if kind == "bag":
        return from_bag(path, step_s=step_s, namespace=args.namespace)
    files = [path]
    if path.is_dir():
        files = sorted(path.glob("*/*.csv")) or sorted(path.glob("*.csv"))
    if not files:
        raise CliError(f"--bsc {path}: no CSV files in it or in its subfolders")
    return [s for f in files for s in from_bsc_csv(f, step_s=step_s)]


def load_windows(args: argparse.Namespace, spec) -> tuple:
    """(WindowSet, data_info dict) for the chosen source and spec."""
    kind, path = _source(args)
    series = load_series(args, spec.step_s)
    ws = build_windows(series, spec, max_windows=args.max_windows, seed=args.seed)
    if not len(ws):
        raise CliError(f"--{kind} {path}: no windows (segments shorter than "
                       f"{spec.warmup_steps + spec.horizon_steps} steps?)")
    info = {"source": kind, "path": str(path), "series": len(series),
            "components": sorted(set(ws.component.tolist())), "windows": len(ws),
            "t_first_unix": float(ws.t_unix.min()), "t_last_unix": float(ws.t_unix.max())}
    _log.info("%s %s: %d series, %d windows of %s", kind, path, len(series), len(ws),
              ws.x.shape[1:])
    return ws, info


def _lstm_features(args: argparse.Namespace, names: list[str],
                   span_s: float | None = None) -> tuple[str, ...]:
    """Features the LSTM reads: ``--features`` patterns matched against ``names``.

    Default for other sources: every feature, except the week phase (``dow_*``) when the
    training windows span less than a week (``span_s``, s): it then only tells the training
    days apart and, standardised on them, is far out of range on any other day (trained on
    Monday 24 h of the simulated rack, tested on a Tuesday: 0.994x persistence MAE 5 s
    ahead with it, against 0.847x on another Monday; without it 0.840x on the Tuesday).

    BSC default: the current power only. Each BSC file is one workload with its own max_w,
    run at its own hours, so calendar, spec and coarse columns identify the workload; with
    them the LSTM fits the training workloads and loses to persistence on the held-out one
    (leave-one-workload-out: 1.10x persistence MAE with all features, 1.00x with power*,
    0.96x with power only in an earlier run, 0.980x in the one benchmarks/RESULTS.md
    reports)."""
    text = args.features if args.features is not None else (
        "power" if _source(args)[0] == "bsc" else "")
    if args.features is None and not text and span_s is not None:
        return seen_features(names, span_s)
    pats = [p.strip() for p in text.split(",") if p.strip()]
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in pats)]
    if pats and not chosen:
        raise CliError(f"--features {text!r} matches none of {names}")
    return tuple(chosen)


def _lr_decay(args: argparse.Namespace) -> float:
    """``--lr-decay``, else 1 for BSC and LstmParams' default otherwise. BSC folds hold out a
    whole workload, and the validation windows (later time of the training workloads) cannot
    see that a decayed rate fits the training workloads closer: leave-one-workload-out gave
    1.014x persistence MAE with 0.5, 0.980x with a constant rate."""
    if args.lr_decay is not None:
        return args.lr_decay
    return 1.0 if _source(args)[0] == "bsc" else LstmParams().lr_decay


def make_forecaster(name: str, args: argparse.Namespace, names: list[str],
                    span_s: float | None = None) -> Forecaster:
    """A fresh forecaster ``name`` configured from the flags; ``names``: window features;
    ``span_s``: time the training windows span (s), None if unknown."""
    if name == "lstm":
        keys = ("hidden_size", "num_layers", "dropout", "lr", "batch_size", "max_epochs",
                "patience", "max_train_s", "samples_per_epoch", "calibrate")
        params = LstmParams(seed=args.seed, threads=args.threads,
                            features=_lstm_features(args, names, span_s), lr_decay=_lr_decay(args),
                            **{k: getattr(args, k) for k in keys})
        return LstmForecaster(params, progress=not args.no_progress)
    if name == "persistence":
        return PersistenceForecaster()
    if name == SERVED:
        members = [m.strip() for m in args.members.split(",") if m.strip()]
        bad = [m for m in members if m not in MODELS or m == "persistence"]
        if bad or len(set(members)) != len(members):
            raise CliError(f"--members {args.members!r}: expected distinct names among "
                           f"ewma, lightgbm, lstm (persistence is always one)")
        return ServedForecaster(members={m: make_forecaster(m, args, names, span_s)
                                         for m in ["persistence", *members]})
    if name == "ewma":
        return EwmaForecaster(EwmaParams(alpha=args.ewma_alpha))
    if name == "lightgbm":
        return LightGbmForecaster(LightGbmParams(n_estimators=args.lgbm_trees,
                                                 threads=args.threads, seed=args.seed))
    raise CliError(f"unknown model {name!r}, expected one of {', '.join(MODELS)}, "
                   f"{SERVED} or all")


def _names(text: str) -> list[str]:
    names = list(MODELS) if text == "all" else [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in (*MODELS, SERVED)]
    if bad or not names:
        raise CliError(f"--model {text!r}: unknown {bad}, expected a comma list of "
                       f"{', '.join(MODELS)}, {SERVED} (persistence and --members in one "
                       "served forecaster) or all (the four apart)")
    return names

