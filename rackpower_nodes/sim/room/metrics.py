"""What one room run measured, and its table: trips, stranded power, throttling by class.

Energies in Wh, powers in W. Throttled energy counts each component's step mean above its
allocation in force (a lower bound of what a 10 Hz run would throttle) and, as the upper
bound, its step peak above it. A rack is held back by its budget in a step when one of its
components' step peak is above its allocation in force by more than max(1 % of the peak,
2 W) (the single-rack evaluation's tolerance) while the rack has allocated all of its budget
(but 0.1 %). Stranded power at room level is the room rating minus the allocations in
force (what the racks let their components draw), in the steps where some rack is held back
by its budget; the throttle-weighted figure weights each such step by the energy throttled
in it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rackpower_nodes.sim.pdu import PduModel

UNDER_TOL_FRAC = 0.01
UNDER_TOL_W = 2.0
LOAD_TOL_W = 1e-6


@dataclass
class RoomResult:
    """One mode at one margin over the run. Arrays are per step unless said otherwise."""

    mode: str
    margin: str
    steps: int
    step_s: float
    classes: tuple[int, ...]                       # priority classes, descending
    throttled_wh: np.ndarray                       # (classes,) 1 s means above allocations
    throttled_peak_wh: np.ndarray                  # (classes,) 1 s peaks above (upper bound)
    demand_wh: np.ndarray                          # (classes,)
    throttled_rack_steps: int = 0
    headroom_w: np.ndarray = field(default=None, repr=False)     # in force - served, room
    stranded_w: np.ndarray = field(default=None, repr=False)     # rating - in force, room
    throttled_w: np.ndarray = field(default=None, repr=False)    # held-back racks' shortfall
    held_back: np.ndarray = field(default=None, repr=False)      # some rack held back
    budget_throttled_wh: np.ndarray = field(default=None, repr=False)  # (classes,) held back
    level_names: tuple[str, ...] = ()
    level_kinds: tuple[str, ...] = ()              # rack / row / room
    level_max_served: np.ndarray = field(default=None, repr=False)   # / rating, per level
    level_max_alloc: np.ndarray = field(default=None, repr=False)    # / rating, per level
    over_rating_steps: int = 0       # steps with some level's allocations in force > rating
    trips: dict[str, int] = field(default_factory=dict)          # by level kind
    trip_levels: list[str] = field(default_factory=list)
    coordinator_steps: int = 0
    priority_violation_steps: int = 0
    violation_examples: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def row(self) -> dict:
        """The table's numbers as a flat dict (JSON-friendly)."""
        throttled = self.throttled_w
        some = self.held_back
        stranded = self.stranded_w
        weighted = (float(np.sum(stranded * throttled) / np.sum(throttled))
                    if np.sum(throttled) > 0 else math.nan)
        out = {"mode": self.mode, "margin": self.margin,
               "hours": self.steps * self.step_s / 3600.0,
               "throttled_wh": float(self.throttled_wh.sum()),
               "throttled_peak_wh": float(self.throttled_peak_wh.sum()),
               "demand_wh": float(self.demand_wh.sum()),
               "throttled_pct": 100.0 * float(self.throttled_wh.sum())
               / max(float(self.demand_wh.sum()), 1e-9),
               "headroom_mean_w": float(np.mean(self.headroom_w)),
               "stranded_when_throttled_w": (float(np.mean(stranded[some])) if some.any()
                                             else math.nan),
               "stranded_throttle_weighted_w": weighted,
               "throttled_steps_pct": 100.0 * float(np.mean(some)),
               "trips_rack": self.trips.get("rack", 0), "trips_row": self.trips.get("row", 0),
               "trips_room": self.trips.get("room", 0),
               "over_rating_steps": self.over_rating_steps,
               "priority_violation_pct": 100.0 * self.priority_violation_steps
               / max(self.coordinator_steps, 1),
               "wall_s": self.wall_s}
        for kind in ("rack", "row", "room"):
            mine = [i for i, k in enumerate(self.level_kinds) if k == kind]
            out[f"max_load_{kind}"] = (float(self.level_max_served[mine].max()) if mine
                                       else math.nan)
            out[f"max_alloc_{kind}"] = (float(self.level_max_alloc[mine].max()) if mine
                                        else math.nan)
        for k, p in enumerate(self.classes):
            out[f"throttled_wh_p{p}"] = float(self.throttled_wh[k])
            out[f"throttled_pct_p{p}"] = 100.0 * float(self.throttled_wh[k]) / max(
                float(self.demand_wh[k]), 1e-9)
            out[f"budget_throttled_wh_p{p}"] = float(self.budget_throttled_wh[k])
            out[f"budget_throttled_pct_p{p}"] = 100.0 * float(self.budget_throttled_wh[k]) / max(
                float(self.demand_wh[k]), 1e-9)
        return out


def breaker_trips(served_w: np.ndarray, ratings_w: np.ndarray, derating: float,
                  step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(trips, peak ratio) per level from its served power (steps, levels) W, each through
    the simulator's breaker (`sim.pdu.PduModel`: its thermal and magnetic trip curve) rated
    at the level's continuous rating / `derating`."""
    trips = np.zeros(served_w.shape[1], np.int64)
    peak = np.zeros(served_w.shape[1])
    for i, rating in enumerate(ratings_w):
        breaker = rating / derating
        pdu = PduModel([10.0 * breaker], breaker)
        pdu.apply_block(np.asarray(served_w[:, i:i + 1], dtype=np.float64), step_s)
        trips[i], peak[i] = pdu.trips, pdu.peak_ratio
    return trips, peak


COLUMNS = (
    ("mode", "mode", "{}"), ("margin", "margin", "{}"),
    ("throttled_wh", "throttled Wh", "{:.0f}"),
    ("throttled_peak_wh", "(peak bound) Wh", "{:.0f}"),
    ("throttled_pct", "throttled %", "{:.3f}"),
    ("headroom_mean_w", "headroom mean W", "{:.0f}"),
    ("stranded_when_throttled_w", "stranded while throttled W", "{:.0f}"),
    ("stranded_throttle_weighted_w", "stranded, throttle-weighted W", "{:.0f}"),
    ("throttled_steps_pct", "steps with a rack held back %", "{:.2f}"),
    ("trips_rack", "trips rack", "{}"), ("trips_row", "trips row", "{}"),
    ("trips_room", "trips room", "{}"),
    ("over_rating_steps", "steps over a rating", "{}"),
    ("priority_violation_pct", "priority-violation steps %", "{:.2f}"),
    ("max_load_rack", "max load/rating rack", "{:.3f}"),
    ("max_load_row", "row", "{:.3f}"), ("max_load_room", "room", "{:.3f}"),
)


def format_table(rows: Sequence[dict]) -> str:
    """The main table, one row per (mode, margin)."""
    lines = ["| " + " | ".join(c[1] for c in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS)
                     + " |")
    return "\n".join(lines)


def format_classes(rows: Sequence[dict], classes: Sequence[int]) -> str:
    """Throttled energy per priority class (Wh and % of the class's demand): all of it, and
    the part in rack-steps where the rack was held back by its budget."""
    head = " | ".join(f"class {p} Wh (%)" for p in classes)
    held = " | ".join(f"class {p}, held back by the budget, Wh (%)" for p in classes)
    lines = [f"| mode | margin | {head} | {held} |", "|---|---|" + "---|" * 2 * len(classes)]
    for row in rows:
        cells = [f"{row[f'{pre}throttled_wh_p{p}']:.0f} "
                 f"({row[f'{pre}throttled_pct_p{p}']:.3f})"
                 for pre in ("", "budget_") for p in classes]
        lines.append(f"| {row['mode']} | {row['margin']} | {' | '.join(cells)} |")
    return "\n".join(lines)
