"""Trade-off curves of the allocation modes: energy lost vs stranded power, per actuation delay.

    .venv/bin/python benchmarks/bench_tradeoff.py --seed 7 --from-h 9 --hours 1 \
        --delays 0.1,1 --fracs 0.02,0.05,0.1,0.2 --min-w 10 --json /tmp/tradeoff.json

A held-out simulated day (`rackpower-sim fast` with a seed no model was trained or tuned on)
is cut to [from_h, from_h + hours); every mode runs over it at every delay and every margin of
one structure, the same for all modes: +frac x power, at least min_w W (proactive:
policy.margin_frac/margin_w on the forecast peak; reactive: reactive_margin_frac/_w on the
measured power). Each point: mean stranded power (allocated in force minus served, rack), the
energy demanded above the allocation (Wh, the primary figure), performance lost (% of the
energy demanded) and under-allocated time (% of component-steps short by more than
max(1 %, 2 W)). Proactive runs on the forecaster's no-training fallback unless --model is given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rackpower_nodes.core.evaluation import EvalSetup, run_mode  # noqa: E402
from rackpower_nodes.sim.rack_sim import generate  # noqa: E402
from rackpower_nodes.tools.evaluate_cli import (  # noqa: E402
    actuator_config, demand_columns, make_forecasts, make_pdu)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=REPO / "config" / "rack.yaml")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--from-h", type=float, default=9.0)
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--delays", default="0.1,1")
    p.add_argument("--fracs", default="0.02,0.05,0.1,0.2")
    p.add_argument("--min-w", type=float, default=10.0)
    p.add_argument("--modes", default="reactive,proactive")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--quantile", default=None,
                   help="policy.quantile for proactive (default: the config's)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="another pdu_actuator parameter for every run (repeatable)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    began = time.perf_counter()
    data = generate(args.from_h + args.hours, seed=args.seed)
    first = int(round(args.from_h * 3600 * data.rate_hz))
    base = actuator_config(args.config, [])
    names = [c.id for c in base.components]
    demand = demand_columns(data, names)[first:]
    start = data.start_unix + first / data.rate_hz
    print(f"# trade-off: seed {args.seed}, hours [{args.from_h:g}, "
          f"{args.from_h + args.hours:g}), {len(names)} components, budget "
          f"{base.policy.budget_w:.0f} W, margin +frac (>= {args.min_w:g} W), proactive on "
          f"{args.model or 'the no-training fallback'}\n")
    print("| mode | delay s | margin | stranded mean W | energy lost Wh | perf lost % "
          "| under-alloc time % | corrections |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for delay in _floats(args.delays):
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            for frac in _floats(args.fracs):
                keys = (("margin_frac", "margin_w") if mode == "proactive"
                        else ("reactive_margin_frac", "reactive_margin_w"))
                overrides = [f"policy.{keys[0]}:={frac}", f"policy.{keys[1]}:={args.min_w}"]
                overrides += args.param
                if args.quantile:
                    overrides.append(f"policy.quantile:={args.quantile}")
                acfg = actuator_config(args.config, overrides)
                setup = EvalSetup(acfg.components, acfg.policy, delay, 0.5)
                forecasts = None
                if mode == "proactive":
                    forecasts = make_forecasts(data, names, args.config, args.model, 1)
                    forecasts.start_unix = start
                    forecasts.telemetry = forecasts.telemetry[:, first:]
                res = run_mode(mode, demand, start, data.rate_hz, setup,
                               make_pdu(data, setup), forecasts)
                row = res.row(len(names))
                row.update(delay_s=delay, margin_frac=frac, margin_w=args.min_w)
                rows.append(row)
                print(f"| {mode} | {delay:g} | +{frac:g} | {row['stranded_mean_w']:.0f} | "
                      f"{row['under_alloc_wh']:.2f} | {row['perf_lost_pct']:.4f} | "
                      f"{row['under_alloc_pct']:.3f} | {row['corrections']} |", flush=True)
    print(f"\n{len(rows)} runs in {time.perf_counter() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
