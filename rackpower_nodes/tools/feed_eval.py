"""Feed-loss evaluation: one feed of a dual-fed rack dropped under load, in fast mode.

    python -m rackpower_nodes.tools.feed_eval --seeds 5000,5001,5002,5003,5004 \
        --from-h 13 --window-min 10 --day-hours 24

For each held-out seed (5000+; the office preset's busiest hour, 13:00, on training seed 100
and on the held-out days alike) it simulates a window of the day and runs each case of
`sim.feeds.scenario` (feed-aware with precomputed contingency caps; the same controller never
told of the loss; the plain one-budget controller that drops its budget once it sees the
loss; no capping) through the loss of feed A and, separately, of feed B, `--loss-at-s` into
the window for `--loss-s`, with the actuation delays the evaluation models (PDU outlet
registers `--pdu-delay-s`, BMC power caps `--bmc-delay-s` on the servers with a cap URL) and
the loss seen by the actuator `--detect-s` after it. It prints, per case over every window:
survivor breaker trips, peak overload multiple and heat (1 = trip), time to cap (survivor
back within its budget for `--hold-s`) and to its rating, throttled and dark energy during
the loss, and throttled energy by priority. With `--day-hours` it also prints the price in
normal operation: the energy the feed-aware budgets throttle over the day against the plain
budget's, with each feed's time over its budget and rating.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rackpower_nodes.core.evaluation import EvalSetup
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.sim.feeds import load_feeds
from rackpower_nodes.sim.feeds.scenario import CASES, feed_plan, priorities, run_case
from rackpower_nodes.sim.rack_model import SimConfigError
from rackpower_nodes.tools.evaluate_data import (
    CliError, _default_config, actuator_config, demand_columns, load_day, make_forecasts)

_log = logging.getLogger("feed_eval")
HELD_OUT_FIRST_SEED = 5000


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="feed_eval", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="5000,5001,5002",
                   help="held-out seeds (>= 5000), comma-separated (default 5000,5001,5002)")
    p.add_argument("--from-h", type=float, default=13.0,
                   help="the window starts at this hour of the day (default 13, the busiest)")
    p.add_argument("--window-min", type=float, default=10.0, help="window length, min")
    p.add_argument("--loss-at-s", type=float, default=120.0, help="loss this far in, s")
    p.add_argument("--loss-s", type=float, default=300.0, help="the feed is out this long, s")
    p.add_argument("--feeds", default="A,B", help="feeds to drop, one run each (default A,B)")
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"comma-separated cases (default {','.join(CASES)})")
    p.add_argument("--feeds-config", type=Path, default=None,
                   help="YAML with the feeds: section (default config/rack_feeds.yaml)")
    p.add_argument("--config", type=Path, default=None, help="ROS parameter YAML (rack.yaml)")
    p.add_argument("--mode", default="reactive", choices=("reactive", "proactive"),
                   help="the controller's mode (default reactive; proactive runs the "
                        "forecaster, --model or its persistence fallback)")
    p.add_argument("--model", type=Path, default=None, help="model directory for proactive")
    p.add_argument("--detect-s", type=float, default=0.3,
                   help="the actuator sees a lost feed this long after (its PDU read "
                        "timeout), s (default 0.3)")
    p.add_argument("--pdu-delay-s", type=float, default=0.1,
                   help="write -> in force of a PDU outlet register, s (default 0.1)")
    p.add_argument("--bmc-delay-s", type=float, default=1.0,
                   help="write -> in force of a BMC power cap, s (default 1.0)")
    p.add_argument("--cap-time-s", type=float, default=3.0,
                   help="the plan's time for the caps to act after a loss, s: a survivor may "
                        "carry the overload the trip curve allows for it (default 3)")
    p.add_argument("--hold-s", type=float, default=1.0,
                   help="capped = the survivor within its budget for this long, s")
    p.add_argument("--day-hours", type=float, default=0.0,
                   help="also run this many hours of the first seed's day without a loss, "
                        "from --day-from-h: the price in normal operation (0: skip)")
    p.add_argument("--day-from-h", type=float, default=0.0,
                   help="the normal-operation run starts at this hour (default 0)")
    p.add_argument("--preset", default=None, help="simulator preset (default office)")
    p.add_argument("--json", type=Path, default=None, help="write every run here")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _list(text: str, what: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise CliError(f"{what} {text!r}: expected a comma-separated list")
    return items


class Rack:
    """The rack as the evaluation sees it: actuator config, feeds, plan, delays."""

    def __init__(self, args):
        self.config = args.config or _default_config(args.preset)
        self.acfg = actuator_config(self.config, [])
        self.names = [c.id for c in self.acfg.components]
        from rackpower_nodes.sim.rack_sim import load_config, preset_config

        sim_cfg = load_config(preset_config(args.preset or "office"))
        path = args.feeds_config or self.config.parent / "rack_feeds.yaml"
        feeds = load_feeds(path, sim_cfg)
        if feeds is None:
            raise CliError(f"--feeds-config {path}: no feeds: section there")
        self.feeds = feeds.reordered(self.names)
        self.plan = feed_plan(self.feeds, args.cap_time_s)
        capped = np.array([bool(u) for u in self.acfg.cap_urls])
        self.delay = np.where(capped, args.bmc_delay_s, args.pdu_delay_s)
        self.setup = EvalSetup(self.acfg.components, self.acfg.policy, self.delay, 0.5)
        self.priorities = priorities(self.acfg.components)


def _window(args, seed: int, hours: float, from_h: float):
    ns = argparse.Namespace(sim=None, hours=hours, from_h=from_h, seed=seed,
                            preset=args.preset)
    return load_day(ns)


def _run(args, rack: Rack, data, case: str, loss) -> dict:
    demand = demand_columns(data, rack.names)
    forecasts = (make_forecasts(data, rack.names, rack.config, args.model, 1)
                 if args.mode == "proactive" and case != "no capping" else None)
    began = time.perf_counter()
    run = run_case(case, demand, data.start_unix, data.rate_hz, rack.setup, rack.feeds,
                   rack.plan, args.mode, loss, args.detect_s, forecasts, args.hold_s)
    row = run.summary()
    row.update(seed=data.seed, wall_s=time.perf_counter() - began,
               perf_lost_pct=100.0 * row["throttled_j"] / max(run.result.demand_energy_wh
                                                                * 3600.0, 1e-9),
               feeds=run.stats["feeds"])
    if args.verbose:
        print(f"  {case:15s} seed {data.seed} loss {loss}: {row['wall_s']:.1f} s",
              file=sys.stderr, flush=True)
    return row


def _fmt(x, spec="{:.2f}", none="never") -> str:
    return none if x is None else spec.format(x)


def loss_table(rows: list[dict], cases: Sequence[str], prios: Sequence[int]) -> str:
    """One line per case over every window: the survivor's worst and the loss's means."""
    head = ["case", "losses", "survivor trips", "peak multiple (max)", "peak heat (max)",
            "time to cap s (median / max)", "time to rating s (max)",
            "survivor over rating s (min / max)",
            "throttled Wh (mean)", "throttled kJ (mean)", "dark Wh (mean)"]
    head += [f"throttled Wh p{p} (mean)" for p in prios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        rs = [r for r in rows if r["case"] == case and "lost" in r]
        if not rs:
            continue
        caps = [r["time_to_cap_s"] for r in rs]
        done = [c for c in caps if c is not None]
        rated = [r["time_to_rating_s"] for r in rs]
        never = len(caps) - len(done)
        cap = (f"{statistics.median(done):.2f} / {max(done):.2f}" if done else "-") + (
            f" ({never} never)" if never else "")
        rate = "never" if None in rated else f"{max(rated):.2f}"
        cells = [case, str(len(rs)), str(sum(r["survivor_trips"] for r in rs)),
                 f"{max(r['peak_multiple'] for r in rs):.2f}",
                 f"{max(r['peak_heat'] for r in rs):.2f}", cap, rate,
                 f"{min(r['over_rating_s'] for r in rs):.1f} / "
                 f"{max(r['over_rating_s'] for r in rs):.1f}",
                 f"{np.mean([r['loss_throttled_j'] for r in rs]) / 3600:.1f}",
                 f"{np.mean([r['loss_throttled_j'] for r in rs]) / 1000:.0f}",
                 f"{np.mean([r['loss_dark_j'] for r in rs]) / 3600:.1f}"]
        cells += [f"{np.mean([r['loss_throttled_by_priority_j'][p] for r in rs]) / 3600:.1f}"
                  for p in prios]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def day_table(rows: list[dict], names: Sequence[str]) -> str:
    """The price in normal operation: one line per case over the day."""
    prios = sorted(rows[0]["throttled_by_priority_j"], reverse=True) if rows else []
    head = ["case", "throttled Wh", "perf lost %", "trips"]
    head += [f"throttled Wh p{p}" for p in prios]
    for f in names:
        head += [f"feed {f} over budget s", f"feed {f} over rating s", f"feed {f} peak multiple"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"], f"{r['throttled_j'] / 3600:.1f}", f"{r['perf_lost_pct']:.4f}",
                 str(r["trips"])]
        cells += [f"{r['throttled_by_priority_j'][p] / 3600:.1f}" for p in prios]
        for f in names:
            fd = r["feeds"][f]
            cells += [f"{fd['over_budget_s']:.1f}", f"{fd['over_rating_s']:.1f}",
                      f"{fd['peak_multiple']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def demand_on_feeds(demand_w: np.ndarray, rate_hz: float, feeds, seed: int) -> dict:
    """How often the uncapped demand (steps, n) W, both feeds up, loads each feed above its
    budget and rating (s), its peak multiple and the energy above its budget (J)."""
    load = demand_w @ feeds.split
    dt = 1.0 / rate_hz
    out = {"seed": seed, "hours": len(demand_w) * dt / 3600.0,
           "rack_peak_w": float(demand_w.sum(axis=1).max())}
    for f, name in enumerate(feeds.names):
        out[name] = {"over_budget_s": float(np.count_nonzero(load[:, f] > feeds.budget_w[f]))
                     * dt,
                     "over_rating_s": float(np.count_nonzero(load[:, f] > feeds.breaker_w[f]))
                     * dt,
                     "peak_multiple": float(load[:, f].max() / feeds.breaker_w[f]),
                     "above_budget_j": float(np.clip(load[:, f] - feeds.budget_w[f], 0.0,
                                                     None).sum()) * dt}
    return out


def demand_table(rows: list[dict], names: Sequence[str]) -> str:
    head = ["seed", "rack peak W"]
    for f in names:
        head += [f"feed {f} over budget s", f"feed {f} peak multiple",
                 f"feed {f} above budget Wh"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["seed"]), f"{r['rack_peak_w']:.0f}"]
        for f in names:
            cells += [f"{r[f]['over_budget_s']:.1f}", f"{r[f]['peak_multiple']:.3f}",
                      f"{r[f]['above_budget_j'] / 3600:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        seeds = [int(s) for s in _list(args.seeds, "--seeds")]
        if any(s < HELD_OUT_FIRST_SEED for s in seeds):
            raise CliError(f"--seeds {args.seeds!r}: the evaluation runs on held-out seeds "
                           f">= {HELD_OUT_FIRST_SEED} only")
        cases = _list(args.cases, "--cases")
        bad = [c for c in cases if c not in CASES]
        if bad:
            raise CliError(f"--cases: {bad} are not cases ({', '.join(CASES)})")
        window_s = args.window_min * 60.0
        if not (0 < args.loss_at_s and args.loss_at_s + args.loss_s <= window_s):
            raise CliError(f"--loss-at-s {args.loss_at_s:g} + --loss-s {args.loss_s:g}: "
                           f"expected a loss inside the {window_s:g} s window")
        rack = Rack(args)
        lost = _list(args.feeds, "--feeds")
        unknown = [f for f in lost if f not in rack.feeds.names]
        if unknown:
            raise CliError(f"--feeds: {unknown} are not feeds ({', '.join(rack.feeds.names)})")
        rows = []
        for seed in seeds:
            data = _window(args, seed, window_s / 3600.0, args.from_h)
            for feed in lost:
                for case in cases:
                    rows.append(_run(args, rack, data, case,
                                     (feed, args.loss_at_s, args.loss_s)))
        day_rows, demand_rows = [], []
        if args.day_hours > 0:
            data = _window(args, seeds[0], args.day_hours, args.day_from_h)
            for case in [c for c in cases if c != "no contingency"]:
                day_rows.append(_run(args, rack, data, case, None))
            for seed in seeds:
                whole = _window(args, seed, 24.0, 0.0)
                demand_rows.append(demand_on_feeds(demand_columns(whole, rack.names),
                                                   whole.rate_hz, rack.feeds, seed))
    except (CliError, ConfigError, SimConfigError, OSError, ValueError) as exc:
        print(f"feed_eval: {exc}", file=sys.stderr)
        return 2
    f = rack.feeds
    print(f"# feed loss: seeds {','.join(map(str, seeds))}, {args.window_min:g} min from "
          f"{args.from_h:g} h, feed {'/'.join(lost)} lost at {args.loss_at_s:g} s for "
          f"{args.loss_s:g} s; mode {args.mode}; feeds "
          + ", ".join(f"{n} {w:.0f} W (budget {b:.0f} W)"
                      for n, w, b in zip(f.names, f.breaker_w, f.budget_w))
          + f"; rack budget {rack.acfg.policy.budget_w:.0f} W; detect {args.detect_s:g} s, "
          f"BMC caps {args.bmc_delay_s:g} s, PDU registers {args.pdu_delay_s:g} s; plan "
          f"overload {rack.plan.overload_multiple:.2f} x rating for {args.cap_time_s:g} s\n")
    print(loss_table(rows, cases, rack.priorities))
    if day_rows:
        print(f"\n## normal operation, {args.day_hours:g} h of seed {seeds[0]} from "
              f"{args.day_from_h:g} h, without a loss\n")
        print(day_table(day_rows, f.names))
        print("\n## uncapped demand on each feed, whole days (24 h), both feeds up\n")
        print(demand_table(demand_rows, f.names))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"loss": rows, "day": day_rows,
                                         "demand": demand_rows}, indent=1,
                                        default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
