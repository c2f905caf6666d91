"""Realistic faults to inject: :func:`random_faults` draws them, :func:`parse_fault` reads the
command line's ``KIND:COMPONENT:ONSET[:GROWTH[:MAGNITUDE]]``.

:data:`RANGES` is the one table of what a drawn fault may be, per kind: its magnitude (what
it means: :mod:`.spec`), how long it takes to grow to it, the growth profiles, and how long
after full growth the component would trip or stop (``failure_s``; runaways and sensor
faults never stop the component). The ranges come from the physics and sources of
docs/rack-simulator.md ("Faults"), not from what a detector finds easy.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.core.health import FAULT_CLASSES
from rackpower_nodes.sim.faults.effects import ALLOWED_KINDS
from rackpower_nodes.sim.faults.spec import FaultSpec, FaultSpecError
from rackpower_nodes.sim.rack_sim import PRESETS, load_config, preset_config

__all__ = ["RANGES", "FaultRange", "draw_fault", "parse_fault", "random_faults"]

H = 3600.0


@dataclass(frozen=True)
class FaultRange:
    """What one kind of drawn fault may be: magnitude in ``magnitude`` (either sign when
    ``signed``), growth time in h, profiles, hours from full growth to failure (None: never)."""

    magnitude: tuple[float, float]
    growth_h: tuple[float, float]
    growths: tuple[str, ...]
    to_failure_h: tuple[float, float] | None
    signed: bool = False

    @property
    def typical(self) -> float:
        """The magnitude used when none is given (the range's middle)."""
        return 0.5 * (self.magnitude[0] + self.magnitude[1])


RANGES: Mapping[str, FaultRange] = {
    # 80 PLUS: a few % of efficiency lost from ageing capacitors and fans; the PSU's
    # over-temperature protection trips hours after
    "psu_efficiency": FaultRange((0.02, 0.08), (2.0, 12.0), ("linear", "exponential"),
                                 (1.0, 6.0)),
    # worn bearing / clogged filter: the fan controller spins up, power ~ speed^3
    "fan_wear": FaultRange((5.0, 25.0), (4.0, 16.0), ("linear", "exponential"), (2.0, 8.0)),
    # re-reads and re-seeks of a failing drive, until it is ejected from the array
    "disk_retries": FaultRange((0.5, 4.0), (1.0, 8.0), ("linear", "exponential", "step"),
                               (1.0, 6.0)),
    # a process spinning outside any job; it runs until someone kills it
    "runaway_process": FaultRange((0.1, 0.5), (0.0, 0.5), ("step", "linear"), None),
    # a relay's contacts chattering, or one cord of a dual-corded server dropping out,
    # until the relay fails open
    "outlet_dropout": FaultRange((1.0, 12.0), (1.0, 8.0), ("linear", "exponential"),
                                 (0.5, 4.0)),
    # Hall sensor offset drift (temperature, magnetisation), either sign
    "sensor_offset": FaultRange((3.0, 25.0), (1.0, 12.0), ("linear",), None, signed=True),
    # gain error (a burden resistor or reference drifting), either sign
    "sensor_gain": FaultRange((0.02, 0.10), (0.0, 6.0), ("step", "linear"), None, signed=True),
    # an ADC channel frozen: holds its last reading
    "sensor_stuck": FaultRange((0.0, 0.0), (0.0, 0.0), ("step",), None),
}


def random_faults(config_or_preset: str | Path | Mapping | object, seed: int,
                  kinds: Sequence[str] = FAULT_CLASSES, per_run: int = 1,
                  start_s: float = 2 * H, end_s: float = 18 * H) -> list[FaultSpec]:
    """``per_run`` faults on distinct components of the rack, onsets uniform in
    ``[start_s, end_s)`` s, each of a kind drawn from ``kinds`` that its component can have,
    sized from :data:`RANGES`. The same arguments give the same faults."""
    if isinstance(config_or_preset, str) and config_or_preset in PRESETS:
        config_or_preset = preset_config(config_or_preset)
    cfg = load_config(config_or_preset)
    unknown = [k for k in kinds if k not in FAULT_CLASSES]
    if unknown or not kinds:
        raise FaultSpecError(f"kinds: {list(kinds)}, expected some of {FAULT_CLASSES}")
    if not (0 <= start_s < end_s and math.isfinite(end_s)):
        raise FaultSpecError(f"start_s, end_s: {start_s}, {end_s}, expected 0 <= start < end")
    comps = [(c.name, c.kind) for c in cfg.components]
    if not 0 <= per_run <= len(comps):
        raise FaultSpecError(f"per_run: {per_run}, expected 0..{len(comps)} (one per "
                             f"component)")
    rng = np.random.default_rng([int(seed), 2_000_029])
    used: set[str] = set()
    out = []
    for _ in range(per_run):
        free = [(k, n) for k in kinds for n, ck in comps
                if n not in used and ck in ALLOWED_KINDS[k]]
        if not free:
            raise FaultSpecError(f"kinds: {list(kinds)}: no component left that can have them "
                                 f"({per_run} per run on {len(comps)} components)")
        kind = kinds[int(rng.integers(len(kinds)))]
        choices = [n for k, n in free if k == kind]
        if not choices:         # every component this kind can hit is taken: any other kind
            kind, name = free[int(rng.integers(len(free)))]
        else:
            name = choices[int(rng.integers(len(choices)))]
        used.add(name)
        out.append(draw_fault(kind, name, rng, start_s, end_s))
    return out


def draw_fault(kind: str, name: str, rng: np.random.Generator, start_s: float,
               end_s: float) -> FaultSpec:
    """A fault of ``kind`` on component ``name`` sized, grown and timed from :data:`RANGES`
    (onset uniform in ``[start_s, end_s)`` s), drawn from ``rng``."""
    r = RANGES[kind]
    magnitude = float(rng.uniform(*r.magnitude))
    if r.signed and rng.random() < 0.5:
        magnitude = -magnitude
    growth = r.growths[int(rng.integers(len(r.growths)))]
    growth_s = 0.0 if growth == "step" else float(rng.uniform(*r.growth_h)) * H
    onset = float(rng.uniform(start_s, end_s))
    failure = (math.inf if r.to_failure_h is None
               else onset + growth_s + float(rng.uniform(*r.to_failure_h)) * H)
    return FaultSpec(kind, name, onset, growth_s, magnitude, failure, growth,
                     int(rng.integers(2**31)))


def parse_fault(text: str, unit_s: float = H) -> FaultSpec:
    """``KIND:COMPONENT:ONSET[:GROWTH[:MAGNITUDE]]`` with ONSET and GROWTH in units of
    ``unit_s`` s (hours by default); GROWTH defaults to 0 (a step), MAGNITUDE to the middle
    of the kind's range in :data:`RANGES`. Whether the component exists is checked where the
    fault is injected."""
    parts = text.split(":")
    if not 3 <= len(parts) <= 5:
        raise FaultSpecError(f"fault {text!r}: expected KIND:COMPONENT:ONSET[:GROWTH"
                             f"[:MAGNITUDE]]")
    kind, name = parts[0], parts[1]
    if kind not in FAULT_CLASSES:
        raise FaultSpecError(f"fault {text!r}: kind {kind!r}, expected one of {FAULT_CLASSES}")
    fields = ("onset", "growth", "magnitude")
    values = []
    for field, raw in zip(fields, parts[2:]):
        try:
            values.append(float(raw))
        except ValueError:
            raise FaultSpecError(f"fault {text!r}: {field} {raw!r} is not a number") from None
    onset = values[0] * unit_s
    growth_s = values[1] * unit_s if len(values) > 1 else 0.0
    magnitude = values[2] if len(values) > 2 else RANGES[kind].typical
    return FaultSpec(kind, name, onset, growth_s, magnitude,
                     growth="linear" if growth_s > 0 else "step")
