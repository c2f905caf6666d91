"""The rack drawn as markers: numbers in, plain marker descriptions out (no ROS).

The `rack_view` node turns each :class:`Marker` into a `visualization_msgs/Marker` and
publishes them as one MarkerArray; `tools/render_rack_view.py` draws the same list with
matplotlib. Coordinates are metres in the rack's frame: x across the 19-inch width (0 at the
left rail), y front to back (0 at the front face, the fills stand just in front of it), z up
from the rack's floor (U1 at the bottom, :mod:`rackpower_nodes.core.rack_layout`).

Per component (marker id = its index in the current component list, one namespace per kind
of marker, so RViz updates every marker in place):

- ``shell``: the component's box at its rack units, faint, coloured by its state;
- ``fill``: a plate on the front face as wide as measured power / ceiling of the rack's width;
- ``allocation``: a black tick on that plate at allocation / ceiling;
- ``label``: text to the right, e.g. ``srv03 212 W / 250 W`` (measured / allocated);
- ``health``: a red outline (fault) or amber (watch) around the box; deleted while ok.

State colours (measured vs allocation): green below `near_fraction` of the allocation, amber
from there, red at `held_fraction` or above (held or throttled at its allocation), grey when
unmeasured or when the whole allocation is stale. The ``gauge`` namespace draws the breaker
budget beside the rack: a bar as tall as the rack for the scale's full value (the breaker
rating), the total allocated (blue) and measured (coloured as a component, against the
budget) as bars, a red line at the budget, and text with the numbers and the mode. The
``rack`` namespace holds the cabinet's outline and its title.

A marker list starts with a DELETEALL whenever the component list differs from the one
before (and on the first call), so markers of components gone do not linger in RViz.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rackpower_nodes.core.rack_layout import (
    RACK_DEPTH_M, RACK_WIDTH_M, U_M, Placement, Slot, lay_out)

GREEN = (0.16, 0.68, 0.29, 1.0)
AMBER = (1.0, 0.62, 0.0, 1.0)
RED = (0.86, 0.1, 0.1, 1.0)
GREY = (0.55, 0.55, 0.55, 1.0)
BLUE = (0.2, 0.42, 0.9, 1.0)
DARK = (0.15, 0.15, 0.15, 1.0)
STATE_COLOURS = {"under": GREEN, "near": AMBER, "held": RED, "unmeasured": GREY}

GAP_M = 0.003            # between stacked components, m
PLATE_M = 0.02           # depth of the fill plate in front of the rack face, m
LINE_M = 0.004           # line width, m
TEXT_M = 0.03            # text height, m
LABEL_X_M = RACK_WIDTH_M + 0.32    # label centre (text is centred on its position), m
GAUGE_X_M = -0.16        # gauge centre, m
MIN_SCALE_M = 0.001      # RViz refuses zero scales


@dataclass(frozen=True)
class Marker:
    """One marker. `shape`: cube, lines (pairs of `points`), text, delete (this ns/id) or
    delete_all. Cubes: `position` is the centre, `scale` the size; lines: `scale[0]` the
    width; text: `position` its centre, `scale[2]` its height. Colour: RGBA 0..1."""

    ns: str
    id: int
    shape: str
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    text: str = ""
    points: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True)
class ComponentPower:
    """One component as the allocation message has it, W (NaN: unknown)."""

    id: str
    measured_w: float
    allocated_w: float
    ceiling_w: float


@dataclass(frozen=True)
class Health:
    """A component's health verdict (ComponentHealth): state ok, watch or fault."""

    state: str
    cause: str = ""
    sensor_fault: bool = False


@dataclass(frozen=True)
class RackSnapshot:
    """The rack at one allocation. `age_s`: how old the allocation is when drawn (s);
    `stale`: too old to trust (everything grey)."""

    name: str
    mode: str
    mode_reason: str
    budget_w: float
    breaker_w: float
    total_allocated_w: float
    total_measured_w: float
    components: tuple[ComponentPower, ...]
    stale: bool = False
    age_s: float = 0.0

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.components)


def snapshot(name: str, mode: str, mode_reason: str, budget_w: float, breaker_w: float,
             ids: Sequence[str], measured_w, allocated_w, ceiling_w,
             stale: bool = False, age_s: float = 0.0) -> RackSnapshot:
    """A RackSnapshot from the allocation's per-component arrays (same order as `ids`); the
    totals are computed here (known measurements only), as PowerAllocation defines them."""
    comps = tuple(ComponentPower(str(c), float(m), float(a), float(x))
                  for c, m, a, x in zip(ids, measured_w, allocated_w, ceiling_w, strict=True))
    measured = sum(c.measured_w for c in comps if math.isfinite(c.measured_w))
    allocated = sum(c.allocated_w for c in comps if math.isfinite(c.allocated_w))
    return RackSnapshot(name, mode, mode_reason, float(budget_w), float(breaker_w), allocated,
                        measured, comps, stale, age_s)


def power_state(measured_w: float, allocated_w: float, near_fraction: float,
                held_fraction: float) -> str:
    """under, near, held (at or above held_fraction of the allocation) or unmeasured."""
    if not (math.isfinite(measured_w) and math.isfinite(allocated_w)):
        return "unmeasured"
    if allocated_w <= 0.0:
        return "held" if measured_w > 0.0 else "under"
    ratio = measured_w / allocated_w
    return "held" if ratio >= held_fraction else "near" if ratio >= near_fraction else "under"


def _watts(w: float) -> str:
    return f"{w:.0f} W" if math.isfinite(w) else "? W"


def _box_edges(x0, x1, y0, y1, z0, z1) -> tuple[tuple[float, float, float], ...]:
    """The 12 edges of an axis-aligned box as 24 points (a LINE_LIST)."""
    c = [(x, y, z) for z in (z0, z1) for y in (y0, y1) for x in (x0, x1)]
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7),
             (0, 4), (1, 5), (2, 6), (3, 7)]
    return tuple(p for a, b in pairs for p in (c[a], c[b]))


def _alpha(color, a: float) -> tuple[float, float, float, float]:
    return (color[0], color[1], color[2], a)


class RackView:
    """Builds the marker list of a snapshot; remembers the last component list so that a
    change starts the next list with a DELETEALL."""

    def __init__(self, placement: Placement | None = None, near_fraction: float = 0.85,
                 held_fraction: float = 0.97):
        if not 0.0 < near_fraction < held_fraction:
            raise ValueError(f"near_fraction = {near_fraction}, held_fraction = "
                             f"{held_fraction}: expected 0 < near_fraction < held_fraction")
        self.placement = placement or Placement()
        self.near_fraction = near_fraction
        self.held_fraction = held_fraction
        self._ids: tuple[str, ...] | None = None
        self._slots: dict[str, Slot] = {}
        self._top_u = self.placement.units

    def state_of(self, c: ComponentPower, stale: bool) -> str:
        if stale:
            return "unmeasured"
        return power_state(c.measured_w, c.allocated_w, self.near_fraction, self.held_fraction)

    def markers(self, snap: RackSnapshot,
                health: Mapping[str, Health] | None = None) -> list[Marker]:
        """Every marker of the rack at `snap`; `health` by component id (absent: unknown)."""
        out: list[Marker] = []
        if snap.ids != self._ids:
            out.append(Marker("", 0, "delete_all"))
            self._ids = snap.ids
            self._slots, self._top_u = lay_out(snap.ids, self.placement)
        out += self._rack(snap)
        health = health or {}
        for i, c in enumerate(snap.components):
            out += self._component(i, c, self._slots[c.id], self.state_of(c, snap.stale),
                                   health.get(c.id))
        out += self._gauge(snap)
        return out

    # --- the cabinet -----------------------------------------------------------------------
    def _rack(self, snap: RackSnapshot) -> list[Marker]:
        h = self._top_u * U_M
        title = f"{snap.name}  {snap.mode}" + (f" ({snap.mode_reason})" if snap.mode_reason
                                               else "")
        if snap.stale:
            title += f"  STALE: allocation {snap.age_s:.0f} s old"
        return [Marker("rack", 0, "lines", scale=(LINE_M, 0, 0), color=DARK,
                       points=_box_edges(0.0, RACK_WIDTH_M, 0.0, RACK_DEPTH_M, 0.0, h)),
                Marker("rack", 1, "text", position=(RACK_WIDTH_M / 2, 0.0, h + 0.06),
                       scale=(0, 0, 1.5 * TEXT_M), color=DARK, text=title)]

    # --- one component ---------------------------------------------------------------------
    def _component(self, i: int, c: ComponentPower, slot: Slot, state: str,
                   health: Health | None) -> list[Marker]:
        z0, z1 = slot.z_range_m()
        z0, z1 = z0 + GAP_M / 2, z1 - GAP_M / 2
        zc, dz = (z0 + z1) / 2, z1 - z0
        colour = STATE_COLOURS[state]
        ceiling = c.ceiling_w if math.isfinite(c.ceiling_w) and c.ceiling_w > 0 else math.nan
        frac = min(max(c.measured_w / ceiling, 0.0), 1.0) if math.isfinite(
            c.measured_w / ceiling) else 0.0
        width = max(frac * RACK_WIDTH_M, MIN_SCALE_M)
        out = [Marker("shell", i, "cube", (RACK_WIDTH_M / 2, RACK_DEPTH_M / 2, zc),
                      (RACK_WIDTH_M, RACK_DEPTH_M, dz), _alpha(colour, 0.3)),
               Marker("fill", i, "cube", (width / 2, -PLATE_M / 2, zc), (width, PLATE_M, dz),
                      colour)]
        alloc = c.allocated_w / ceiling if math.isfinite(c.allocated_w / ceiling) else math.nan
        if math.isfinite(alloc):
            x = min(max(alloc, 0.0), 1.0) * RACK_WIDTH_M
            y = -PLATE_M - 0.002
            out.append(Marker("allocation", i, "lines", scale=(LINE_M, 0, 0), color=DARK,
                              points=((x, y, z0), (x, y, z1))))
        else:
            out.append(Marker("allocation", i, "delete"))
        text = f"{c.id} {_watts(c.measured_w)} / {_watts(c.allocated_w)}"
        if health is not None and health.state in ("watch", "fault"):
            # the measurement at fault: said once (the causes sensor_* say it already)
            what = "sensor " if health.sensor_fault and not health.cause.startswith(
                "sensor") else ""
            text += f"  {health.state.upper()} {what}{health.cause}".rstrip()
        out.append(Marker("label", i, "text", (LABEL_X_M, 0.0, zc), (0, 0, TEXT_M), DARK, text))
        if health is not None and health.state in ("watch", "fault"):
            pad = 0.006
            out.append(Marker("health", i, "lines", scale=(1.5 * LINE_M, 0, 0),
                              color=RED if health.state == "fault" else AMBER,
                              points=_box_edges(-pad, RACK_WIDTH_M + pad, -PLATE_M - pad,
                                                RACK_DEPTH_M + pad, z0, z1)))
        else:
            out.append(Marker("health", i, "delete"))
        return out

    # --- the breaker budget --------------------------------------------------------------------
    def _gauge(self, snap: RackSnapshot) -> list[Marker]:
        h = self._top_u * U_M
        values = [snap.breaker_w, snap.budget_w, snap.total_allocated_w, snap.total_measured_w]
        full = max((v for v in values if math.isfinite(v) and v > 0), default=1.0)

        def z(w: float) -> float:
            return max(min(w / full, 1.0), 0.0) * h if math.isfinite(w) else 0.0

        state = "unmeasured" if snap.stale else power_state(
            snap.total_measured_w, snap.budget_w, self.near_fraction, self.held_fraction)
        alloc_h, meas_h = max(z(snap.total_allocated_w), MIN_SCALE_M), max(
            z(snap.total_measured_w), MIN_SCALE_M)
        zb = z(snap.budget_w)
        lines = [f"budget {_watts(snap.budget_w)} (breaker {_watts(snap.breaker_w)})",
                 f"allocated {_watts(snap.total_allocated_w)}",
                 f"measured {_watts(snap.total_measured_w)}", f"mode {snap.mode}"]
        return [
            Marker("gauge", 0, "cube", (GAUGE_X_M, 0.0, h / 2), (0.1, 0.02, h),
                   _alpha(GREY, 0.2)),
            Marker("gauge", 1, "cube", (GAUGE_X_M - 0.022, 0.0, alloc_h / 2),
                   (0.04, 0.03, alloc_h), _alpha(BLUE, 0.7)),
            Marker("gauge", 2, "cube", (GAUGE_X_M + 0.022, -0.005, meas_h / 2),
                   (0.04, 0.03, meas_h), STATE_COLOURS[state]),
            Marker("gauge", 3, "lines", scale=(1.5 * LINE_M, 0, 0), color=RED,
                   points=((GAUGE_X_M - 0.065, -0.03, zb), (GAUGE_X_M + 0.065, -0.03, zb))),
            Marker("gauge", 4, "text", (GAUGE_X_M + 0.1, 0.0, -0.06 - 2.0 * TEXT_M),
                   (0, 0, TEXT_M), DARK, "\n".join(lines)),
        ]
