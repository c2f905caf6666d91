"""``rackpower-train`` and ``rackpower-eval``: fit forecasters and compare them with baselines.

    rackpower-train --sim DIR --model all --out models/ [--threads 2 --seed 0 --epochs 40]
    rackpower-train --sim DIR --model served --out models/ [--members ewma,lightgbm,lstm]
    rackpower-eval --sim DIR2 --models-root models/ --plots plots/
    rackpower-eval --bsc ../shared/data/bsc-power --protocol leave-one-workload-out \\
                   --horizons 2,3

Data come from exactly one of ``--sim`` (a ``rackpower-sim fast`` folder), ``--bsc`` (a BSC
CSV or a folder of ``<server>/<workload>.csv``), ``--plain`` (plain CSV, docs/forecast-data.md)
or ``--bag`` (rosbag2), cut into windows by features.build_windows. ``rackpower-train`` holds
out the last ``--val-frac`` of each component's time for early stopping and validation
metrics, and saves each model to ``<out>/<name>-<version>/`` (registry.py); ``--model served``
saves one model, the served forecaster (core/forecast/challengers): persistence and
``--members`` fitted on the same windows, its start per component class chosen on the
held-out slice, what the predictor should serve. With ``--select-risk`` its loss bound's
risk is chosen on the training data first (challengers/risk.py): each group of components
(the part of the name after its last '/', a BSC workload) held out in turn, the served
forecaster fitted on the others and replayed on it with each candidate risk; the choice and
every candidate's record go into model.json's metrics (``risk_selection``).
``rackpower-eval`` either scores saved models (``--models`` / ``--models-root``) on all windows
of the data, or trains and scores the LSTM and every baseline itself under ``--protocol``
(``leave-one-workload-out``: BSC components ``<server>/<workload>``, each workload held out
of training in turn; ``time-split``: the last ``--test-frac`` of each component's time).
A served forecaster is scored as served: every window issued through its live calls in time
order (challengers/replay.py), not by its stateless ``predict``.
Tables (markdown) per horizon step, per component and, for BSC, per server; metrics in W.
The flags, the data loading and the models they configure: forecast_args.py.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from rackpower_nodes.core.forecast.base import ModelLoadError
from rackpower_nodes.core.forecast.challengers import ServedForecaster
from rackpower_nodes.core.forecast.challengers.replay import predict_as_served
from rackpower_nodes.core.forecast.challengers.risk import select_risk
from rackpower_nodes.core.forecast.features import group_of, split_by_time
from rackpower_nodes.core.forecast.metrics import comparison_report, metric_rows
from rackpower_nodes.core.forecast.peak import class_of
from rackpower_nodes.core.forecast.registry import load_model, save_model
from rackpower_nodes.tools.forecast_args import (
    SERVED,
    SPEC_DEFAULTS,
    CliError,
    _data_args,
    _model_args,
    _names,
    load_windows,
    make_forecaster,
    window_spec,
)

__all__ = ["SPEC_DEFAULTS", "eval_main", "load_windows_for_bench", "train_main"]

_log = logging.getLogger("rackpower_forecast")


def _span_s(ws) -> float:
    """Seconds between the first and the last window of a WindowSet (0 when empty)."""
    return float(ws.t_unix.max() - ws.t_unix.min()) if len(ws) else 0.0


def _watts(ws, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = np.asarray(ws.scale_w, np.float64)
    return ws.y * scale[:, None], pred * scale[:, None, None]


def _setup(args: argparse.Namespace) -> None:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch
    torch.set_num_threads(args.threads)


def train_main(argv: Sequence[str] | None = None) -> int:
    """``rackpower-train``: fit models, save them with their validation metrics."""
    parser = argparse.ArgumentParser(prog="rackpower-train", description=__doc__.split("\n")[0])
    _data_args(parser)
    _model_args(parser)
    parser.add_argument("--model", default="lstm", help="comma list of models, or all")
    parser.add_argument("--out", type=Path, default=Path("models"), help="model root folder")
    parser.add_argument("--val-frac", type=float, default=0.15,
                        help="last fraction of each component's time held out for validation")
    parser.add_argument("--select-risk", action="store_true",
                        help="--model served: choose the loss bound's risk by holding out each "
                             "group (the name after its last '/', a BSC workload) in turn "
                             "(one more fit per group)")
    args = parser.parse_args(argv)
    _setup(args)
    try:
        names = _names(args.model)
        if args.select_risk and names != [SERVED]:
            raise CliError(f"--select-risk applies to --model {SERVED} alone (given "
                           f"{args.model!r})")
        ws, info = load_windows(args, window_spec(args))
        train, val = split_by_time(ws, 1.0 - args.val_frac)
        info.update(train_windows=len(train), val_windows=len(val))
        for name in names:
            t0 = time.monotonic()
            selection = _select_risk(args, ws) if args.select_risk else None   # fails fast
            model = _fit(name, args, train, val)
            if selection:
                model.params = replace(model.params, risk=selection["risk"])
            seconds = time.monotonic() - t0
            y_w, p_w = _watts(val, predict_as_served(model, val, class_of))
            rows = metric_rows(y_w, p_w, val.component, model.quantiles, step_s=ws.spec.step_s)
            metrics = {"val": rows[-1], "val_per_step": [r for r in rows if r["scope"] == "step"],
                       "train_seconds": seconds,
                       **({"risk_selection": selection} if selection else {})}
            path = save_model(model, args.out, metrics, info)
            print(f"{name}: saved {path} (val MAE {rows[-1]['mae']:.3f} W, pinball "
                  f"{rows[-1]['pinball']:.3f} W, p90 coverage {rows[-1]['cov_p90']:.3f}, "
                  f"fit {seconds:.1f} s"
                  + (f", risk {selection['risk']:g} chosen over "
                     f"{len(selection['groups'])} held-out groups" if selection else "") + ")")
    except (CliError, ModelLoadError, ValueError) as exc:   # DatasetError is a ValueError
        print(f"rackpower-train: {exc}", file=sys.stderr)
        return 2
    return 0


def _fit(name: str, args, train, val, span_s: float | None = None):
    """Model ``name`` fitted on ``train`` (``val``: early stopping; a served forecaster's start
    per component class, :func:`~rackpower_nodes.core.forecast.peak.class_of`, as served)."""
    model = make_forecaster(name, args, train.feature_names,
                            _span_s(train) if span_s is None else span_s)
    if isinstance(model, ServedForecaster):
        return model.fit(train, val, class_of)
    return model.fit(train, val)


def _select_risk(args, ws) -> dict:
    """The loss bound's risk for a served forecaster trained on ``ws`` (challengers/risk.py),
    each inner fit as rackpower-train's own: the last ``--val-frac`` of its time held out."""
    def fit(windows):
        fit_on, val = split_by_time(windows, 1.0 - args.val_frac)
        return _fit(SERVED, args, fit_on, val)
    selection = select_risk(ws, fit, class_of)
    _log.info("served: risk %g chosen (%s)", selection["risk"], "; ".join(
        f"{c['risk']:g}: mean {c['mean']:.4f}, worst {c['worst']:.4f}"
        for c in selection["candidates"]))
    return selection


def _fit_predict(names: list[str], args, train, test) -> dict[str, np.ndarray]:
    """Fit each model on ``train`` (last 15 % of its time for early stopping), predict test."""
    fit_on, val = split_by_time(train, 0.85)
    out = {}
    for name in names:
        t0 = time.monotonic()
        model = _fit(name, args, fit_on, val, _span_s(train))
        out[name] = predict_as_served(model, test, class_of)
        _log.info("%s: fitted on %d windows in %.1f s", name, len(fit_on),
                  time.monotonic() - t0)
    return out


def _evaluate(args, names: list[str]) -> tuple:
    """(test WindowSet, {model name: (n, horizon, 3) normalised predictions})."""
    dirs = list(args.models or [])
    if args.models_root is not None:
        dirs += _latest_models(args.models_root)
    if dirs:
        models = [load_model(d) for d in dirs]
        ws, _ = load_windows(args, window_spec(args, models[0].spec))
        preds = {}
        for d, m in zip(dirs, models, strict=True):
            if m.feature_names != ws.feature_names:
                raise ModelLoadError(Path(d) / "model.json", "its features differ from the "
                                     f"windows' ({len(m.feature_names)} vs "
                                     f"{len(ws.feature_names)}, or another order)")
            preds[m.name if m.name not in preds else f"{m.name}-{m.version}"] = (
                predict_as_served(m, ws, class_of))
        return ws, preds
    ws, _ = load_windows(args, window_spec(args))
    if args.protocol == "time-split":
        train, test = split_by_time(ws, 1.0 - args.test_frac)
        return test, _fit_predict(names, args, train, test)
    groups = np.array([group_of(c) for c in ws.component], dtype=object)
    if len(set(groups)) < 2:
        raise CliError("leave-one-workload-out needs components named <server>/<workload> "
                       f"with >= 2 workloads; found {sorted(set(groups))}")
    preds = {n: np.zeros((len(ws), ws.y.shape[1], 3), np.float32) for n in names}
    for g in dict.fromkeys(groups):
        held = groups == g
        _log.info("fold %s: %d train, %d test windows", g, int((~held).sum()), int(held.sum()))
        for name, p in _fit_predict(names, args, ws.subset(~held), ws.subset(held)).items():
            preds[name][held] = p
    return ws, preds


def _latest_models(root: Path) -> list[Path]:
    """The newest ``<name>-<version>`` folder of each model name under ``root``."""
    newest: dict[str, Path] = {}
    for d in sorted(p for p in root.glob("*-*")
                    if not p.name.startswith(".") and (p / "model.json").is_file()):
        newest[d.name.split("-", 1)[0]] = d
    if not newest:
        raise CliError(f"--models-root {root}: no model folders (<name>-<version>/model.json)")
    return list(newest.values())


def report(ws, preds: dict[str, np.ndarray], horizons: list[int]) -> str:
    """comparison_report of normalised predictions on a WindowSet, in W."""
    scale = np.asarray(ws.scale_w, np.float64)
    return comparison_report(ws.y * scale[:, None],
                             {n: p * scale[:, None, None] for n, p in preds.items()},
                             ws.last * scale, ws.component, horizons, ws.spec.step_s)


def plot_bands(ws, preds: dict[str, np.ndarray], horizon: int, folder: Path,
               components: int = 4, points: int = 400) -> list[Path]:
    """PNG per component: actual power vs each model's p50 and p50-p90-p99 bands at
    ``horizon`` steps ahead, over the component's first ``points`` windows in time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    comp, files = np.asarray(ws.component).astype(str), []
    for c in sorted(set(comp.tolist()))[:components]:
        idx = np.flatnonzero(comp == c)
        idx = idx[np.argsort(ws.t_unix[idx], kind="stable")][:points]
        t = ws.t_unix[idx] + horizon * ws.spec.step_s - ws.t_unix[idx][0]
        scale = np.asarray(ws.scale_w[idx], np.float64)
        fig, axes = plt.subplots(len(preds), 1, figsize=(11, 2.4 * len(preds)), sharex=True,
                                 squeeze=False)
        for ax, (name, pred) in zip(axes[:, 0], preds.items(), strict=True):
            p = pred[idx, horizon - 1] * scale[:, None]
            ax.fill_between(t, p[:, 0], p[:, 2], color="tab:blue", alpha=0.15, label="p50-p99")
            ax.fill_between(t, p[:, 0], p[:, 1], color="tab:blue", alpha=0.3, label="p50-p90")
            ax.plot(t, p[:, 0], color="tab:blue", lw=1, label="p50")
            ax.plot(t, ws.y[idx, horizon - 1] * scale, color="k", lw=0.8, label="actual")
            ax.set_ylabel(f"{name}\nW")
        axes[0, 0].legend(loc="upper right", fontsize=7, ncol=4)
        axes[0, 0].set_title(f"{c}: {horizon * ws.spec.step_s:g} s ahead")
        axes[-1, 0].set_xlabel("s (windows not always contiguous)")
        path = folder / f"bands_{c.replace('/', '_')}_h{horizon}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        files.append(path)
    return files


def eval_main(argv: Sequence[str] | None = None) -> int:
    """``rackpower-eval``: tables of the LSTM vs every baseline (and plots)."""
    parser = argparse.ArgumentParser(prog="rackpower-eval", description=__doc__.split("\n")[0])
    _data_args(parser)
    _model_args(parser)
    parser.add_argument("--models", type=Path, nargs="*", help="saved model folders to score")
    parser.add_argument("--models-root", type=Path, default=None,
                        help="score the newest folder of each model name under this root")
    parser.add_argument("--protocol", choices=("time-split", "leave-one-workload-out"),
                        default="time-split", help="when no saved models are given")
    parser.add_argument("--model", default="all", help="models the protocol trains")
    parser.add_argument("--test-frac", type=float, default=0.3)
    parser.add_argument("--horizons", default=None, help="1-based steps to report, e.g. 2,3")
    parser.add_argument("--plots", type=Path, default=None, help="folder for PNG plots")
    args = parser.parse_args(argv)
    _setup(args)
    try:
        ws, preds = _evaluate(args, _names(args.model))
        h = ws.y.shape[1]
        horizons = ([int(k) for k in args.horizons.split(",")] if args.horizons
                    else sorted({1, max(h // 2, 1), h}))
        if any(not 1 <= k <= h for k in horizons):
            raise CliError(f"--horizons {args.horizons}: steps must lie in 1..{h}")
        print(f"# rackpower-eval: {len(ws)} test windows, {len(set(ws.component))} components"
              f", models {', '.join(preds)}\n")
        print(report(ws, preds, horizons))
        if args.plots is not None:
            for path in plot_bands(ws, preds, max(horizons), args.plots):
                print(f"plot: {path}")
    except (CliError, ModelLoadError, ValueError) as exc:
        print(f"rackpower-eval: {exc}", file=sys.stderr)
        return 2
    return 0


def load_windows_for_bench(sim_dir: str | Path, threads: int,
                           val_frac: float = 0.15) -> tuple:
    """(train, val) windows of a simulator folder with rackpower-train's defaults."""
    args = argparse.Namespace(sim=Path(sim_dir), bsc=None, plain=None, bag=None, step_s=None,
                              history_steps=None, horizon_steps=None, coarse=None, stride=None,
                              max_windows=300_000, seed=0, threads=threads, namespace=None)
    ws, _ = load_windows(args, window_spec(args))
    return split_by_time(ws, 1.0 - val_frac)
