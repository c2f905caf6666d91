"""Each rack's simulated day, aggregated to the room loop's step: means and peaks per step.

The simulator produces 10 Hz power per component (`sim.rack_sim.generate`); a room of 20+
racks over a day at 10 Hz is too much to step through the controllers, so each rack's demand
is aggregated to the loop's step (1 s by default): the mean (its energy) and the peak (what a
10 Hz controller would have to cover) of every component in every step. Racks are generated
one at a time and only the aggregates are kept (float32), optionally cached as ``.npz`` in a
folder, keyed by preset, seed, hours and step (a window of a cached run from hour 0 is cut
from it).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.sim.room.layout import Room, RoomRack

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RackDay:
    """One rack's demand per loop step: `mean_w` and `peak_w` (steps, components) W in the
    controller's component order, the step (s) and the first step's Unix time (s)."""

    mean_w: np.ndarray
    peak_w: np.ndarray
    step_s: float
    start_unix: float

    @property
    def steps(self) -> int:
        return self.mean_w.shape[0]


def aggregate(power_w: np.ndarray, rate_hz: float, step_s: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, peak) of `power_w` (samples, n) over whole steps of `step_s` s (float32);
    samples past the last whole step are dropped."""
    per = int(round(step_s * rate_hz))
    if per < 1 or abs(per - step_s * rate_hz) > 1e-6:
        raise ValueError(f"step_s = {step_s!r}: expected a whole number of samples at "
                         f"{rate_hz:g} Hz")
    steps = power_w.shape[0] // per
    block = np.asarray(power_w[:steps * per], dtype=np.float32).reshape(steps, per, -1)
    return block.mean(axis=1, dtype=np.float64).astype(np.float32), block.max(axis=1)


def rack_day(rack: RoomRack, hours: float, step_s: float = 1.0, from_h: float = 0.0,
             cache: Path | None = None) -> RackDay:
    """The rack's day (seed, preset) from hour `from_h` for `hours`, aggregated to `step_s`."""
    key = f"{rack.preset}-s{rack.seed}-h{from_h:g}+{hours:g}-step{step_s:g}.npz"
    if cache is not None:
        cached = _from_cache(cache, key, rack, hours, step_s, from_h)
        if cached is not None:
            return cached
    from rackpower_nodes.sim.rack_sim import generate

    data = generate(from_h + hours, seed=rack.seed, preset=rack.preset)
    missing = [n for n in rack.names if n not in data.names]
    if missing:
        raise ValueError(f"rack {rack.name} ({rack.preset}): components {missing} of its "
                         f"actuator config are not in the simulated rack ({data.names})")
    first = int(round(from_h * 3600 * data.rate_hz))
    cols = [data.names.index(n) for n in rack.names]
    mean, peak = aggregate(data.power_w[first:, cols], data.rate_hz, step_s)
    day = RackDay(mean, peak, float(step_s), data.start_unix + from_h * 3600.0)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / key, mean_w=mean, peak_w=peak, step_s=day.step_s,
                 start_unix=day.start_unix)
    return day


def _from_cache(cache: Path, key: str, rack: RoomRack, hours: float, step_s: float,
                from_h: float) -> RackDay | None:
    """The window from `key`, or cut from a cached run of the same rack from hour 0 that
    covers it; None when neither is there."""
    if (cache / key).is_file():
        with np.load(cache / key) as f:
            return RackDay(f["mean_w"], f["peak_w"], float(f["step_s"]),
                           float(f["start_unix"]))
    for path in sorted(cache.glob(f"{rack.preset}-s{rack.seed}-h0+*-step{step_s:g}.npz")):
        try:
            covered = float(path.name.split("+")[1].split("-step")[0])
        except ValueError:
            continue
        first = int(round(from_h * 3600 / step_s))
        count = int(round(hours * 3600 / step_s))
        if covered >= from_h + hours:
            with np.load(path) as f:
                return RackDay(f["mean_w"][first:first + count], f["peak_w"][first:first + count],
                               step_s, float(f["start_unix"]) + from_h * 3600.0)
    return None


def room_days(room: Room, hours: float, step_s: float = 1.0, from_h: float = 0.0,
              cache: Path | None = None, progress: Callable[[str], None] | None = None
              ) -> dict[str, RackDay]:
    """Every rack's `rack_day`, by rack name (the same length and start for all)."""
    out = {}
    for rack in room.racks:
        if progress is not None:
            progress(f"simulating {rack.name} ({rack.preset}, seed {rack.seed})")
        out[rack.name] = rack_day(rack, hours, step_s, from_h, cache)
    lengths = {d.steps for d in out.values()}
    if len(lengths) != 1:
        raise ValueError(f"racks' days differ in length: {sorted(lengths)} steps")
    return out
