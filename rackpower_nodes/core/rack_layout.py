"""Where each component sits in the rack: its lowest rack unit and its height in units.

A 19-inch rack (EIA-310): 1U = 44.45 mm, 482.6 mm wide; the depth is the cabinet's (600 mm
here). Units count from 1 at the bottom. A component's slot comes from the configuration when
it gives one (`rack_u`, `height_u`); every other component is stacked in the order given
(the allocation's channel order), from the top of the rack down, into the free units, with a
height by its kind (:data:`DEFAULT_HEIGHT_U`; 1U when the kind is unknown). A rack too small
for them all grows upwards (the drawing gets taller); that is shown, never an error.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

U_M = 0.04445                 # one rack unit, m
RACK_WIDTH_M = 0.4826         # 19-inch mounting width, m
RACK_DEPTH_M = 0.600          # cabinet depth, m
DEFAULT_HEIGHT_U = {"server": 1, "switch": 1, "storage": 2}


class LayoutError(ValueError):
    """A placement that cannot be drawn (overlapping or outside the rack); names the ids."""


@dataclass(frozen=True)
class Slot:
    """A component's place: `rack_u` its lowest unit (1 = bottom), `height_u` units tall."""

    rack_u: int
    height_u: int

    @property
    def top_u(self) -> int:
        """The highest unit it occupies."""
        return self.rack_u + self.height_u - 1

    def z_range_m(self) -> tuple[float, float]:
        """(bottom, top) height above the rack's floor, m."""
        return (self.rack_u - 1) * U_M, self.top_u * U_M


@dataclass(frozen=True)
class Placement:
    """Configured slots, `fixed` by component id, and default heights by id."""

    units: int = 42
    fixed: Mapping[str, Slot] | None = None
    heights: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        if self.units < 1:
            raise LayoutError(f"units = {self.units}: expected >= 1")
        taken: dict[int, str] = {}
        for cid, slot in (self.fixed or {}).items():
            if slot.rack_u < 1 or slot.height_u < 1 or slot.top_u > self.units:
                raise LayoutError(f"{cid}: rack_u {slot.rack_u}, height_u {slot.height_u} is "
                                  f"outside a {self.units}U rack (units 1..{self.units})")
            for u in range(slot.rack_u, slot.top_u + 1):
                if u in taken:
                    raise LayoutError(f"{cid} and {taken[u]} both occupy U{u}")
                taken[u] = cid


def placement_from_config(units: int, names: Sequence[str], kinds: Sequence[str] = (),
                          rack_u: Sequence[int] = (), height_u: Sequence[int] = ()) -> Placement:
    """A Placement from per-component lists (each empty or one value per name; a rack_u of 0
    means "stack it", a height_u of 0 means "by its kind")."""
    heights = {}
    for i, cid in enumerate(names):
        h = height_u[i] if height_u else 0
        kind = kinds[i] if kinds else ""
        heights[cid] = h or DEFAULT_HEIGHT_U.get(kind, 1)
    fixed = {cid: Slot(rack_u[i], heights[cid]) for i, cid in enumerate(names)
             if rack_u and rack_u[i]}
    return Placement(units, fixed, heights)


def lay_out(ids: Sequence[str], placement: Placement) -> tuple[dict[str, Slot], int]:
    """({id: Slot} for every id, the rack's height in units): configured slots as given, the
    others stacked from the top down into the free units in the order of `ids`; where no
    free run of units is left, above the rack (the returned height then exceeds
    placement.units)."""
    fixed = dict(placement.fixed or {})
    heights = placement.heights or {}
    free = [u not in _occupied(fixed.values()) for u in range(placement.units + 1)]
    free[0] = False
    slots: dict[str, Slot] = {}
    top = placement.units
    for cid in ids:
        if cid in fixed:
            slots[cid] = fixed[cid]
            continue
        h = max(1, int(heights.get(cid, 1)))
        start = _highest_free_run(free, h)
        if start is None:                       # no room left: stack above the rack
            slots[cid] = Slot(top + 1, h)
            top += h
            continue
        for u in range(start, start + h):
            free[u] = False
        slots[cid] = Slot(start, h)
    return slots, top


def _occupied(slots) -> set[int]:
    return {u for s in slots for u in range(s.rack_u, s.top_u + 1)}


def _highest_free_run(free: list[bool], h: int) -> int | None:
    """The lowest unit of the highest run of `h` free units (free[u] for u in 1..units)."""
    for start in range(len(free) - h, 0, -1):
        if all(free[start:start + h]):
            return start
    return None
