"""``python -m rackpower_nodes.tools.room_eval``: a room of racks, shared vs fixed budgets.

    python -m rackpower_nodes.tools.room_eval --racks 24 --seed 5000 --hours 24 \
        --fracs 0.05,0.1,0.2 --json /tmp/room.json

Builds a room (``sim/room/layout.py``: racks of the office/ai/mixed presets, rack i with seed
--seed + i, rows of --racks-per-row under one room, oversubscribed), simulates every rack's
day and runs each mode of --modes at each reactive margin of --fracs (at least --min-w W) over
it (``sim/room/loop.py``): ``shared`` (the coordinator's global-priority division with
shrink-first grants every --period-s), ``fixed-guaranteed`` (each rack on its guaranteed
share) and ``fixed-proportional`` (the room rating split down the tree by rating). Prints
the table (trips at every level, steps over a rating, priority violations, stranded power at
room level, throttled energy), throttled energy by priority class, and the trade-off curve
(throttled energy against allocated headroom) of each mode. Held-out evaluation: seeds 5000+,
never tuned on; tuning: seeds 100-199.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.tradeoff import Curve, TradeoffError, matched_points, ratios_at
from rackpower_nodes.sim.room import format_classes, format_table, make_room, room_days
from rackpower_nodes.sim.room.loop import MODES, LoopSettings, run_room


class CliError(Exception):
    """A command-line problem a person can fix; printed without a traceback."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="room_eval", description=__doc__.split("\n")[0])
    p.add_argument("--racks", type=int, default=24, help="racks in the room (default 24)")
    p.add_argument("--racks-per-row", type=int, default=4, help="racks per row (default 4)")
    p.add_argument("--seed", type=int, default=5000,
                   help="room seed; rack i simulates seed + i (default 5000, held out)")
    p.add_argument("--presets", default=None,
                   help="comma-separated preset per rack (default: drawn by --seed, 40 %% "
                        "office, 30 %% ai, 30 %% mixed)")
    p.add_argument("--hours", type=float, default=24.0, help="hours simulated (default 24)")
    p.add_argument("--from-h", type=float, default=0.0,
                   help="start this many hours into each rack's day (default 0)")
    p.add_argument("--step-s", type=float, default=1.0,
                   help="rack control step, s: the 10 Hz demand aggregated to its means "
                        "and peaks (default 1)")
    p.add_argument("--period-s", type=float, default=5.0, help="coordinator period, s")
    p.add_argument("--lease-s", type=float, default=15.0, help="grant lease, s (default 15)")
    p.add_argument("--delays", default="1,2",
                   help="actuation delays in rack steps, cycled over the racks (default 1,2: "
                        "every other rack takes two steps)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated modes (default {','.join(MODES)})")
    p.add_argument("--fracs", default="0.1",
                   help="reactive margins to run every mode at (the racks' configs: 0.1)")
    p.add_argument("--min-w", type=float, default=10.0, help="smallest margin, W (default 10)")
    p.add_argument("--row-ratio", type=float, default=0.85,
                   help="row rating / sum of its racks' ratings (default 0.85)")
    p.add_argument("--room-ratio", type=float, default=0.95,
                   help="room rating / sum of its rows' ratings (default 0.95)")
    p.add_argument("--guaranteed-frac", type=float, default=0.7,
                   help="guaranteed share / rack rating (default 0.7)")
    p.add_argument("--cache", type=Path, default=None,
                   help="keep the racks' aggregated days here (.npz) for later runs")
    p.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    return p.parse_args(argv)


def _floats(text: str, what: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise CliError(f"{what} {text!r}: expected comma-separated numbers") from exc
    if not out or any(not x >= 0 for x in out):
        raise CliError(f"{what} {text!r}: expected numbers >= 0")
    return out


def curve_table(rows: Sequence[dict]) -> str:
    """Each mode's points, headroom ascending: throttled energy against allocated headroom."""
    lines = ["| mode | margin | headroom mean W | throttled Wh | throttled % |",
             "|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["mode"], r["headroom_mean_w"])):
        lines.append(f"| {row['mode']} | {row['margin']} | {row['headroom_mean_w']:.0f} | "
                     f"{row['throttled_wh']:.0f} | {row['throttled_pct']:.3f} |")
    return "\n".join(lines)


def matched_table(rows: Sequence[dict], reference: str = "shared") -> str:
    """`reference`'s throttled energy over each other mode's, read off both curves (lower
    envelopes, linear between points, never extrapolated: `core.tradeoff`) at three
    headrooms inside the overlap of the two curves' ranges."""
    def curve(mode):
        mine = [{"stranded_mean_w": r["headroom_mean_w"], "under_alloc_wh": r["throttled_wh"],
                 "under_alloc_pct": r["throttled_pct"]} for r in rows if r["mode"] == mode]
        return Curve.from_rows(mode, mine)

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    lines = [f"| {reference} over | matched headrooms W | {reference} Wh | other Wh | ratio |",
             "|---|---|---|---|---|"]
    for mode in (m for m in modes if m != reference):
        try:
            ref, other = curve(reference), curve(mode)
            points = matched_points([ref, other])
        except TradeoffError as exc:
            lines.append(f"| {mode} | {exc} | | | |")
            continue
        got = ratios_at(ref, other, points)
        lines.append(f"| {mode} | {', '.join(f'{x:.0f}' for x, *_ in got)} | "
                     f"{', '.join(f'{a:.0f}' for _, a, _, _ in got)} | "
                     f"{', '.join(f'{b:.0f}' for _, _, b, _ in got)} | "
                     f"{', '.join(f'{q:.2f}' for *_, q in got)} |")
    return "\n".join(lines)


def describe(room) -> str:
    tree = room.tree
    kinds = {}
    for r in room.racks:
        kinds[r.preset] = kinds.get(r.preset, 0) + 1
    rows = [lv for lv in tree.levels.values() if lv.name != tree.top]
    total = sum(r.rating_w for r in room.racks)
    return (f"{len(room.racks)} racks ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}"
            f"; seeds {room.racks[0].seed}-{room.racks[-1].seed}), {len(rows)} rows; rack "
            f"ratings sum {total / 1e3:.1f} kW, rows {sum(lv.rating_w for lv in rows) / 1e3:.1f}"
            f" kW, room {tree.levels[tree.top].rating_w / 1e3:.1f} kW; guaranteed shares sum "
            f"{sum(s.guaranteed_w for s in tree.racks.values()) / 1e3:.1f} kW")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    def say(msg: str) -> None:
        if args.verbose:
            print(msg, file=sys.stderr, flush=True)

    began = time.perf_counter()
    try:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise CliError(f"--modes {args.modes!r}: expected some of {', '.join(MODES)}")
        fracs = _floats(args.fracs, "--fracs")
        if not args.hours > 0 or not args.from_h >= 0:
            raise CliError(f"--hours {args.hours} / --from-h {args.from_h}: expected > 0 / >= 0")
        presets = ([x.strip() for x in args.presets.split(",")] if args.presets else None)
        try:
            delays = tuple(int(x) for x in args.delays.split(","))
        except ValueError as exc:
            raise CliError(f"--delays {args.delays!r}: expected whole numbers of steps") from exc
        settings = LoopSettings(args.period_s, args.lease_s, delays)

        def room_at(frac):
            return make_room(args.racks, args.seed, args.racks_per_row, args.row_ratio,
                             args.room_ratio, args.guaranteed_frac, presets=presets,
                             margin_frac=frac, margin_w=args.min_w)

        room = room_at(fracs[0])
        days = room_days(room, args.hours, args.step_s, args.from_h, args.cache, say)
        generated = time.perf_counter() - began
        results = []
        for frac in fracs:
            room = room_at(frac)
            for mode in modes:
                label = f"+{100 * frac:g} % (>= {args.min_w:g} W)"
                say(f"running {mode} at {label} ...")
                results.append(run_room(room, days, mode, label, settings, say))
                row = results[-1].row()
                say(f"{mode} {label}: throttled {row['throttled_wh']:.0f} Wh, headroom "
                    f"{row['headroom_mean_w']:.0f} W, trips {row['trips_rack']}/"
                    f"{row['trips_row']}/{row['trips_room']}, over a rating "
                    f"{row['over_rating_steps']}, {results[-1].wall_s:.0f} s")
                if args.json:       # every run as it ends: a long sweep keeps what it did
                    _write_json(args.json, [r.row() for r in results])
    except (CliError, ConfigError, OSError, ValueError) as exc:
        print(f"room_eval: {exc}", file=sys.stderr)
        return 2
    rows = [r.row() for r in results]
    held = "held out" if args.seed >= 5000 else "NOT held out (seed < 5000)"
    print(f"# room evaluation: {describe(room)}\n")
    print(f"{args.hours:g} h from hour {args.from_h:g} ({held}), rack step {args.step_s:g} s "
          f"(10 Hz demand as {args.step_s:g} s means and peaks), coordinator every "
          f"{args.period_s:g} s, lease {args.lease_s:g} s, actuation delays {args.delays} "
          "steps (cycled over the racks); controllers reactive\n")
    print(format_table(rows))
    print("\nthrottled energy by priority class (higher keeps its power longer):\n")
    print(format_classes(rows, results[0].classes))
    print("\ntrade-off: throttled energy against allocated headroom (in force - served):\n")
    print(curve_table(rows))
    if len(fracs) > 1:
        print("\nat matched headroom (each curve's lower envelope, linear between points):\n")
        print(matched_table(rows))
    for r in results:
        extra = f"; first violations: {r.violation_examples[:2]}" if r.violation_examples else ""
        trips = f"; tripped: {r.trip_levels}" if r.trip_levels else ""
        print(f"\n{r.mode} {r.margin}: {r.wall_s:.0f} s wall, {r.coordinator_steps} "
              f"coordinator steps{trips}{extra}", end="")
    print(f"\n\ndays simulated in {generated:.0f} s; total {time.perf_counter() - began:.0f} s")
    if args.json:
        _write_json(args.json, rows)
    return 0


def _write_json(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
