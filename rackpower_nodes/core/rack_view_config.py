"""Parameter schema and validated configuration of the `rack_view` node (no rclpy).

The view draws whatever components the allocation lists. Where each sits in the rack is
optional configuration: `components.names` with, per name, `components.rack_u` (its lowest
unit, 1 = bottom; 0 = stack it), `components.height_u` (0 = by kind) and `components.kinds`
(server and switch 1U, storage 2U). Components not configured are stacked from the top of
the rack down in the allocation's order (core/rack_layout.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, check_ids, load_config_yaml, param, read_parameters)
from rackpower_nodes.core.rack_layout import (
    DEFAULT_HEIGHT_U, LayoutError, Placement, placement_from_config)

MIN_PERIOD_S = 0.5            # the view publishes at most at 2 Hz

RACK_VIEW_PARAMETERS: tuple[ParamSpec, ...] = (
    param("publish.period_s", 1.0, "double",
          "Publish rack_markers this often (the newest allocation; at most 2 Hz), s",
          (MIN_PERIOD_S, 60.0)),
    param("inputs.stale_after_s", 5.0, "double",
          "An allocation older than this when drawn is stale: the rack is drawn grey and "
          "its title says STALE, s", (0.5, 3600.0)),
    param("rack.units", 42, "integer", "Height of the rack, in rack units (1U = 44.45 mm)",
          (1, 60)),
    param("components.names", [], "string_array",
          "Components whose place is configured (others are stacked from the top down)"),
    param("components.kinds", [], "string_array",
          "Per components.names: server, switch or storage (sets the default height; "
          "empty = 1U each)"),
    param("components.rack_u", [], "integer_array",
          "Per components.names: lowest rack unit, 1 = bottom (0 = stack it; empty = all "
          "stacked)"),
    param("components.height_u", [], "integer_array",
          "Per components.names: height in rack units (0 = by kind; empty = by kind)"),
    param("colours.near_fraction", 0.85, "double",
          "Measured / allocated at or above which a component is amber (near its "
          "allocation)", (0.05, 1.0)),
    param("colours.held_fraction", 0.97, "double",
          "Measured / allocated at or above which a component is red (held or throttled "
          "at its allocation)", (0.05, 2.0)),
    param("frame_id", "", "string",
          "frame_id of the markers ('' = the allocation's header.frame_id, the rack's frame)"),
)


@dataclass(frozen=True)
class RackViewConfig:
    period_s: float
    stale_after_s: float
    placement: Placement
    near_fraction: float
    held_fraction: float
    frame_id: str


def rack_view_config_from_params(values: Mapping[str, Any]) -> RackViewConfig:
    """Build a validated config; raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(RACK_VIEW_PARAMETERS, values, errors, "rack_view")
    names = list(v.get("components.names", ()))
    before = len(errors)                 # the layout is checked when its own keys are valid
    check_ids("components.names", names, errors)
    per_name = {}
    for key in ("kinds", "rack_u", "height_u"):
        vals = list(v.get(f"components.{key}", ()))
        if vals and len(vals) != len(names):
            errors.append(f"components.{key} = {vals!r}: has {len(vals)} values, expected "
                          f"{len(names)} (one per components.names) or none")
            vals = []
        per_name[key] = vals
    errors += [f"components.kinds[{i}] = {k!r}: expected one of {', '.join(DEFAULT_HEIGHT_U)}"
               for i, k in enumerate(per_name["kinds"]) if k not in DEFAULT_HEIGHT_U]
    errors += [f"components.rack_u[{i}] = {u!r}: expected >= 0 (0 = stack it)"
               for i, u in enumerate(per_name["rack_u"]) if u < 0]
    errors += [f"components.height_u[{i}] = {h!r}: expected >= 0 (0 = by kind)"
               for i, h in enumerate(per_name["height_u"]) if h < 0]
    placement = None
    if len(errors) == before and "rack.units" in v:
        try:
            placement = placement_from_config(v["rack.units"], names, **per_name)
        except LayoutError as exc:
            errors.append(f"components.rack_u / components.height_u: {exc}")
    near, held = v.get("colours.near_fraction"), v.get("colours.held_fraction")
    if near is not None and held is not None and not near < held:
        errors.append(f"colours.near_fraction = {near!r}, colours.held_fraction = {held!r}: "
                      "expected near_fraction < held_fraction")
    if errors:
        raise ConfigError(errors)
    return RackViewConfig(period_s=v["publish.period_s"],
                          stale_after_s=v["inputs.stale_after_s"], placement=placement,
                          near_fraction=near, held_fraction=held, frame_id=v["frame_id"])


def load_rack_view_config_yaml(path: str | Path, node_name: str = "rack_view") -> RackViewConfig:
    return load_config_yaml(path, node_name, rack_view_config_from_params)
