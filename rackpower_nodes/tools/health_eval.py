"""``rackpower-health-eval``: the health model on held-out faults, fault-free weeks and BSC.

    nice -n 10 rackpower-health-eval --presets office,ai,mixed --days 4 --faults-per-day 3 \\
        --clean-weeks 2 --bsc ../shared/data/bsc-power --out /tmp/health-eval

Protocol (docs/health.md):

- learning: per preset, ``HealthModel.fit`` on ``--train-days`` fault-free simulated days
  of that preset (seeds ``--train-seed``, +1, ..., all in the tuning range 100-199; default
  one day);
- held-out fault days: seeds ``--seed``, ``--seed``+1, ... (>= 1000, never used for tuning),
  each injecting ``--faults-per-day`` faults drawn by ``sim.faults.plan.random_faults``
  (distinct components, onsets in ``--onset-h``, default 1-8 h, the fault classes in turn,
  continued from one preset to the next), monitored ``--hours`` h (a faulty component until
  it would trip or stop). Per fault class and preset, and pooled: injected, detected %,
  median and p90 delay from onset to the first ``fault`` verdict on the component, median
  lead time before it would trip or stop (faults that never do: none), right cause % and
  sensor-vs-component right % (of the detected, from that first fault verdict). A
  transition into fault on a component before its onset, or on a clean component, is a
  false alarm;
- fault-free weeks: ``--clean-weeks`` runs per preset of 7 held-out days (seeds from
  ``--seed`` + 5000) monitored one after another by the same monitor: false alarms
  (transitions into fault) per rack-week;
- BSC traces (``--bsc``): each server a rack component, its workloads in sequence (no
  reference meter); learned on its first ``--bsc-train`` workloads, monitored over the rest:
  false alarms per component-week and per rack-week (the servers as one rack).

Every frame is also watched by the no-training baseline (the same monitor without a
model: its physical checks only; ``--no-baseline`` skips it). The monitor is fed
``--chunk-s`` seconds of rows at a time (delays are known to that resolution). LightGBM
runs on one thread (the health model's own setting). Same arguments, same tables.
Markdown on stdout (and ``OUT/health_eval.md``), everything in ``OUT/health_eval.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rackpower_nodes.core.forecast.metrics import format_table
from rackpower_nodes.core.health import HealthFrame
from rackpower_nodes.tools.health_eval_data import (
    FaultMark, bsc_frames, day_kinds, draw_faults, fault_marks, replay, row_spacing, shifted,
    sim_frame, sim_start)
from rackpower_nodes.tools.health_eval_metrics import alarm_row, class_rows, score_day

_log = logging.getLogger("rackpower_health_eval")

PRESETS = ("office", "ai", "mixed")
DEFAULT_BSC = Path("../shared/data/bsc-power")
CLEAN_SEED_OFFSET = 5000
CLASS_COLS = ["preset", "fault", "injected", "detected_pct", "delay_med_min", "delay_p90_min",
              "lead_med_h", "cause_pct", "sensor_pct", "met", "causes_named"]
ALARM_COLS = ["set", "preset", "detector", "runs", "rack_weeks", "false_alarms",
              "per_rack_week", "causes"]
BSC_COLS = ["server", "detector", "trained_on", "monitored_h", "false_alarms",
            "per_component_week", "causes"]
LEARNED, BASELINE = "learned", "checks only"


class CliError(Exception):
    """A command-line problem a person can fix; printed without a traceback."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="rackpower-health-eval",
                                description=__doc__.split("\n")[0],
                                epilog="\n".join(__doc__.split("\n")[4:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="office,ai,mixed",
                   help="comma-separated simulator presets (default office,ai,mixed)")
    p.add_argument("--days", type=int, default=4, help="held-out fault days per preset")
    p.add_argument("--faults-per-day", type=int, default=3, help="faults injected per day")
    p.add_argument("--clean-weeks", type=int, default=2,
                   help="fault-free 7-day runs per preset (0: none)")
    p.add_argument("--hours", type=float, default=24.0,
                   help="hours per simulated day (training, fault and clean days; default 24)")
    p.add_argument("--onset-h", default="1,8",
                   help="FROM,TO: fault onsets are drawn in this window, h (default 1,8)")
    p.add_argument("--seed", type=int, default=1000,
                   help="first held-out seed (>= 1000; default 1000)")
    p.add_argument("--train-seed", type=int, default=100,
                   help="seed of the (first) fault-free training day (100-199; default 100)")
    p.add_argument("--train-days", type=int, default=1,
                   help="fault-free training days, seeds --train-seed, +1, ... (default 1)")
    p.add_argument("--chunk-s", type=float, default=60.0,
                   help="seconds of rows per monitor update (default 60)")
    p.add_argument("--bsc", type=Path, nargs="?", const=DEFAULT_BSC, default=None,
                   help=f"also the BSC traces (folder; default {DEFAULT_BSC}); skipped with a "
                        "message when absent")
    p.add_argument("--bsc-train", type=int, default=1,
                   help="BSC: workloads per server to learn on (default 1, the first)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the no-training baseline (the monitor without a model)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for health_eval.md and health_eval.json")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    args.preset_list = [x.strip() for x in args.presets.split(",") if x.strip()]
    bad = [x for x in args.preset_list if x not in PRESETS]
    if bad or not args.preset_list:
        raise CliError(f"--presets {args.presets!r}: expected some of {', '.join(PRESETS)}")
    for flag, value, low in (("--days", args.days, 0), ("--faults-per-day",
                             args.faults_per_day, 1), ("--clean-weeks", args.clean_weeks, 0),
                             ("--bsc-train", args.bsc_train, 1), ("--train-days",
                             args.train_days, 1)):
        if value < low:
            raise CliError(f"{flag} {value}: expected an integer >= {low}")
    if not (math.isfinite(args.hours) and args.hours > 0):
        raise CliError(f"--hours {args.hours}: expected > 0")
    if args.seed < 1000:
        raise CliError(f"--seed {args.seed}: held-out seeds start at 1000 (100-199 tune)")
    if not (100 <= args.train_seed and args.train_seed + args.train_days - 1 <= 199):
        raise CliError(f"--train-seed {args.train_seed} --train-days {args.train_days}: "
                       "expected tuning seeds, 100-199")
    if not (math.isfinite(args.chunk_s) and args.chunk_s > 0):
        raise CliError(f"--chunk-s {args.chunk_s}: expected > 0 s")
    try:
        lo, hi = (float(x) for x in args.onset_h.split(","))
    except ValueError:
        raise CliError(f"--onset-h {args.onset_h!r}: expected FROM,TO in hours") from None
    if not 0 <= lo < hi < args.hours:
        raise CliError(f"--onset-h {args.onset_h!r}: expected 0 <= FROM < TO < --hours "
                       f"({args.hours:g})")
    args.onset_s = (lo * 3600.0, hi * 3600.0)
    return args


class Harness:
    """Learning and monitoring for one run of the CLI (the health model's classes are
    imported here, so that a bad argument is named before they load). Every frame is watched
    by the learned model's monitor and, unless ``--no-baseline``, by the no-training baseline:
    the same monitor without a model (its physical checks only)."""

    def __init__(self, args: argparse.Namespace):
        from rackpower_nodes.core.health.baseline import HealthModel
        from rackpower_nodes.core.health.config import HealthConfig
        from rackpower_nodes.core.health.monitor import HealthMonitor

        self.args, self.config = args, HealthConfig()
        self._model, self._monitor = HealthModel, HealthMonitor
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        if self.args.verbose:
            print(f"[{time.monotonic() - self.t0:6.0f} s] {text}", file=sys.stderr, flush=True)

    def fit(self, frames, what: str):
        """The model learned on ``frames``; CliError naming ``what`` they are when they are
        too short to learn on."""
        from rackpower_nodes.core.health import HealthModelError

        try:
            return self._model.fit(list(frames), self.config)
        except HealthModelError as exc:
            raise CliError(f"cannot learn on {what}: {exc}") from exc

    def watch(self, model, frames: Iterable[HealthFrame]) -> dict[str, list[FaultMark]]:
        """Fault marks per detector of one monitor each over ``frames`` one after another
        (an iterable: one frame is held at a time)."""
        monitors, streams = {}, {}
        for f in frames:
            if not monitors:
                monitors = {LEARNED: self._monitor(f.names, f.kinds, model, self.config)}
                if self.args.baseline:
                    monitors[BASELINE] = self._monitor(f.names, f.kinds, None, self.config)
                streams = {k: [] for k in monitors}
            for k, mon in monitors.items():
                streams[k] += replay(mon, f, self.args.chunk_s)
        return {k: fault_marks(v) for k, v in streams.items()}


def _week(preset: str, seeds: Sequence[int], hours: float) -> Iterator[HealthFrame]:
    """Fault-free days of ``seeds`` one after another (day d shifted to start d days later)."""
    first = None
    for d, seed in enumerate(seeds):
        frame, _ = sim_frame(preset, seed, hours)
        first = frame.t_unix[0] if first is None else first
        yield shifted(frame, first + d * hours * 3600.0 - frame.t_unix[0])


def run_preset(h: Harness, preset: str) -> tuple[list, list[dict]]:
    """Fault-day outcomes (both detectors) and false-alarm rows of one preset."""
    a = h.args
    if not (a.days or a.clean_weeks):
        return [], []
    seeds = range(a.train_seed, a.train_seed + a.train_days)
    model = h.fit([sim_frame(preset, s, a.hours)[0] for s in seeds],
                  f"--train-days {a.train_days} x --hours {a.hours:g}")
    h.say(f"{preset}: learned on seeds {_seeds(seeds)} ({a.train_days} x {a.hours:g} h)")
    outcomes, alarms, rack_s = [], {}, 0.0
    for day in range(a.days):
        seed = a.seed + day
        turn = a.preset_list.index(preset) * a.days + day    # classes continue over presets
        faults = draw_faults(preset, seed, day_kinds(turn, a.faults_per_day), a.onset_s)
        frame, start = sim_frame(preset, seed, a.hours, faults)
        end = float(frame.t_unix[-1])
        for det, marks in h.watch(model, [frame]).items():
            got, false = score_day(faults, marks, start, end, preset, seed, det)
            outcomes += got
            alarms.setdefault(det, []).extend(false)
            h.say(f"{preset} seed {seed} {det}: " + ", ".join(
                f"{o.kind}@{o.component} " + (f"{o.delay_s / 60:.0f} min {o.cause}"
                                              if o.detected else "missed") for o in got)
                  + f"; {len(false)} false alarms" + _where(false, start))
        rack_s += a.hours * 3600.0
    rows = [alarm_row("fault days", v, rack_s, preset=preset, detector=det, runs=a.days,
                      which=[f"{m.component} {m.cause}" for m in v])
            for det, v in alarms.items()]
    clean, clean_s, at = {}, 0.0, {}
    week_start = sim_start(preset)
    for week in range(a.clean_weeks):
        seeds = [a.seed + CLEAN_SEED_OFFSET + 7 * week + d for d in range(7)]
        for det, marks in h.watch(model, _week(preset, seeds, a.hours)).items():
            clean.setdefault(det, []).extend(m for m in marks if m.new)
            at.setdefault(det, []).extend(   # hours into the week (the JSON keeps them)
                round((m.t_unix - week_start) / 3600.0, 2) for m in marks if m.new)
            h.say(f"{preset} clean week {week} (seeds {seeds[0]}-{seeds[-1]}) {det}: "
                  f"{sum(m.new for m in marks)} false alarms"
                  + _where([m for m in marks if m.new], week_start))
        clean_s += 7 * a.hours * 3600.0
    rows += [alarm_row("fault-free weeks", v, clean_s, preset=preset, detector=det,
                       runs=a.clean_weeks, at_h=at[det],
                       which=[f"{m.component} {m.cause}" for m in v])
             for det, v in clean.items()]
    return outcomes, rows


def _seeds(seeds: range) -> str:
    """``100`` or ``100-102``."""
    return str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"


def _where(marks: Sequence, start_unix: float) -> str:
    """`` (component cause at h, ...)`` of false alarms, for the progress lines."""
    if not marks:
        return ""
    return " (" + ", ".join(f"{m.component} {m.cause} at {(m.t_unix - start_unix) / 3600:.1f} h"
                            for m in marks) + ")"


def run_bsc(h: Harness) -> tuple[list[dict], list[dict], str]:
    """Per BSC server and detector: learned on its first --bsc-train workloads, monitored
    over the rest; and the rack rows (the servers as one rack)."""
    try:
        servers = bsc_frames(h.args.bsc)
    except FileNotFoundError as exc:
        return [], [], f"BSC traces skipped: {exc}"
    k = h.args.bsc_train
    rows, alarms, monitored = [], {}, []
    for srv in servers:
        if len(srv.frames) <= k:
            rows.append({"server": srv.name, "trained_on": f"all {len(srv.frames)} workloads",
                         "monitored_h": 0.0, "false_alarms": 0, "causes": "not monitored"})
            continue
        try:
            model = h.fit(srv.frames[:k], f"{srv.name}'s first {k} workload(s)")
        except CliError as exc:                 # the other servers still count
            rows.append({"server": srv.name, "trained_on": ", ".join(srv.workloads[:k]),
                         "monitored_h": 0.0, "false_alarms": 0,
                         "causes": f"not monitored: {exc}"})
            continue
        seconds = sum(len(f) * row_spacing(f.t_unix) for f in srv.frames[k:])
        monitored.append(seconds)
        for det, marks in h.watch(model, srv.frames[k:]).items():
            new = [m for m in marks if m.new]
            alarms.setdefault(det, []).extend(new)
            row = alarm_row("", new, seconds)
            rows.append({"server": srv.name, "detector": det,
                         "trained_on": ", ".join(srv.workloads[:k]),
                         "monitored_h": seconds / 3600.0, "false_alarms": len(new),
                         "per_component_week": row["per_rack_week"], "causes": row["causes"]})
            h.say(f"BSC {srv.name} {det}: {len(new)} false alarms over {seconds / 3600:.1f} h")
    if not monitored:
        return rows, [], "BSC traces: no server with more workloads than --bsc-train"
    rack_s = sum(monitored) / len(monitored)
    return rows, [alarm_row("BSC traces (servers as one rack)", v, rack_s, preset="bsc",
                            detector=det, runs=len(monitored))
                  for det, v in alarms.items()], ""


def md_table(rows: Sequence[dict], cols: Sequence[str], fmt: str) -> str:
    """Markdown table; a figure that does not exist (NaN: nothing detected, no failure) is
    written n/a."""
    return format_table([{k: ("n/a" if isinstance(v, float) and math.isnan(v) else v)
                          for k, v in r.items()} for r in rows], cols, fmt)


def report(args, outcomes, alarm_rows, bsc_rows, bsc_note, wall_s, argv) -> tuple[str, dict]:
    cmd = shlex.join(["rackpower-health-eval", *argv])
    classes = class_rows([o for o in outcomes if o.detector == LEARNED], args.preset_list)
    base = class_rows([o for o in outcomes if o.detector == BASELINE], [])
    lines = [f"# rackpower-health-eval ({wall_s:.0f} s)", "", "```sh", cmd, "```", ""]
    if classes:
        lines += [f"Held-out fault days: {args.days} per preset x {args.faults_per_day} "
                  f"faults, {args.hours:g} h, seeds {args.seed}+; learned on seeds "
                  f"{_seeds(range(args.train_seed, args.train_seed + args.train_days))}. "
                  "Delays from onset to the first fault verdict (min); "
                  "lead before the fault would trip/stop the component (h, faults that do); "
                  "cause and sensor-vs-component % of the detected; met: detected >= 95, "
                  "cause >= 80, sensor >= 90.", ""]
        lines += [f"Learned model ({LEARNED}):", "",
                  md_table(classes, CLASS_COLS, "{:.1f}"), ""]
    if base:
        lines += [f"No-training baseline ({BASELINE}: the monitor without a model, its "
                  "physical checks), all presets:", "",
                  md_table(base, CLASS_COLS, "{:.1f}"), ""]
    if alarm_rows:
        lines += ["False alarms (transitions into fault) per rack-week:", "",
                  md_table(alarm_rows, ALARM_COLS, "{:.2f}"), ""]
    if bsc_rows:
        lines += ["BSC traces, per server (no known faults; every transition into fault is "
                  "a false alarm):", "", md_table(bsc_rows, BSC_COLS, "{:.2f}"), ""]
    if bsc_note:
        lines += [bsc_note, ""]
    data = {"command": cmd, "args": vars(args), "classes": classes, "baseline_classes": base,
            "false_alarms": alarm_rows, "bsc": bsc_rows,
            "faults": [o.as_dict() for o in outcomes], "wall_s": wall_s}
    return "\n".join(lines), data


def _jsonable(x):
    """NaN and inf as null, paths as strings (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    return str(x) if isinstance(x, Path) else x


def write_report(out: Path, stem: str, text: str, data: dict) -> None:
    """``out/stem.md`` (the tables) and ``out/stem.json`` (strict JSON), said on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(_jsonable(data), indent=1) + "\n")
    print(f"written: {out / f'{stem}.md'}, {out / f'{stem}.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _evaluate(parse_args(argv), argv)
    except CliError as exc:        # a bad argument, or too little to learn on
        print(f"rackpower-health-eval: {exc}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace, argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        _log.setLevel(logging.INFO)
    h = Harness(args)
    outcomes, alarm_rows = [], []
    for preset in args.preset_list:
        got, rows = run_preset(h, preset)
        outcomes += got
        alarm_rows += rows
    bsc_rows, bsc_note = [], ""
    if args.bsc is not None:
        bsc_rows, totals, bsc_note = run_bsc(h)
        alarm_rows += totals
    text, data = report(args, outcomes, alarm_rows, bsc_rows, bsc_note,
                        time.monotonic() - h.t0, argv)
    print(text)
    if args.out is not None:
        write_report(args.out, "health_eval", text, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
