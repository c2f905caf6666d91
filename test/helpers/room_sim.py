"""What the room simulation tests share: synthetic rack days (no simulator run) for a room.

- `flat_day(rack, level, steps)`: every component at floor + level x (ceiling - floor) of
  the rack's config, capped so the rack's total is `level` of the way from its floors to
  its rating (level 0: idle at the floors; 1: its whole rating);
- `shaped_day(rack, levels, ripple, steps, seed)`: the same with the level changing in
  blocks (`levels`, one per block) and a random ripple (fraction of the level's power) on
  every component, the peak a ripple above the mean.
"""
from __future__ import annotations

import numpy as np

from rackpower_nodes.sim.room import RackDay, RoomRack

START_UNIX = 1.7e9


def _target(rack: RoomRack, level: float) -> np.ndarray:
    floor = np.array([c.floor_w for c in rack.components])
    ceiling = np.array([c.ceiling_w for c in rack.components])
    room_above = max(rack.rating_w - floor.sum(), 0.0)
    span = ceiling - floor
    return floor + level * room_above * span / span.sum()


def flat_day(rack: RoomRack, level: float, steps: int, step_s: float = 1.0) -> RackDay:
    mean = np.tile(_target(rack, level), (steps, 1)).astype(np.float32)
    return RackDay(mean, mean.copy(), step_s, START_UNIX)


def shaped_day(rack: RoomRack, levels, ripple: float, steps: int, seed: int,
               step_s: float = 1.0) -> RackDay:
    rng = np.random.default_rng(seed)
    blocks = np.array_split(np.arange(steps), len(levels))
    mean = np.zeros((steps, len(rack.components)))
    for level, idx in zip(levels, blocks):
        mean[idx] = _target(rack, level)
    floor = np.array([c.floor_w for c in rack.components])
    ceiling = np.array([c.ceiling_w for c in rack.components])
    noise = ripple * mean * rng.random(mean.shape)
    peak = np.clip(mean + noise, floor, ceiling)
    return RackDay(mean.astype(np.float32), peak.astype(np.float32), step_s, START_UNIX)
