"""`bench_chaos.py`'s results: every fault judged, the bags read, the markdown table."""
from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import chaos_checks as cc
import chaos_faults as cf

MAX_WINDOW_S = 1.0              # Done when: above budget for no window longer than 1 s
MAX_LOST_S = 2.0                # ... nothing lost from the bags beyond 2 s per recorder kill


def _sensor_outages(script, graph, w: cc.GraphWatcher, to_wall: float) -> list:
    """Wall-time windows in which power_samples could not exist: current_sensor dead or
    restarting, the board stalled or unplugged; each until the first batch after it arrived
    here (a batch straddling a stall carries the stamp of its first, pre-stall sample)."""
    out = []
    for f in script.faults:
        if f.family == "kill" and f.target == "current_sensor":
            after = next((t for t in graph.starts["current_sensor"] if t >= f.info["exit_t"]),
                         math.inf)
        elif f.family in ("board_stall", "cable_pull"):
            after = f.t_done + (cf.STALL_S if f.family == "board_stall" else cf.PULL_S)
        else:
            continue
        first = next((t for t, _, _ in w.samples if t >= after), None)
        out.append((f.wall - 0.3, math.inf if first is None else first + to_wall))
    return out


def _bags(script, graph, w, bags: Path, span: tuple[float, float], to_wall: float) -> dict:
    """Gaps in the recorded power_samples during the soak (`span`, Unix s), explained by the
    sensor's outages and the recorder's kills or not; what the bags lost per kill."""
    stamps, spans, recorded, broken = cc.bag_stamps(bags, f"{cf.NAMESPACE}/power_samples")
    holes = [(a, b) for a, b in cc.gaps(stamps, spans, cf.GAP_MIN_S)
             if b > span[0] and a < span[1]]
    outages = _sensor_outages(script, graph, w, to_wall)
    kills, explained = [], list(outages)
    for f in script.faults:
        if f.family != "kill" or f.target != "recorder":
            continue
        kill = f.wall
        hole = next(((a, b) for a, b in holes if a <= kill + 0.2 and b >= kill), None)
        lost = None if hole is None else max(0.0, kill - hole[0] - cf.LATENCY_S)
        if hole is not None:
            lost -= cc.overlap_s(hole[0], kill, outages)      # the sensor was out anyway
            explained.append(hole)
        kills.append({"signal": f.info["signal"], "at_s": f.t - script.t0,
                      "lost_s": 0.0 if lost is None else max(0.0, lost),
                      "down_s": None if hole is None else hole[1] - kill})
    # batches this process received during the soak that no bag holds, outside the recorder's
    # downtime after a kill: what the recorder missed while it was running
    down = [h for h in explained if h not in outages]
    missed = [stamp for _, stamp, ns in w.samples if span[0] <= stamp <= span[1] - 1.0
              and ns not in recorded and cc.overlap_s(stamp, stamp + 1e-6, down) == 0.0]
    seen = {ns for _, _, ns in w.samples}
    lo, hi = int(span[0] * 1e9), int((span[1] - 1.0) * 1e9)
    unseen = sum(1 for ns in recorded if lo <= ns <= hi and ns not in seen)
    unexplained = []
    for a, b in holes:
        left = (b - a) - cc.overlap_s(a, b, explained)
        if left > cf.GAP_MIN_S:       # batches this process received that the bags lack
            got = sum(a < stamp < b for _, stamp, _ in w.samples)
            unexplained.append({"from": a, "to": b, "s": left, "received_meanwhile": got})
    return {"batches": int(stamps.size), "broken": broken, "gaps": len(holes),
            "holes": holes, "outages": outages, "missed": missed, "unseen": unseen,
            "received": sum(1 for _, stamp, _ in w.samples if span[0] <= stamp <= span[1]),
            "kills": kills, "unexplained": unexplained,
            "span_s": float(stamps[-1] - stamps[0]) if stamps.size else 0.0}


def evaluate(script, graph, watcher, checker, bags: Path, cfg: dict, stats: dict,
             alive: dict, codes: dict, t_begin: float, t_end: float) -> dict:
    """Every number the table shows."""
    budget_w = (cfg["budget"]["breaker_a"] * cfg["budget"]["voltage_v"]
                * cfg["budget"]["derating"])
    faults = script.faults
    for k, f in enumerate(faults):
        t_next = faults[k + 1].t if k + 1 < len(faults) else t_end
        cf.judge(f, t_next, watcher, checker, graph.starts, budget_w)
    to_wall = time.time() - time.monotonic()
    windows = cc.over_budget_windows([s for s in checker.samples if s.t >= t_begin],
                                     budget_w)
    span = (t_begin + to_wall, t_end + to_wall)
    events = [{"fault": f.label, "target": f.target, "at_s": round(f.t - script.t0, 3),
               "detected_s": None if f.detected is None else round(f.detected - f.t, 3),
               "corrected_s": None if f.corrected is None else round(f.corrected - f.t, 3),
               "how": f.how, "info": f.info} for f in faults]
    return {"budget_w": budget_w, "faults": faults, "windows": windows, "stats": stats,
            "alive": alive, "codes": codes, "events": events, "graph": graph,
            "bags": _bags(script, graph, watcher, bags, span, to_wall), "checker": checker,
            "t0": script.t0, "span_s": t_end - t_begin}


def _p(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "-"


def _fault_rows(faults) -> list[str]:
    rows = ["| fault | n | detected | to detection p50 / max (s) | corrected "
            "| to correction p50 / max (s) | detected by |", "|---|---|---|---|---|---|---|"]
    groups: dict[str, list] = {}
    for f in faults:
        groups.setdefault(f.label, []).append(f)
    for label in sorted(groups):
        fs = groups[label]
        det = [f.detected - f.t for f in fs if f.detected is not None]
        cor = [f.corrected - f.t for f in fs if f.corrected is not None]
        how = sorted({h for f in fs for h in f.how.split(" / ")})
        rows.append(f"| {label} | {len(fs)} | {len(det)} | {_p(det, 50)} / "
                    f"{max(det, default=math.nan):.2f} | {len(cor)} | {_p(cor, 50)} / "
                    f"{max(cor, default=math.nan):.2f} | {'; '.join(how)} |")
    return rows


def report(r: dict, args) -> tuple[str, bool]:
    """The markdown table and whether every Done-when criterion holds."""
    faults, windows, bags = r["faults"], r["windows"], r["bags"]
    longest = max((w.length_s for w in windows), default=0.0)
    total = sum(w.length_s for w in windows)
    trips = int(r["stats"].get("breaker_trips", -1))
    detected = sum(f.detected is not None for f in faults)
    lost = max((k["lost_s"] for k in bags["kills"]), default=0.0)
    alive = sum(r["alive"].values())
    checks = [
        ("device-held sum above budget, longest window", f"{longest:.2f} s",
         f"<= {MAX_WINDOW_S:g} s", longest <= MAX_WINDOW_S),
        ("device-held sum above budget, in all", f"{total:.2f} s in {len(windows)} windows "
         f"of {r['span_s']:.0f} s", "-", True),
        ("breaker trips (simulator)", str(trips), "0", trips == 0),
        ("faults detected", f"{detected} of {len(faults)}", "all", detected == len(faults)),
        ("lost from the bags per recorder kill, max", f"{lost:.2f} s "
         f"({len(bags['kills'])} kills)", f"<= {MAX_LOST_S:g} s", lost <= MAX_LOST_S),
        ("bags unreadable", str(len(bags["broken"])), "0", not bags["broken"]),
        ("nodes running at the end", f"{alive} of {len(r['alive'])}", "all",
         alive == len(r["alive"])),
    ]
    ok = all(c[3] for c in checks)
    ck = r["checker"]
    cmd = " ".join(["benchmarks/bench_chaos.py", *map(shlex.quote, sys.argv[1:])])
    lines = [f"Chaos soak: `{cmd}` (seed {args.seed}): {len(faults)} faults over "
             f"{r['span_s'] / 60:.1f} min; the checker read every outlet register and BMC "
             f"limit {len(ck.samples)} times (mean period "
             f"{np.mean(np.diff([s.t for s in ck.samples])) if len(ck.samples) > 1 else 0:.3f}"
             f" s, {ck.read_failures} failed reads); budget {r['budget_w']:.0f} W.", "",
             "| criterion | measured | limit | ok |", "|---|---|---|---|"]
    lines += [f"| {n} | {m} | {lim} | {'yes' if good else '**NO**'} |"
              for n, m, lim, good in checks]
    lines += ["", *_fault_rows(faults), ""]
    lines += ["| recorder kill | at (s) | lost from the bags (s) | recorder down (s) |",
              "|---|---|---|---|"]
    for k in bags["kills"]:
        down = "-" if k["down_s"] is None else f"{k['down_s']:.2f}"
        lines.append(f"| {k['signal']} | {k['at_s']:.1f} | {k['lost_s']:.2f} | {down} |")
    lines += ["", f"Bags: {bags['batches']} power_samples batches over {bags['span_s']:.0f} s, "
              f"{bags['gaps']} gaps over {cf.GAP_MIN_S:g} s, unexplained by a sensor outage or "
              f"a recorder kill: {len(bags['unexplained'])} "
              f"({sum(u['s'] for u in bags['unexplained']):.2f} s). Of the {bags['received']} "
              f"batches this process's own subscriber received, {len(bags['missed'])} are in no "
              f"bag (outside the recorder's downtime); the bags hold {bags['unseen']} that it "
              f"did not receive (power_samples is best effort: both lose single batches)."]
    lines += _window_rows(windows, faults, r["t0"])
    lines += _exit_rows(r["graph"])
    return "\n".join(lines), ok


def _window_rows(windows, faults, t0: float) -> list[str]:
    if not windows:
        return []
    out = ["", "| above budget at (s) | for (s) | peak held W | after fault |",
           "|---|---|---|---|"]
    for w in sorted(windows, key=lambda w: -w.length_s)[:8]:
        before = [f for f in faults if f.t <= w.start]
        cause = f"{before[-1].label} {before[-1].target}" if before else "-"
        out.append(f"| {w.start - t0:.1f} | {w.length_s:.2f} | {w.peak_w:.0f} | {cause} |")
    return out


def _exit_rows(graph) -> list[str]:
    sigint = [k for k in graph.kills if k["signal"] == "SIGINT"]
    if not sigint:
        return []
    slow = max(k["exit_t"] - k["t"] for k in sigint)
    bad = [f"{k['node']} (code {k['code']}{', SIGKILLed' if k['forced'] else ''})"
           for k in sigint if k["code"] != 0 or k["forced"]]
    return ["", f"SIGINT exits: {len(sigint)}, slowest {slow:.2f} s; not clean: "
            f"{', '.join(bad) or 'none'}."]
