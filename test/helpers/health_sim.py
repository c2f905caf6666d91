"""Simulated days as `HealthFrame`s for the health model's tests (`sim_frame`, `fault_frame`).

Both go through the simulator's own :func:`~rackpower_nodes.sim.faults.health_frame` (board
summaries, a ~1 % reference meter, telemetry and the scheduler's ``job_running``).
"""
from __future__ import annotations

import functools

from rackpower_nodes.core.health import HealthFrame
from rackpower_nodes.sim.faults import FaultSpec
from rackpower_nodes.sim.faults.frames import health_frame
from rackpower_nodes.sim.rack_sim import generate


@functools.lru_cache(maxsize=8)
def sim_frame(hours: float, seed: int, preset: str = "mixed") -> HealthFrame:
    """A fault-free simulated run of ``preset`` as a frame (cached: treat it as read-only)."""
    return health_frame(generate(hours, seed=seed, preset=preset))


def fault_frame(hours: float, seed: int, faults: list[FaultSpec],
                preset: str = "mixed") -> HealthFrame:
    """A simulated run of ``preset`` with ``faults`` injected, as a frame."""
    return health_frame(generate(hours, seed=seed, preset=preset, faults=faults))
