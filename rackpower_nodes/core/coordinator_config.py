"""Parameter schema and validated configuration of the `power_coordinator` node (no rclpy).

A coordinator serves one level of a power tree (the room, a row, a feed): it reads the tree
file (`core/room/tree.py`), listens to the demand of every rack below its level and grants
each rack a budget every `period_s`, valid `lease_s`. A rack that hears nothing for half a
lease holds at most its guaranteed share, and after a whole lease exactly that, so a lease of
at least three periods lets a rack hear two grants in every half lease (one lost grant does
not shrink it). Each rack's topics live in its ROS namespace (`/<rack id>` unless
`racks.namespaces` says otherwise).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from rackpower_nodes.core.params import (
    ConfigError, ParamSpec, load_config_yaml, param, read_parameters)
from rackpower_nodes.core.room import PowerTree, load_power_tree

LEASE_PERIODS = 3.0          # lease_s >= LEASE_PERIODS x period_s
_NAMESPACE_RE = re.compile(r"^(/[A-Za-z][A-Za-z0-9_]*)+$")

COORDINATOR_PARAMETERS: tuple[ParamSpec, ...] = (
    param("power_tree", None, "string",
          "Power tree YAML: the room's levels, their ratings and every rack's rating and "
          "guaranteed share (docs/room.md)", required=True),
    param("level", "", "string",
          "The tree level this coordinator serves (its racks are the ones below it); '' = "
          "the top of the tree"),
    param("period_s", 1.0, "double", "How often budgets are divided and granted, s",
          (0.05, 600.0), positive=True),
    param("lease_s", 5.0, "double",
          "How long a grant is valid after a rack receives it, s (at least 3 x period_s); a "
          "rack falls back to its guaranteed share when it hears nothing for this long",
          (0.15, 3600.0), positive=True),
    param("demand_stale_s", 0.0, "double",
          "A rack whose newest demand is older than this counts as silent: the division "
          "leaves it its guaranteed share and the release counts it there at least, s; 0 = "
          "half the lease", (0.0, 3600.0)),
    param("racks.namespaces", [], "string_array",
          "'<rack id>=/<namespace>' per rack whose topics are not under /<rack id>; other "
          "racks use /<rack id>"),
    param("frame_id", "", "string",
          "header.frame_id and RackBudget.coordinator; '' = the level's name"),
)


@dataclass(frozen=True)
class CoordinatorConfig:
    power_tree: str
    level: str                          # '' = the top
    period_s: float
    lease_s: float
    demand_stale_s: float               # > 0, s
    namespaces: dict[str, str]          # rack id -> namespace, only the ones given
    frame_id: str

    def namespace(self, rack: str) -> str:
        """The ROS namespace of `rack`'s topics."""
        return self.namespaces.get(rack, f"/{rack}")


def _parse_namespaces(items: list[str], errors: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        rack, sep, ns = str(item).partition("=")
        rack, ns = rack.strip(), ns.strip()
        if not sep or not rack or not _NAMESPACE_RE.match(ns):
            errors.append(f"racks.namespaces[{i}] = {item!r}: expected '<rack id>=/<namespace>'"
                          " (e.g. 'rack_07=/row_1/rack_07')")
        elif rack in out:
            errors.append(f"racks.namespaces[{i}] = {item!r}: rack {rack!r} given twice")
        else:
            out[rack] = ns
    return out


def coordinator_config_from_params(values: Mapping[str, Any]) -> CoordinatorConfig:
    """Build a validated config (the tree file itself is read by `load_coordinator_tree`);
    raises ConfigError naming every bad key and value."""
    errors: list[str] = []
    v = read_parameters(COORDINATOR_PARAMETERS, values, errors, "power_coordinator")
    if "power_tree" in v and not str(v["power_tree"]).strip():
        errors.append("power_tree = '': expected the path of the power tree YAML")
    namespaces = _parse_namespaces(list(v.get("racks.namespaces", ())), errors)
    period, lease = v.get("period_s"), v.get("lease_s")
    if period is not None and lease is not None and lease < LEASE_PERIODS * period - 1e-9:
        errors.append(f"lease_s = {lease!r}: expected at least {LEASE_PERIODS:g} x period_s = "
                      f"{LEASE_PERIODS * period:g} s, so that a rack hears two grants in "
                      "every half lease")
    if errors:
        raise ConfigError(errors)
    stale = v["demand_stale_s"] or v["lease_s"] / 2
    return CoordinatorConfig(
        power_tree=v["power_tree"], level=v["level"], period_s=v["period_s"],
        lease_s=v["lease_s"], demand_stale_s=stale, namespaces=namespaces,
        frame_id=v["frame_id"])


def load_coordinator_tree(cfg: CoordinatorConfig):
    """(the power tree, the level served, its rack ids): the tree file read and checked
    against `level` and `racks.namespaces`; ConfigError naming the key otherwise."""
    try:
        tree = load_power_tree(cfg.power_tree)
    except ConfigError:
        raise                         # it names the file and the key in it
    except (ValueError, OSError) as exc:
        raise ConfigError(f"power_tree = {cfg.power_tree!r}: {exc}") from None
    level = cfg.level or tree.top
    if level not in tree.levels:
        raise ConfigError(f"level = {cfg.level!r}: not a level of the power tree "
                          f"{cfg.power_tree} (its levels: {', '.join(tree.levels)})")
    tree = subtree(tree, level)
    racks = tree.rack_names
    if not racks:
        raise ConfigError(f"level = {level!r}: no rack below it in {cfg.power_tree}")
    unknown = sorted(set(cfg.namespaces) - set(racks))
    if unknown:
        raise ConfigError(f"racks.namespaces: {', '.join(unknown)}: not a rack below level "
                          f"{level!r} (racks there: {', '.join(racks)})")
    return tree, level, racks


def subtree(tree, level: str):
    """The part of `tree` at and below `level` (which becomes its top), as a PowerTree."""
    if level == tree.top:
        return tree
    racks = {r: tree.racks[r] for r in tree.racks_under(level)}
    inside = {level} | {a for r in racks for a in tree.ancestors(r)[
        :tree.ancestors(r).index(level)]}
    levels = {n: (replace(lv, parent=None) if n == level else lv)
              for n, lv in tree.levels.items() if n in inside}
    return PowerTree(level, levels, racks)


def load_coordinator_config_yaml(path, node_name: str = "power_coordinator"
                                 ) -> CoordinatorConfig:
    return load_config_yaml(path, node_name, coordinator_config_from_params)
