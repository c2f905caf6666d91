"""``rackpower-evaluate --sweep``: every mode over its margins, compared at matched stranded power.

Each mode runs over the same held-out demand at every margin of one structure, the same for
all modes: ``+frac x power, at least min_w W`` (proactive and proactive-baseline:
``policy.margin_frac``/``margin_w`` on the forecast peak; reactive:
``reactive_margin_frac``/``_w`` on the measured power). Static has no margin: one point.
``proactive`` serves ``--model``; ``proactive-baseline`` serves the no-training forecaster
(the ForecastService without a model: persistence with the predictor's margin). The curves
(:mod:`rackpower_nodes.core.tradeoff`) of each pair are read at three stranded powers inside
both; the report gives proactive's under-allocated energy and time over reactive's and over
proactive-baseline's there, and each run's shortfall by event class when the run has a job log.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rackpower_nodes.core.evaluation import EvalSetup, run_mode
from rackpower_nodes.core.tradeoff import (
    Curve,
    TradeoffError,
    by_event_class,
    matched_points,
    ratios_at,
)

__all__ = ["SWEEP_MODES", "plot_sweep", "report_sweep", "run_sweep"]

_log = logging.getLogger(__name__)

SWEEP_MODES = ("proactive", "proactive-baseline", "reactive", "static")
_KEYS = {"proactive": ("margin_frac", "margin_w"),
         "proactive-baseline": ("margin_frac", "margin_w"),
         "reactive": ("reactive_margin_frac", "reactive_margin_w")}
_STYLE = {"proactive": ("tab:blue", "o"), "proactive-baseline": ("tab:orange", "s"),
          "reactive": ("tab:green", "^"), "static": ("tab:red", "D")}


def margins(mode: str, fracs: Sequence[float], min_ws: Sequence[float]
            ) -> list[tuple[float, float] | None]:
    """The (frac, min_w) margins ``mode`` runs at; [None] for static."""
    if mode == "static":
        return [None]
    return [(f, w) for w in min_ws for f in fracs]


def run_sweep(modes: Sequence[str], demand: np.ndarray, names: Sequence[str], start_unix: float,
              rate_hz: float, config_for: Callable[[list[str]], object], delay,
              forecast_every_s: float, forecasts_for: Callable[[str], object],
              make_pdu: Callable[[EvalSetup], object], fracs: Sequence[float],
              min_ws: Sequence[float], events_at=None, progress=None) -> list[dict]:
    """One row per (mode, margin): ``ModeResult.row`` plus mode, margin, delay and, with
    ``events_at``, ``by_event_wh`` (under-allocated energy per event class).

    ``config_for(overrides)`` gives the actuator config with ``NAME:=VALUE`` overrides;
    ``forecasts_for(mode)`` a fresh :class:`~rackpower_nodes.core.evaluation.Forecasts` for a
    proactive mode; ``make_pdu(setup)`` a fresh simulated PDU.
    """
    bad = [m for m in modes if m not in SWEEP_MODES]
    if bad:
        raise ValueError(f"--modes: {', '.join(bad)} cannot be swept; expected some of "
                         f"{', '.join(SWEEP_MODES)}")
    rows = []
    t = start_unix + np.arange(len(demand)) / rate_hz
    for mode in modes:
        for margin in margins(mode, fracs, min_ws):
            overrides = [] if margin is None else [f"policy.{_KEYS[mode][0]}:={margin[0]}",
                                                   f"policy.{_KEYS[mode][1]}:={margin[1]}"]
            acfg = config_for(overrides)
            setup = EvalSetup(acfg.components, acfg.policy, delay, forecast_every_s)
            forecasts = forecasts_for(mode) if mode.startswith("proactive") else None
            res = run_mode("proactive" if forecasts is not None else mode, demand, start_unix,
                           rate_hz, setup, make_pdu(setup), forecasts, trace_every=1)
            row = res.row(len(names))
            row.update(mode=mode, margin_frac=margin[0] if margin else math.nan,
                       margin_w=margin[1] if margin else math.nan, steps=res.steps)
            if events_at is not None:
                tr = res.trace
                short = tr["demand_w"] - tr["allocated_w"]
                row["by_event_wh"] = by_event_class(short, t[:len(short)], names, events_at)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def _curves(rows: Sequence[dict]) -> dict[str, Curve]:
    modes = dict.fromkeys(r["mode"] for r in rows)
    return {m: Curve.from_rows(m, [r for r in rows if r["mode"] == m]) for m in modes}


def report_sweep(rows: Sequence[dict]) -> str:
    """Markdown: every point, then the matched-point ratios, then shortfall by event class."""
    out = ["| mode | margin | stranded mean W | under-alloc Wh | under-alloc time % | "
           "breaker trips | budget violations |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        m = ("-" if math.isnan(r["margin_frac"]) else
             f"+{r['margin_frac']:g}, >= {r['margin_w']:g} W")
        out.append(f"| {r['mode']} | {m} | {r['stranded_mean_w']:.0f} | "
                   f"{r['under_alloc_wh']:.3f} | {r['under_alloc_pct']:.3f} | "
                   f"{r['breaker_trips']} | {r['budget_violations']} |")
    curves = {m: c for m, c in _curves(rows).items() if len(c.stranded_w) > 1}
    pairs = [(a, b) for a, b in (("proactive", "reactive"),
                                 ("proactive", "proactive-baseline"),
                                 ("proactive-baseline", "reactive"))
             if a in curves and b in curves]
    if pairs:
        out += ["", "At matched mean stranded power (three points spread over the overlap of "
                "the two curves' ranges; linear between each curve's points):", "",
                "| curve / reference | stranded W | energy ratio | time ratio | "
                "energy Wh (curve / reference) |", "|---|---|---|---|---|"]
        for a, b in pairs:
            try:
                points = matched_points([curves[a], curves[b]])
            except TradeoffError as exc:
                out.append(f"| {a} / {b} | no matched points: {exc} | | | |")
                continue
            e = ratios_at(curves[a], curves[b], points, "under_alloc_wh")
            tm = ratios_at(curves[a], curves[b], points, "under_alloc_pct")
            for (x, ea, eb, re), (_, _, _, rt) in zip(e, tm):
                out.append(f"| {a} / {b} | {x:.0f} | {re:.3f} | {rt:.3f} | "
                           f"{ea:.3f} / {eb:.3f} |")
    classes = sorted({k for r in rows for k in r.get("by_event_wh", {})})
    if classes:
        out += ["", "Under-allocated energy by event class, Wh:", "",
                "| mode | margin | " + " | ".join(classes) + " |",
                "|---|---|" + "---|" * len(classes)]
        for r in rows:
            m = "-" if math.isnan(r["margin_frac"]) else f"+{r['margin_frac']:g}"
            cells = " | ".join(f"{r['by_event_wh'].get(c, 0.0):.3f}" for c in classes)
            out.append(f"| {r['mode']} | {m} | {cells} |")
    return "\n".join(out)


def plot_sweep(rows: Sequence[dict], path: Path, title: str) -> None:
    """Under-allocated energy and time against mean stranded power, one line per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    for mode, curve in _curves(rows).items():
        color, marker = _STYLE.get(mode, ("k", "x"))
        order = np.argsort(curve.stranded_w)
        for ax, metric in zip(axes, ("under_alloc_wh", "under_alloc_pct")):
            ax.plot(curve.stranded_w[order], curve.values[metric][order], marker=marker,
                    color=color, label=mode, linestyle="-" if len(order) > 1 else "none")
    axes[0].set_ylabel("under-allocated energy, Wh")
    axes[1].set_ylabel("under-allocated time, % of component-steps")
    for ax in axes:
        ax.set_xlabel("mean stranded power, W")
        ax.set_yscale("symlog", linthresh=0.01)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_progress(row: dict) -> None:
    m = "-" if math.isnan(row["margin_frac"]) else f"+{row['margin_frac']:g}"
    print(f"  {row['mode']} {m}: stranded {row['stranded_mean_w']:.0f} W, under "
          f"{row['under_alloc_wh']:.3f} Wh", file=sys.stderr, flush=True)
