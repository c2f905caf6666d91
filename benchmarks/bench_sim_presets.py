"""How much of each simulated rack's future announces itself: per preset, a 2 h run.

For every component, the run is cut into 5 s windows; a window *moves* when some 1 s mean power
in it differs from the last 1 s mean before it (what persistence holds) by more than 20 W (and,
in a second table, by more than 5 % of the component's max power). A moving window counts as
*announced* when, at least 5 s before it starts, the host showed one of: a job pending on it
with an announced start at most 600 s later (the scheduler's JobLog as known then), a job in
its first 120 s (startup phase), or its exported inference request rate 5 % above its value
10 s earlier. Windows inside a running training job past its
startup are counted apart first (their iterations and checkpoints follow the job's period, a
different kind of foresight), so the announced share is of the remaining moves' causes.
Persistence's 5 s MAE (0.1 s steps) is given as a fraction of each component's
max power, by class. The office preset's static schedule serves as its job log. Also: how the
scheduler's announced starts compare with the real ones.

Usage: .venv/bin/python benchmarks/bench_sim_presets.py [--hours 2] [--seed 21]
       [--office-from-h 8]
"""
from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # benchmark this checkout

from rackpower_nodes.sim.dataset import _sim_specs
from rackpower_nodes.sim.rack_sim import APP_RATE_FIELD, generate, load_config, preset_config

WINDOW_S, LEAD_S, STARTUP_S, HORIZON_S, PENDING_S = 5, 5, 120.0, 5.0, 600.0


def classes_of(data, cfg) -> list[str]:
    """A class per component: gpu-train / gpu-infer hosts, cpu server, switch, storage."""
    pools = {}
    if cfg.scheduler is not None:
        for c in cfg.scheduler.classes:
            if c.kind.startswith("gpu"):
                for h in c.hosts:
                    pools.setdefault(h, c.kind)
    return [pools.get(n, {"server": "cpu server"}.get(k, k))
            for n, k in zip(data.names, data.kinds, strict=True)]


def _signals(data, log, host: str, t0: float, rate: np.ndarray | None, sec: int) -> set[str]:
    seen = set()
    for j in (log.events_at(t0).for_host(host) if log is not None else ()):
        if j.state == "pending" and j.start_unix - t0 <= PENDING_S:
            seen.add("pending")
        elif t0 - j.start_unix < STARTUP_S:
            seen.add("startup")
        if j.state == "running" and j.power_class == "gpu-train" \
                and t0 - j.start_unix >= STARTUP_S:
            seen.add("training")
    if rate is not None and sec >= 10 and rate[sec] > max(1.05 * rate[sec - 10], 1.0 +
                                                           rate[sec - 10]):
        seen.add("rate")
    return seen


def analyse(preset: str, data, log, move_w: float | None) -> dict:
    """Per class: windows, moving windows (> ``move_w`` W, None: > 5 % of max power), how
    many were announced, and persistence's 5 s MAE over max power."""
    cfg = load_config(preset_config(preset))
    rate_hz, names = int(data.rate_hz), data.names
    secs = len(data.power_w) // rate_hz
    p1 = data.power_w[:secs * rate_hz].reshape(secs, rate_hz, -1).mean(axis=1)
    classes, specs = classes_of(data, cfg), _sim_specs(data)
    rates = data.telemetry.get(APP_RATE_FIELD)
    out: dict[str, dict] = {}
    for i, name in enumerate(names):
        row = out.setdefault(classes[i], {"windows": 0, "moves": 0, "announced": 0,
                                          "training": 0, "mae": [], "n": 0})
        rate = (rates[:, data.hosts.index(name)].astype(np.float64)
                if rates is not None and name in data.hosts else None)
        for w0 in range(WINDOW_S + LEAD_S, secs - WINDOW_S + 1, WINDOW_S):
            row["windows"] += 1
            limit = move_w if move_w is not None else 0.05 * specs[i][1]
            if np.abs(p1[w0:w0 + WINDOW_S, i] - p1[w0 - 1, i]).max() <= limit:
                continue
            row["moves"] += 1
            sec = w0 - LEAD_S
            seen = (_signals(data, log, name, data.start_unix + sec, rate, sec)
                    if name in data.hosts else set())
            if "training" in seen:
                row["training"] += 1
            elif seen & {"pending", "startup", "rate"}:
                row["announced"] += 1
        step = round(HORIZON_S * rate_hz)
        p = data.power_w[:, i].astype(np.float64)
        row["mae"].append(float(np.abs(p[step:] - p[:-step]).mean()) / specs[i][1])
        row["n"] += 1
    return out


def schedule_quality(log, start_unix: float) -> dict:
    waited = [r for r in log.records
              if math.isfinite(r.start_unix) and r.start_unix - r.submit_unix > 60.0]
    errs = [r.start_unix - r.expected_start_unix for r in waited]
    leads = [r.start_unix - r.submit_unix for r in waited]
    return {"jobs": len(log), "waited": len(waited),
            "lead_med": float(np.median(leads)) if leads else math.nan,
            "err_med": float(np.median(errs)) if errs else math.nan,
            "err_p90": float(np.percentile(np.abs(errs), 90)) if errs else math.nan}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--office-from-h", type=float, default=8.0,
                        help="the office day's window starts this many hours after midnight")
    args = parser.parse_args(argv)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"seed {args.seed}, {args.hours:g} h per preset\n")
    rows: dict[str, list] = {"20 W": [], "5 % of max power": []}
    quality, timing = {}, {}
    for preset in ("office", "ai", "mixed"):
        began = time.perf_counter()
        skip = args.office_from_h if preset == "office" else 0.0
        data = generate(skip + args.hours, seed=args.seed, preset=preset)
        timing[preset] = time.perf_counter() - began
        if skip:
            k = round(skip * 3600 * data.rate_hz)
            data.power_w, data.start_unix = data.power_w[k:], data.start_unix + skip * 3600
            data.telemetry = {f: v[round(skip * 3600):] for f, v in data.telemetry.items()}
        log = data.events
        if log is None:
            cfg = load_config(preset_config(preset))
            log = cfg.schedule.job_log(data.start_unix - 86400.0,
                                       data.start_unix + args.hours * 3600)
        else:
            quality[preset] = schedule_quality(log, data.start_unix)
        for label, move_w in (("20 W", 20.0), ("5 % of max power", None)):
            for cls, r in analyse(preset, data, log, move_w).items():
                rows[label].append((preset, cls, r))
    for label, table in rows.items():
        print(f"| preset | class | components | 5 s windows | moving > {label} | in a running "
              "training job | else announced >= 5 s ahead (pending / startup / rate rise) "
              "| persistence 5 s MAE / max power |")
        print("|---|---|---|---|---|---|---|---|")
        for preset, cls, r in table:
            moves = r["moves"]
            share = lambda k: f"{100 * r[k] / moves:.1f} %" if moves else "-"  # noqa: E731
            print(f"| {preset} | {cls} | {r['n']} | {r['windows']} | {moves} "
                  f"({100 * moves / r['windows']:.2f} %) | {share('training')} "
                  f"| {share('announced')} | {100 * np.mean(r['mae']):.2f} % |")
        print()
    print("| preset | jobs | queued > 60 s | median lead submit -> start (s) "
          "| median start - announced (s) | p90 abs error (s) |")
    print("|---|---|---|---|---|---|")
    for preset, q in quality.items():
        print(f"| {preset} | {q['jobs']} | {q['waited']} | {q['lead_med']:.0f} "
              f"| {q['err_med']:.0f} | {q['err_p90']:.0f} |")
    print("\ngenerate wall s: " + ", ".join(f"{p} {s:.1f}" for p, s in timing.items())
          + f" (office includes its first {args.office_from_h:g} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
