"""``rackpower-evaluate``: the allocation modes side by side on one held-out simulated day.

    rackpower-sim fast --hours 24 --seed 7 --out /tmp/day7
    rackpower-evaluate --sim /tmp/day7 --model models/lstm-<version> --plot /tmp/modes.png

Runs the same simulated demand under each mode (default proactive, reactive, static) through
the controller, an actuation delay and the simulated PDU (core/evaluation.py), at each delay
of `--delays` (default `rack`: what the rack's actuators take, per component: PDU outlet
registers `--pdu-delay-s`, 0.1 s; BMC power caps `--bmc-delay-s`, 1 s; or uniform delays in
seconds, e.g. `--delays 0.1,1,rack`), and prints one table per delay, one row per mode: time
and energy under-allocated, performance lost to throttling, stranded power (allocated minus
used, rack total), breaker trips, budget violations. The rack (components, floors, ceilings,
priorities, budget, policy) comes from the `pdu_actuator` section of the config; the
forecaster's component specs from its `predictor` section. The held-out day, the rack and
the forecaster are built by :mod:`.evaluate_data`.

`--sweep` draws each mode's trade-off curve instead (:mod:`.evaluate_sweep`)::

    rackpower-evaluate --sweep --preset ai --hours 1 --seed 7 --model <served> \
        --baseline-model <persistence> --fracs 0.02,0.05,0.1,0.2,0.4 --plot /tmp/ai.png
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rackpower_nodes.core.allocation import MODES
from rackpower_nodes.core.evaluation import (
    EvalSetup, ModeResult, bmc_actuation, format_table, run_mode)
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.tools import evaluate_sweep as sweep
from rackpower_nodes.tools.evaluate_data import (  # noqa: F401 (importers use them from here)
    CliError, _default_config, actuator_config, demand_columns, load_day, make_forecasts,
    make_pdu)

_log = logging.getLogger("rackpower_evaluate")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rackpower-evaluate", description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sim", type=Path, help="a rackpower-sim fast folder (the held-out day)")
    src.add_argument("--hours", type=float, help="simulate this many hours now (with --seed)")
    p.add_argument("--seed", type=int, default=7, help="seed when simulating (default 7)")
    p.add_argument("--from-h", type=float, default=0.0,
                   help="with --hours: simulate from the day's start but evaluate only from "
                        "this hour on (default 0)")
    p.add_argument("--baseline-model", type=Path, default=None,
                   help="--sweep: model directory for proactive-baseline (default: no model, "
                        "the forecaster's persistence fallback)")
    p.add_argument("--preset", default=None,
                   help="with --hours: the simulator preset (office, ai, mixed); --config "
                        "then defaults to config/rack_<preset>.yaml (office: rack.yaml)")
    p.add_argument("--model", type=Path, default=None,
                   help="model directory for proactive mode (default: the persistence fallback)")
    p.add_argument("--config", type=Path, default=None, help="ROS parameter YAML (rack.yaml)")
    p.add_argument("--modes", default="proactive,reactive,static",
                   help="comma-separated modes (default proactive,reactive,static)")
    p.add_argument("--delays", default="rack",
                   help="comma-separated actuation delays to run every mode at: seconds (the "
                        "same for every component) or `rack` (per component: PDU registers "
                        "--pdu-delay-s, BMC caps --bmc-delay-s); default rack")
    p.add_argument("--delay-s", type=float, default=None,
                   help="one uniform delay, s (the same as --delays DELAY_S)")
    p.add_argument("--pdu-delay-s", type=float, default=0.1,
                   help="write -> in force of a PDU outlet register, s (default 0.1)")
    p.add_argument("--bmc-delay-s", type=float, default=1.0,
                   help="write -> in force of a BMC power cap, s (default 1.0)")
    p.add_argument("--forecast-every-s", type=float, default=0.5,
                   help="forecaster period, s (the live predictor: 0.1; default 0.5)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="override a pdu_actuator parameter, as `ros2 run --ros-args -p` does "
                        "(e.g. -p policy.quantile:=p90); repeatable")
    p.add_argument("--bmc-caps", action="store_true",
                   help="write allocations as the BMC power caps do where the config has "
                        "components.power_cap_url: whole watts, not rewritten for changes "
                        "under power_caps.min_change_w (default: exact values)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of the run here")
    p.add_argument("--json", type=Path, default=None, help="write the table as JSON here")
    p.add_argument("--sweep", action="store_true",
                   help="trade-off curves: run each mode at every margin of --fracs x --min-ws "
                        "(modes default proactive,proactive-baseline,reactive,static; the "
                        "first delay of --delays); --plot draws them")
    p.add_argument("--fracs", default="0.02,0.05,0.1,0.2,0.4",
                   help="--sweep: relative margins (default 0.02,0.05,0.1,0.2,0.4)")
    p.add_argument("--min-ws", default="10",
                   help="--sweep: minimum margins, W (default 10)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def run_modes(modes: Sequence[str], data, demand: np.ndarray, names: Sequence[str],
              setup: EvalSetup, config: Path, model: Path | None, threads: int = 1,
              verbose: bool = False) -> list[ModeResult]:
    """Each mode over the same demand, a fresh simulated PDU each (and for proactive the
    forecaster with `model`, or the fallback)."""
    results = []
    for mode in modes:
        forecasts = (make_forecasts(data, names, config, model, threads)
                     if mode == "proactive" else None)
        if verbose:
            print(f"running {mode} over {len(demand) / data.rate_hz / 3600:.2f} h ...",
                  file=sys.stderr, flush=True)
        results.append(run_mode(mode, demand, data.start_unix, data.rate_hz, setup,
                                make_pdu(data, setup), forecasts))
    return results


def plot(results: Sequence[ModeResult], names: Sequence[str], path: Path,
         budget_w: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 10), constrained_layout=True)
    first = results[0].trace
    t_h = first["t_s"] / 3600.0
    axes[0].plot(t_h, first["demand_w"].sum(axis=1), color="black", lw=0.6, label="demand")
    for r in results:
        axes[0].plot(t_h, r.trace["allocated_w"].sum(axis=1), lw=0.6, label=f"{r.mode}")
    axes[0].axhline(budget_w, color="red", ls="--", lw=0.8, label="budget")
    axes[0].set(ylabel="rack W", xlabel="hours", title="rack total: demand and allocation")
    axes[0].legend(loc="upper right", fontsize=8)
    # the component and 10 minutes with the largest rise in demand
    demand = first["demand_w"]
    rise = np.diff(demand, axis=0)
    k, c = np.unravel_index(np.argmax(rise), rise.shape)
    a, b = max(k - 300, 0), min(k + 300, len(t_h))
    tm = (first["t_s"][a:b] - first["t_s"][a]) / 60.0
    axes[1].plot(tm, demand[a:b, c], color="black", lw=0.8, label="demand")
    for r in results:
        axes[1].plot(tm, r.trace["allocated_w"][a:b, c], lw=0.8, label=r.mode)
    axes[1].set(ylabel="W", xlabel="minutes",
                title=f"{names[c]}: the 10 minutes around its largest rise")
    axes[1].legend(loc="upper right", fontsize=8)
    rows = [r.row(len(names)) for r in results]
    x = np.arange(len(rows))
    axes[2].bar(x - 0.2, [row["under_alloc_pct"] for row in rows], 0.4,
                label="under-allocated time %")
    ax2 = axes[2].twinx()
    ax2.bar(x + 0.2, [row["stranded_mean_w"] for row in rows], 0.4, color="tab:orange",
            label="mean stranded W")
    axes[2].set_xticks(x, [row["mode"] for row in rows])
    axes[2].set(ylabel="under-allocated time %")
    ax2.set(ylabel="mean stranded W")
    axes[2].legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_delays(args, cap_urls: Sequence[str]) -> list[tuple[str, object]]:
    """[(label, delay)] from --delays/--delay-s: a float for every component, or per
    component for `rack` (BMC caps where a component has a power_cap_url)."""
    text = str(args.delay_s) if args.delay_s is not None else args.delays
    out = []
    for item in (x.strip() for x in text.split(",")):
        if item == "rack":
            capped = np.array([bool(u) for u in cap_urls])
            per = np.where(capped, args.bmc_delay_s, args.pdu_delay_s)
            out.append((f"rack (PDU registers {args.pdu_delay_s:g} s, BMC caps "
                        f"{args.bmc_delay_s:g} s on {int(capped.sum())} components)", per))
            continue
        try:
            delay = float(item)
        except ValueError:
            delay = math.nan
        if not math.isfinite(delay) or delay < 0:
            raise CliError(f"--delays {text!r}: {item!r} is not a delay in seconds >= 0 or "
                           "`rack`")
        out.append((f"{delay:g} s", delay))
    return out


def report(results: Sequence[ModeResult], names: Sequence[str], label: str) -> None:
    """The table of one delay and its per-component under-allocated time."""
    print(f"\n## actuation delay: {label}\n")
    print(format_table(results, len(names)))
    for r in results:
        extra = (f", forecasts {r.forecasts} ({r.fallback_forecasts} with fallback)"
                 if r.forecasts else "")
        print(f"\n{r.mode}: {r.wall_s:.1f} s wall{extra}", end="")
    print()
    print("\nunder-allocated time % per component:")
    print("| component | " + " | ".join(r.mode for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for i, name in enumerate(names):
        cells = [f"{100.0 * r.under_steps_by_component[i] / max(r.steps, 1):.3f}"
                 for r in results]
        print(f"| {name} | " + " | ".join(cells) + " |")


def sweep_main(args) -> int:
    """--sweep: the trade-off curves of each mode over the held-out day (evaluate_sweep)."""
    config = args.config or _default_config(args.preset)
    base = actuator_config(config, args.param)
    _, delay = parse_delays(args, base.cap_urls)[0]
    data = load_day(args)
    names = [c.id for c in base.components]
    demand = demand_columns(data, names)
    modes = ([m.strip() for m in args.modes.split(",") if m.strip()]
             if args.modes != "proactive,reactive,static" else list(sweep.SWEEP_MODES))
    if "proactive" in modes and args.model is None:
        raise CliError("--sweep with mode proactive needs --model (proactive-baseline is the "
                       "no-model forecaster)")
    fracs = [float(x) for x in args.fracs.split(",") if x.strip()]
    min_ws = [float(x) for x in args.min_ws.split(",") if x.strip()]

    def forecasts_for(mode):
        return make_forecasts(data, names, config,
                              args.model if mode == "proactive" else args.baseline_model,
                              args.threads)

    rows = sweep.run_sweep(modes, demand, names, data.start_unix, data.rate_hz,
                           lambda o: actuator_config(config, list(args.param) + o), delay,
                           args.forecast_every_s, forecasts_for, lambda s: make_pdu(data, s),
                           fracs, min_ws, None if data.events is None else data.events.events_at,
                           sweep.print_progress if args.verbose else None)
    hours = len(demand) / data.rate_hz / 3600
    title = (f"{hours:.2f} h held out (seed {data.seed}), {len(names)} components, budget "
             f"{base.policy.budget_w:.0f} W, delay {delay}, model "
             f"{args.model.name if args.model else '-'}, baseline "
             f"{args.baseline_model.name if args.baseline_model else 'fallback'}")
    print(f"# rackpower-evaluate --sweep: {title}\n")
    print(sweep.report_sweep(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot:
        sweep.plot_sweep(rows, args.plot, title)
        print(f"plot: {args.plot}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.sweep:
            return sweep_main(args)
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES or m == "safe"]
        if bad or not modes:
            raise CliError(f"--modes {args.modes!r}: expected some of proactive, reactive, "
                           "static")
        config = args.config or _default_config(args.preset)
        acfg = actuator_config(config, args.param)
        delays = parse_delays(args, acfg.cap_urls)
        dead_band, resolution = (bmc_actuation(acfg.cap_urls, acfg.power_caps.min_change_w)
                                 if args.bmc_caps else (None, None))
        data = load_day(args)
        names = [c.id for c in acfg.components]
        demand = demand_columns(data, names)
        runs = []
        for label, delay in delays:
            setup = EvalSetup(acfg.components, acfg.policy, delay, args.forecast_every_s,
                              dead_band, resolution)
            runs.append((label, run_modes(modes, data, demand, names, setup, config,
                                          args.model, args.threads, verbose=True)))
    except (CliError, ConfigError, OSError, ValueError) as exc:
        print(f"rackpower-evaluate: {exc}", file=sys.stderr)
        return 2
    hours = len(demand) / data.rate_hz / 3600
    print(f"# rackpower-evaluate: {hours:.2f} h simulated (seed {data.seed}), "
          f"{len(names)} components, budget {acfg.policy.budget_w:.0f} W, "
          f"model {args.model or 'persistence fallback'}"
          + (f", BMC caps on {int(np.count_nonzero(resolution))} components "
             f"(whole watts, {acfg.power_caps.min_change_w:g} W dead band)"
             if resolution is not None else ""))
    for label, results in runs:
        report(results, names, label)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for label, r in ((label, r) for label, rs in runs for r in rs):
            row = r.row(len(names))
            row["delay"] = label
            row["under_alloc_pct_by_component"] = {
                name: 100.0 * int(c) / max(r.steps, 1)
                for name, c in zip(names, r.under_steps_by_component)}
            per_hour = 3600.0 * data.rate_hz * len(names)
            row["under_alloc_pct_by_hour"] = [100.0 * int(c) / per_hour
                                              for c in r.under_steps_by_hour]
            rows.append(row)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    if args.plot:
        plot(runs[0][1], names, args.plot, acfg.policy.budget_w)
        print(f"plot: {args.plot} (actuation delay {runs[0][0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
