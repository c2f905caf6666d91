"""CPU per ``OnlineWindows.window`` call for the 16 components of config/rack.yaml in steady
state: the row cache against recomputing every row of the held history (the code before it).

    nice -n 10 .venv/bin/python benchmarks/bench_online_windows.py [--cycles 600]
        [--specs 50:10,100 30:10,100,300] [--events schedule snapshots]

The stream is the predictor's: a PowerSamples batch of 100 samples (1 kHz) per component
every 0.1 s, host telemetry at 2 Hz for the 14 hosts (stamped when scraped, 50-400 ms before it
arrives, so each message reopens the last few steps), the simulator's schedule
(config/rack_sim.yaml) and, with ``snapshots``, a workload-events snapshot of it each second,
and one ``window`` call per batch. Specs: ``history:coarse,...`` at 0.1 s steps; 50:10,100
is ``WindowSpec()`` (149 steps held), 30:10,100,300 what rackpower-train uses on simulator
data (329 held). Both builders get the same calls; each window of one is checked equal, byte
for byte, to the other's. CPU: ``time.process_time`` around each call alone.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))           # benchmark this checkout, not the installed copy
sys.path.insert(0, str(REPO / "test"))  # the reference: test/helpers/online_windows.py

from rackpower_nodes.core.forecast.features import WindowSpec  # noqa: E402
from rackpower_nodes.core.forecast.online import OnlineWindows  # noqa: E402
from rackpower_nodes.core.schedule import WorkloadSchedule  # noqa: E402
from helpers.online_windows import FromScratch  # noqa: E402

T0 = 1_700_000_000.0 + 0.0004           # a batch starts 0.4 ms into a step
SWITCHES = ("tor-a", "tor-b")           # no host telemetry


def parse_spec(text: str) -> WindowSpec:
    history, _, coarse = text.partition(":")
    return WindowSpec(step_s=0.1, history_steps=int(history),
                      coarse=tuple(int(k) for k in coarse.split(",") if k))


def run(spec: WindowSpec, events: str, cycles: int, seed: int) -> dict:
    """Stream until every component is ready, then ``cycles`` measured cycles."""
    cfg = yaml.safe_load((REPO / "config/rack.yaml").read_text())
    comp = cfg["/**/predictor"]["ros__parameters"]["components"]
    names, idle, top = comp["names"], comp["idle_w"], comp["max_w"]
    schedule = WorkloadSchedule.from_file(REPO / "config/rack_sim.yaml")
    new, old = (cls(spec, names, idle, top, schedule) for cls in (OnlineWindows, FromScratch))
    rng = np.random.default_rng(seed)
    level = np.array(idle) + 0.5 * (np.array(top) - np.array(idle))
    warm = spec.warmup_steps + 20
    cpu = {"new": [], "old": []}
    for k in range(warm + cycles):
        t = T0 + k * 0.1
        level = np.clip(level + rng.normal(0, 3, len(names)), idle, top)
        power = level[:, None] + rng.normal(0, 2, (len(names), 100))
        for w in (new, old):
            w.push_power_block(t, 0.001, names, power)
        if k % 5 == 0:                                     # 2 Hz, scraped before it arrives
            for host in (n for n in names if n not in SWITCHES):
                stamp = t - rng.uniform(0.05, 0.4)
                values = rng.random(6) * [1, 1, 1e8, 1e8, 1e7, 1e7]
                for w in (new, old):
                    w.push_telemetry(stamp, host, values)
        if events == "snapshots" and k % 10 == 0:
            snap = schedule.events_at(t - 0.05, 600.0)
            for w in (new, old):
                w.push_workload_events(snap)
        at = t + 0.1 + 0.002
        got = {}
        for label, w in (("new", new), ("old", old)):
            began = time.process_time()
            got[label] = w.window(at)
            if k >= warm:
                cpu[label].append(time.process_time() - began)
        for a, b in zip(got["new"], got["old"], strict=True):
            if a.dtype != b.dtype or a.tobytes() != b.tobytes():
                raise SystemExit(f"windows differ at cycle {k} ({spec}, {events})")
    if not got["new"][2].all():
        raise SystemExit(f"not every component ready after {warm} steps")
    return {label: np.array(v) * 1e6 for label, v in cpu.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=600, help="measured window() calls per row")
    p.add_argument("--specs", nargs="+", default=["50:10,100", "30:10,100,300"],
                   help="history:coarse,... at 0.1 s steps")
    p.add_argument("--events", nargs="+", default=["schedule", "snapshots"],
                   choices=["schedule", "snapshots"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print("`" + " ".join(["benchmarks/bench_online_windows.py", *sys.argv[1:]]) + "`\n")
    print("| spec (history: coarse) | steps held | events | from scratch, CPU us/call "
          "(median, p99) | row cache, CPU us/call (median, p99) | speed-up (mean) |")
    print("|---|---|---|---|---|---|")
    for text in args.specs:
        spec = parse_spec(text)
        for events in args.events:
            cpu = run(spec, events, args.cycles, args.seed)
            o, n = cpu["old"], cpu["new"]
            print(f"| {spec.history_steps}: {','.join(map(str, spec.coarse))} | "
                  f"{spec.warmup_steps} | {events} | {o.mean():.0f} ({np.median(o):.0f}, "
                  f"{np.percentile(o, 99):.0f}) | {n.mean():.0f} ({np.median(n):.0f}, "
                  f"{np.percentile(n, 99):.0f}) | {o.mean() / n.mean():.1f}x |")
    print(f"\n16 components, {args.cycles} window() calls per row after warm-up, each checked "
          "byte-equal to the from-scratch one.")


if __name__ == "__main__":
    main()
