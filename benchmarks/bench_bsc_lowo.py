"""The served forecaster against its challengers on the BSC traces (issue 13, item 4).

For each server of ``--bsc`` (folders ``<server>/<workload>.csv``) and each of its workloads
(a *fold*), the candidates (persistence, EWMA, LightGBM with a quantile loss, the LSTM with
rackpower-train's BSC defaults) are trained on the server's other workloads, the last 15 % of
each training workload's time held out for early stopping, calibration and the served
forecaster's offline start (``leave-one-workload-out``). Separately (``unseen server``), they
are trained on every workload of the other servers and tested on each workload of this one.

The test windows are replayed in time order through :class:`ServedForecaster`'s live calls as
in service (``challengers/replay.py``: each step, the values measured then mature earlier
forecasts, then the served quantiles are issued), so its choice and its bias correction only
ever use the past. Reported per fold at 4 s and 6 s
(horizon steps 2 and 3 of 2 s): MAE / persistence MAE of every candidate, of the served
forecaster (mean of 4 s and 6 s, and each apart) and of the same served forecaster without its
loss bound (``unbounded``), with a guard whose standard error ignores the correlation of
nearby differences (``lags0``: ``guard_lags`` 0) and with a guard that asks no significance
(``guard_z0``), all replayed from the same members, persistence's MAE in W (the
no-training baseline's point forecast is persistence's, so its ratio is 1 by definition), the
median signed error (forecast - actual, W) of the LSTM and of the served forecaster, and the
member served most. The selection settings are ServedParams' defaults, fixed a priori (never
tuned on these traces); ``--risks`` replays the same members with other loss-bound risks.
``--select-risk`` adds ``selected``: the same members with the risk rackpower-train
``--select-risk`` would choose on the fold's training workloads alone (challengers/risk.py:
each training workload held out in turn, the served forecaster refitted on the others and
replayed on it with each candidate; six more fits per fold), and the risk it chose.

Usage:
    nice -n 10 .venv/bin/python benchmarks/bench_bsc_lowo.py --bsc ../shared/data/bsc-power
        [--epochs 40] [--threads 2] [--servers A,B] [--workloads w1,w2] [--no-unseen]
        [--risks 0,0.001,0.003,0.03] [--select-risk]
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.core.forecast.challengers import ServedForecaster, ServedParams
from rackpower_nodes.core.forecast.challengers.replay import replay as replay_as_served
from rackpower_nodes.core.forecast.challengers.risk import RISKS, select_risk
from rackpower_nodes.core.forecast.features import (
    WindowSpec, build_windows, group_of, split_by_time)
from rackpower_nodes.core.forecast.metrics import format_table
from rackpower_nodes.sources.csv_files import from_bsc_csv
from rackpower_nodes.tools.forecast_args import (
    SPEC_DEFAULTS, _data_args, _model_args, make_forecaster)

MEMBERS = ("persistence", "ewma", "lightgbm", "lstm")
SERVED = ("served", "lags0", "guard_z0", "unbounded")   # configured; guard_lags 0; guard_z 0;
#                                                          no loss bound
HORIZONS = (2, 3)                  # steps of 2 s: 4 s and 6 s ahead
BLOCK = 60                         # bootstrap block: 60 windows, 2 minutes at a 2 s stride
DRAWS = 2000                       # bootstrap resamples per fold


def ratio_interval(served_abs: np.ndarray, pers_abs: np.ndarray, seed: int = 0
                   ) -> tuple[float, float]:
    """90 % moving-block bootstrap interval of ``sum(served_abs) / sum(pers_abs)`` over
    windows in time order (blocks of :data:`BLOCK` windows keep the errors' correlation):
    how far a fold's ratio could move by chance alone at that length."""
    n = len(served_abs)
    block = min(BLOCK, n)
    starts = np.random.default_rng(seed).integers(0, n - block + 1,
                                                  size=(DRAWS, -(-n // block)))
    idx = (starts[..., None] + np.arange(block)).reshape(DRAWS, -1)[:, :n]
    ratios = served_abs[idx].sum(axis=1) / np.maximum(pers_abs[idx].sum(axis=1), 1e-12)
    lo, hi = np.quantile(ratios, [0.05, 0.95])
    return float(lo), float(hi)


def server_of(component: str) -> str:
    return component.rsplit("/", 1)[0]


def cli_args(bsc: Path, epochs: int, threads: int) -> argparse.Namespace:
    """rackpower-eval's flags for ``--bsc`` (its defaults, ``--epochs`` and ``--threads``)."""
    parser = argparse.ArgumentParser()
    _data_args(parser)
    _model_args(parser)
    return parser.parse_args(["--bsc", str(bsc), "--epochs", str(epochs), "--threads",
                              str(threads), "--no-progress"])


def fit_served(args, train) -> tuple[ServedForecaster, float]:
    """The four candidates fitted on ``train`` (its last 15 % of time held out), and the
    served forecaster over them with its start chosen on that held-out slice per server."""
    t0 = time.monotonic()
    fit_on, val = split_by_time(train, 0.85)
    span = float(fit_on.t_unix.max() - fit_on.t_unix.min())
    members = {}
    for name in MEMBERS:
        model = make_forecaster(name, args, fit_on.feature_names, span)
        if name == "lightgbm":          # one thread: on a loaded machine two took 16x longer
            model.params.threads = 1
        members[name] = model.fit(fit_on, val)
    served = ServedForecaster(ServedParams(), members)
    served.adopt_members()
    served.select_start(val, server_of)
    return served, time.monotonic() - t0


def replay(served: ServedForecaster, test, raw: np.ndarray
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every member's and the served forecaster's p50 (n, H) normalised, the served one
    through its live calls in time order as in service (``challengers/replay.py``, what
    rackpower-eval and the retraining judge use), each server a class, from the members'
    quantiles ``raw`` (``member_quantiles``); and (n, H) the member served at each window."""
    out, variants = replay_as_served(served, test, server_of, raw)
    preds = {name: raw[:, c, :, 0] for c, name in enumerate(served.members)}
    preds["served"] = out[..., 0].astype(np.float64)
    return preds, variants // 2


def replay_all(served: ServedForecaster, test, risks: list[float],
               selected: float | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`replay` as configured, plus the served p50 without the loss bound
    (``unbounded``), with the plain standard error (``lags0``), with a guard that needs no
    significance (``guard_z0``: the lead alone), with each of ``risks`` (``risk=<r>``) and
    with the ``selected`` risk (``selected``, when given), from the same members."""
    raw = served.member_quantiles(test.x, test.last)     # the same for every replay below
    preds, used = replay(served, test, raw)
    params = served.params
    for name, change in [("unbounded", {"loss_bound": False}),
                         ("lags0", {"guard_lags": 0}),
                         ("guard_z0", {"guard_z": 0.0}),
                         *((f"risk={r:g}", {"risk": r}) for r in risks),
                         *([("selected", {"risk": selected})] if selected is not None
                           else [])]:
        served.params = ServedParams(**{**asdict(params), **change})
        preds[name] = replay(served, test, raw)[0]["served"]
    served.params = params
    served.reset_online()
    return preds, used


def fold_row(setting: str, server: str, workload: str, test, preds, used) -> dict:
    """One table row: ratios to persistence at 4 s and 6 s (mean), biases, the member served
    most (share of windows and steps)."""
    scale = np.asarray(test.scale_w, np.float64)[:, None]
    idx = np.asarray(HORIZONS) - 1
    y = (test.y * scale)[:, idx]
    err = {n: (p * scale)[:, idx] - y for n, p in preds.items()}
    pers = np.abs(err["persistence"]).mean(axis=0)                   # per horizon
    row = {"setting": setting, "server": server, "fold": workload, "windows": len(test),
           "persistence_mae_w": float(pers.mean())}
    ratio = {n: np.abs(e).mean(axis=0) / np.maximum(pers, 1e-12) for n, e in err.items()}
    row.update({n: float(r.mean()) for n, r in ratio.items()})
    row.update({f"served_{2 * h}s": float(r) for h, r in zip(HORIZONS, ratio["served"],
                                                             strict=True)})
    row["worst_h"] = {n: float(r.max()) for n, r in ratio.items()}   # worse of 4 s and 6 s
    order = np.argsort(test.t_unix, kind="stable")
    worse = int(np.argmax(ratio["served"]))
    row["ci90_lo"], row["ci90_hi"] = ratio_interval(np.abs(err["served"][order, worse]),
                                                    np.abs(err["persistence"][order, worse]))
    row["lstm_bias_w"] = float(np.median(err["lstm"]))
    row["served_bias_w"] = float(np.median(err["served"]))
    if "selected" in err:
        row["selected_bias_w"] = float(np.median(err["selected"]))
        row["selected_worst"] = row["worst_h"]["selected"]          # worse of 4 s and 6 s
    counts = np.bincount(used[:, idx].ravel(), minlength=len(MEMBERS))
    top = int(np.argmax(counts))
    row["served_most"] = f"{MEMBERS[top]} {counts[top] / counts.sum():.0%}"
    return row


def load(bsc: Path, servers: list[str] | None, spec) -> dict[str, list]:
    """ComponentSeries per server folder."""
    found = {}
    for folder in sorted(p for p in bsc.iterdir() if p.is_dir()):
        if servers and folder.name not in servers:
            continue
        found[folder.name] = [s for f in sorted(folder.glob("*.csv"))
                              for s in from_bsc_csv(f, step_s=spec.step_s)]
    if not found:
        raise SystemExit(f"--bsc {bsc}: no server folders with CSV files")
    return found


def summary(rows: list[dict], served: tuple[str, ...] = SERVED) -> list[dict]:
    """Per setting and server: mean ratios over folds of the members and of ``served``, the
    best simple baseline's, and the Done-when checks (served <= 1.0x persistence on every
    fold, <= the best simple mean, |median bias| <= 2 W on every fold); with ``selected``
    among ``served`` (and in every row), ``met_selected``: the same three checks on it."""
    out = []
    for key in dict.fromkeys((r["setting"], r["server"]) for r in rows):
        fold = [r for r in rows if (r["setting"], r["server"]) == key]
        mean = {n: float(np.mean([r[n] for r in fold])) if all(n in r for r in fold)
                else float("nan") for n in (*MEMBERS, *served)}
        simple = min(mean["persistence"], mean["ewma"], mean["lightgbm"])
        worst = max(r["worst_h"]["served"] for r in fold)
        bias_ok = max(abs(r["served_bias_w"]) for r in fold) <= 2.0
        row = {"setting": key[0], "server": key[1], "folds": len(fold),
               **{n: mean[n] for n in (*MEMBERS, *served)},
               "best_simple": simple,
               "worst_fold_served": max(r["served"] for r in fold),
               "worst_fold_4s_6s": worst,
               "max_abs_bias_w": max(abs(r["served_bias_w"]) for r in fold),
               "sig_above_1": sum(r["ci90_lo"] > 1.0 for r in fold),
               "sig_below_1": sum(r["ci90_hi"] < 1.0 for r in fold),
               "met": "yes" if (worst <= 1.0 and mean["served"] <= simple + 1e-12
                                and bias_ok) else "no"}
        if "selected" in served and all("selected" in r for r in fold):
            worst_sel = max(r["worst_h"]["selected"] for r in fold)
            row["worst_selected"] = worst_sel
            bias_sel = max(abs(r["selected_bias_w"]) for r in fold)
            row["max_abs_bias_selected_w"] = bias_sel
            row["met_selected"] = "yes" if (worst_sel <= 1.0 and bias_sel <= 2.0
                                            and mean["selected"] <= simple + 1e-12) else "no"
        out.append(row)
    return out


def risk_sweep(rows: list[dict], risks: list[float]) -> list[dict]:
    """Per setting, server and risk (the configured one, each of ``risks``, and no bound):
    mean ratio over folds and the worst fold at 4 s or 6 s."""
    out = []
    for key in dict.fromkeys((r["setting"], r["server"]) for r in rows):
        fold = [r for r in rows if (r["setting"], r["server"]) == key]
        for label, name in [(f"{ServedParams().risk:g} (default)", "served"),
                            *((f"{r:g}", f"risk={r:g}") for r in risks),
                            (f"{ServedParams().risk:g}, guard_lags 0", "lags0"),
                            (f"{ServedParams().risk:g}, guard_z 0", "guard_z0"),
                            ("no bound", "unbounded")]:
            out.append({"setting": key[0], "server": key[1], "risk": label,
                        "mean": float(np.mean([r[name] for r in fold])),
                        "worst_fold_4s_6s": max(r["worst_h"][name] for r in fold),
                        "folds_above_1": sum(r["worst_h"][name] > 1.0 for r in fold)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bsc", type=Path, default=Path("../shared/data/bsc-power"))
    p.add_argument("--epochs", type=int, default=40, help="LSTM max epochs (default 40)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (LightGBM: 1)")
    p.add_argument("--servers", default=None, help="comma list of server folders")
    p.add_argument("--workloads", default=None, help="comma list of held-out workloads")
    p.add_argument("--no-unseen", action="store_true", help="skip the unseen-server case")
    p.add_argument("--risks", default="", help="comma list of ServedParams.risk values to "
                   "replay as well (same members), e.g. 0,0.001,0.003,0.03")
    p.add_argument("--select-risk", action="store_true", help="leave one workload out: add "
                   "the risk chosen on each fold's training workloads (challengers/risk.py)")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    args = cli_args(a.bsc, a.epochs, a.threads)
    risks = [float(r) for r in a.risks.split(",") if r.strip()]
    step, hist, hor, coarse, stride = SPEC_DEFAULTS["bsc"]
    spec = WindowSpec(step_s=step, history_steps=hist, horizon_steps=hor, coarse=coarse,
                      stride=stride)
    series = load(a.bsc, a.servers.split(",") if a.servers else None, spec)
    wanted = set(a.workloads.split(",")) if a.workloads else None
    windows = {srv: build_windows(s, spec) for srv, s in series.items()}
    rows, t_start = [], time.monotonic()
    for srv, ws in windows.items():
        groups = np.array([group_of(c) for c in ws.component], dtype=object)
        for g in dict.fromkeys(groups):
            if wanted and g not in wanted:
                continue
            train = ws.subset(groups != g)
            served, fit_s = fit_served(args, train)
            chosen = None
            if a.select_risk:
                chosen = select_risk(train, lambda tr: fit_served(args, tr)[0], server_of,
                                     RISKS)
            test = ws.subset(groups == g)
            rows.append(fold_row("leave-one-workload-out", srv, g, test,
                                 *replay_all(served, test, risks,
                                             chosen and chosen["risk"])))
            if chosen:
                rows[-1]["risk_chosen"] = chosen["risk"]
                rows[-1]["inner_lost"] = ";".join(
                    f"{c['risk']:g}:{c['mean']:.4f}/{c['worst']:.4f}:"
                    f"{'+'.join(c['groups_lost']) or '-'}"
                    for c in chosen["candidates"])
            print(f"[{time.monotonic() - t_start:6.0f} s] {srv}/{g}: fit {fit_s:.0f} s, served "
                  f"{rows[-1]['served']:.3f}x"
                  + (f", risk {chosen['risk']:g}: {rows[-1]['selected']:.3f}x" if chosen
                     else ""), file=sys.stderr, flush=True)
        if a.no_unseen or len(windows) < 2:
            continue
        train = build_windows([x for s, ss in series.items() if s != srv for x in ss], spec)
        served, fit_s = fit_served(args, train)
        preds, used = replay_all(served, ws, risks)
        for g in dict.fromkeys(groups):
            if wanted and g not in wanted:
                continue
            m = groups == g
            rows.append(fold_row("unseen server", srv, g, ws.subset(m),
                                 {n: v[m] for n, v in preds.items()}, used[m]))
        print(f"[{time.monotonic() - t_start:6.0f} s] unseen {srv}: fit {fit_s:.0f} s",
              file=sys.stderr, flush=True)
    sel = ("selected",) if a.select_risk else ()
    cols = ["setting", "server", "fold", "windows", "persistence_mae_w", *MEMBERS, *SERVED,
            *sel, "served_4s", "served_6s", "ci90_lo", "ci90_hi", "lstm_bias_w",
            "served_bias_w", "served_most",
            *(("selected_worst", "selected_bias_w", "risk_chosen", "inner_lost") if sel
              else ())]
    print("```sh\n" + shlex.join(["nice", "-n", "10", ".venv/bin/python",
                                  "benchmarks/bench_bsc_lowo.py", *(argv or sys.argv[1:])])
          + "\n```\n")
    print(f"Per fold: MAE / persistence MAE, mean of 4 s and 6 s; biases: median of forecast "
          f"- actual (W) over both; ci90_lo/hi: the served ratio's 90 % moving-block "
          f"bootstrap interval ({BLOCK}-window blocks, {DRAWS} draws) at the worse of 4 s and "
          f"6 s; LSTM max epochs {a.epochs}; total "
          f"{time.monotonic() - t_start:.0f} s.\n")
    print(format_table(rows, cols, "{:.3f}"))
    print("\nPer server: mean over folds; best_simple = min of persistence, EWMA, LightGBM; "
          "met = served <= 1.0x on every fold at 4 s and at 6 s, <= best_simple on average, "
          "|median bias| <= 2 W; sig_above_1 / sig_below_1: folds whose served ratio's "
          "bootstrap interval (at the worse horizon) lies wholly above / below 1.0.\n")
    print(format_table(summary(rows, (*SERVED, *sel)),
                       ["setting", "server", "folds", *MEMBERS, *SERVED, *sel, "best_simple",
                        "worst_fold_served", "worst_fold_4s_6s", "max_abs_bias_w",
                        "sig_above_1", "sig_below_1", "met",
                        *(("worst_selected", "max_abs_bias_selected_w", "met_selected")
                          if sel else ())], "{:.3f}"))
    print("\nThe loss bound's risk (ServedParams.risk) over the same members: mean ratio over "
          "folds, the worst fold at 4 s or 6 s, folds above 1.0x at either.\n")
    print(format_table(risk_sweep(rows, risks), ["setting", "server", "risk", "mean",
                                                 "worst_fold_4s_6s", "folds_above_1"],
                       "{:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
