"""``rackpower-health-pool``: several ``rackpower-health-eval`` runs of one detector, pooled.

    rackpower-health-pool /tmp/ev17/out/faults /tmp/ev17/out/clean \\
        /tmp/ev18/out/faults /tmp/ev18/out/clean --out /tmp/pooled

One run puts 22-23 faults of a class on its fault days, so one miss moves the class by ~4.4
points; the issue's >= 95 % is judged better on every run of a detector together. Each
argument is a run's ``health_eval.json`` (or the folder that holds it). The runs must share
the protocol (training seeds and days, hours monitored, onsets, faults per day, the
monitor's chunk) and must not share a held-out day or week: a day counted twice would weigh
twice; the error names the files. Out: per fault class over every run (the learned
detector's faults): injected, detected with its 95 % Wilson interval, delays, right cause
and sensor-vs-component %, met (the issue's thresholds, ``DONE_WHEN``); detected per class
in each run; every run's false-alarm rows (fault days, fault-free weeks, BSC) and whether
each simulated set stays at or under 1 per rack-week. Markdown on stdout (and
``OUT/health_pool.md``), everything in ``OUT/health_pool.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from scipy.stats import binomtest

from rackpower_nodes.core.health import FAULT_CLASSES
from rackpower_nodes.tools.health_eval import (
    ALARM_COLS, BASELINE, CLASS_COLS, CLEAN_SEED_OFFSET, LEARNED, CliError, md_table, write_report)
from rackpower_nodes.tools.health_eval_metrics import FaultOutcome, class_rows

__all__ = ["PROTOCOL_KEYS", "Run", "load_run", "main", "pool"]

#: what must be the same in every pooled run (``args`` of its JSON)
PROTOCOL_KEYS = ("train_seed", "train_days", "hours", "onset_h", "faults_per_day", "chunk_s")
MAX_FALSE_PER_RACK_WEEK = 1.0
SIMULATED_SETS = ("fault days", "fault-free weeks")


class Run:
    """One ``health_eval.json``: its file, arguments, fault outcomes and false-alarm rows."""

    def __init__(self, path: Path, data: dict):
        self.path, self.args = path, data["args"]
        self.command = data.get("command", "")
        self.outcomes = [_outcome(d) for d in data["faults"]]
        self.alarms = data["false_alarms"]

    @property
    def label(self) -> str:
        a = self.args
        parts = []
        if a.get("days"):
            parts.append(f"days {a['seed']}-{a['seed'] + a['days'] - 1}")
        if a.get("clean_weeks"):
            first = a["seed"] + CLEAN_SEED_OFFSET
            parts.append(f"weeks {first}-{first + 7 * a['clean_weeks'] - 1}")
        return ", ".join(parts) or self.path.parent.name

    def days(self) -> set[tuple[str, int]]:
        return {(o.preset, o.seed) for o in self.outcomes}

    def week_seeds(self) -> set[int]:
        first = self.args["seed"] + CLEAN_SEED_OFFSET
        return set(range(first, first + 7 * int(self.args.get("clean_weeks") or 0)))


def _time(value, none: float) -> float:
    return none if value is None else float(value)


def _outcome(d: dict) -> FaultOutcome:
    """A fault of the JSON (null: no detection; a failure time null: it never fails)."""
    return FaultOutcome(d["preset"], int(d["seed"]), d["kind"], d["component"],
                        bool(d["is_sensor"]), float(d["onset_unix"]),
                        _time(d["failure_unix"], math.inf),
                        _time(d["detected_unix"], math.nan), d.get("cause") or "",
                        bool(d.get("sensor_fault")), d.get("detector", LEARNED))


def load_run(path: Path) -> Run:
    """The run of ``path`` (a health_eval.json or its folder); CliError naming what is
    missing or malformed."""
    file = path / "health_eval.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text())
    except OSError as exc:
        raise CliError(f"{file}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise CliError(f"{file}: not JSON ({exc})") from exc
    for key in ("args", "faults", "false_alarms"):
        if not isinstance(data, dict) or key not in data:
            raise CliError(f"{file}: no '{key}' (not a rackpower-health-eval output)")
    try:
        return Run(file, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(f"{file}: a fault or argument is malformed ({exc!r})") from exc


def _check(runs: Sequence[Run]) -> None:
    """The same protocol, no held-out day or week in two runs, and no file twice."""
    for key in PROTOCOL_KEYS:
        values = {str(r.args.get(key)) for r in runs}
        if len(values) > 1:
            raise CliError(f"the runs differ in {key}: " + ", ".join(
                f"{r.path} {r.args.get(key)!r}" for r in runs))
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            if a.path.resolve() == b.path.resolve():
                raise CliError(f"{a.path} is given twice")
            if shared := sorted(a.days() & b.days()):
                raise CliError(f"{a.path} and {b.path} share fault days {shared[:3]}: a day "
                               "pooled twice would weigh twice")
            if shared := sorted(a.week_seeds() & b.week_seeds()):
                raise CliError(f"{a.path} and {b.path} share fault-free week seeds "
                               f"{shared[0]}-{shared[-1]}")


def _wilson(hits: int, of: int) -> str:
    if not of:
        return "n/a"
    ci = binomtest(hits, of).proportion_ci(confidence_level=0.95, method="wilson")
    return f"{100 * ci.low:.1f}-{100 * ci.high:.1f}"


def pool(runs: Sequence[Run]) -> dict:
    """Pooled class rows (learned detector), detected per class per run, every run's
    false-alarm rows with their verdict, and whether all of it meets the issue."""
    _check(runs)
    learned = [o for r in runs for o in r.outcomes if o.detector == LEARNED]
    classes = [row for row in class_rows(learned, []) if row["preset"] == "all"]
    for row in classes:
        row["wilson95"] = _wilson(row["detected"], row["injected"])
    base = [o for r in runs for o in r.outcomes if o.detector == BASELINE]
    found = sum(o.detected for o in base)
    baseline = (f"{found} of {len(base)} detected ({100 * found / len(base):.1f} %)"
                if base else "not run")
    kinds = [k for k in FAULT_CLASSES if any(o.kind == k for o in learned)]
    per_run = []
    for r in runs:
        mine = [o for o in r.outcomes if o.detector == LEARNED]
        if mine:
            per_run.append({"run": r.label, **{k: "{}/{}".format(
                sum(o.detected for o in mine if o.kind == k),
                sum(1 for o in mine if o.kind == k)) for k in kinds}})
    alarms = []
    for r in runs:
        for row in r.alarms:
            rate = row.get("per_rack_week")            # null: nothing monitored
            if row["set"] not in SIMULATED_SETS or row["detector"] != LEARNED:
                verdict = "reported"
            else:
                verdict = ("n/a" if rate is None else
                           "yes" if rate <= MAX_FALSE_PER_RACK_WEEK else "no")
            alarms.append({"run": r.label, **row, "met": verdict})
    met = (bool(classes) and all(r["met"] == "yes" for r in classes)
           and any(a["set"] == "fault-free weeks" and a["met"] == "yes" for a in alarms)
           and all(a["met"] != "no" for a in alarms))
    return {"runs": [{"file": str(r.path), "label": r.label, "command": r.command}
                     for r in runs], "classes": classes, "per_run": per_run,
            "false_alarms": alarms, "kinds": kinds, "baseline": baseline, "met": met}


def report(pooled: dict, argv: Sequence[str]) -> str:
    lines = ["# rackpower-health-pool", "", "```sh",
             shlex.join(["rackpower-health-pool", *argv]), "```", "",
             "Runs:", ""] + [f"- {r['label']}: `{r['command']}`" for r in pooled["runs"]]
    lines += ["", "Learned model, every run's faults together (detected % with its 95 % "
              "Wilson interval; met: detected >= 95, cause >= 80, sensor >= 90):", "",
              md_table(pooled["classes"], ["fault", "injected", "detected", "detected_pct",
                                           "wilson95", *CLASS_COLS[4:]], "{:.1f}"), "",
              f"No-training baseline ({BASELINE}), every run's faults together: "
              f"{pooled['baseline']}.", "",
              "Detected per class, run by run:", "",
              md_table(pooled["per_run"], ["run", *pooled["kinds"]], "{}"), "",
              f"False alarms per rack-week, run by run (met: the simulated sets at or under "
              f"{MAX_FALSE_PER_RACK_WEEK:g}; BSC is reported):", "",
              md_table(pooled["false_alarms"], ["run", *ALARM_COLS, "met"], "{:.2f}"), "",
              "Against the issue's per-class targets and false-alarm rate, pooled: "
              + ("**met**" if pooled["met"] else "**not met**"), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="rackpower-health-pool", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path,
                   help="health_eval.json files of rackpower-health-eval, or their folders")
    p.add_argument("--out", type=Path, default=None, help="folder for the md and json")
    args = p.parse_args(argv)
    try:
        pooled = pool([load_run(path) for path in args.runs])
    except CliError as exc:
        print(f"rackpower-health-pool: {exc}", file=sys.stderr)
        return 2
    text = report(pooled, argv)
    print(text)
    if args.out is not None:
        write_report(args.out, "health_pool", text, pooled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
