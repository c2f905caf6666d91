"""A simulated room: racks of the shipped presets under a power tree, generated from a seed.

The room is room -> rows -> racks. Each rack is one of the simulator's presets (``office``,
``ai``, ``mixed``) with its own seed (the room's seed + its index), and its actuator config
(components, floors, ceilings, priorities, budget, policy) from the preset's
``config/rack*.yaml``: the same config the single-rack evaluation uses. The priority classes
are the ones those configs ship (global across racks: 3 = switches, storage and gpu04 of the
ai rack; 2 = servers and GPU training; 1 = batch servers (office) and the ai rack's CPU
servers).

Ratings (continuous, breaker x derating, W): a rack's rating is its preset's budget; a row's is
`row_ratio` x the sum of its racks' ratings; the room's `room_ratio` x the sum of its rows'.
Both ratios are below 1 (oversubscribed, as real rooms are). Each rack's guaranteed share is
`guaranteed_frac` x its rating, which must fit every level (checked by `PowerTree`).
The ratios were chosen on the tuning seeds (100-199), never on the held-out ones.
"""
from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rackpower_nodes.core.actuator_config import actuator_config_from_params
from rackpower_nodes.core.allocation import Component, PolicyConfig
from rackpower_nodes.core.params import ConfigError, load_node_parameters
from rackpower_nodes.core.room.tree import PowerTree, load_power_tree

PRESETS = ("office", "ai", "mixed")
DEFAULT_MIX = {"office": 0.4, "ai": 0.3, "mixed": 0.3}


@dataclass(frozen=True)
class RoomRack:
    """One rack of the room: its preset and seed (for the simulated day), its row, and what
    its actuator holds (components in the controller's order, the policy)."""

    name: str
    preset: str
    seed: int
    row: str
    components: tuple[Component, ...]
    policy: PolicyConfig

    @property
    def rating_w(self) -> float:
        """The rack's continuous rating (its breaker x derating), W."""
        return self.policy.budget_w

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.components)


@dataclass(frozen=True)
class Room:
    """Racks (config order), the checked power tree, the mapping it was read from, the seed
    and the derating that turns a continuous rating into a breaker rating."""

    racks: tuple[RoomRack, ...]
    tree: PowerTree
    tree_config: dict
    seed: int
    derating: float = 0.8

    def rack(self, name: str) -> RoomRack:
        for r in self.racks:
            if r.name == name:
                return r
        raise KeyError(name)


def preset_actuator_path(preset: str) -> Path:
    """config/rack.yaml (office) or config/rack_<preset>.yaml: the checkout's, else the
    installed share/rackpower copy."""
    if preset not in PRESETS:
        raise ConfigError(f"preset = {preset!r}: expected one of {', '.join(PRESETS)}")
    name = "rack.yaml" if preset == "office" else f"rack_{preset}.yaml"
    checkout = Path(__file__).resolve().parents[3] / "config" / name
    installed = Path(sys.prefix) / "share" / "rackpower" / "config" / name
    return installed if not checkout.is_file() and installed.is_file() else checkout


def preset_actuator(preset: str, margin_frac: float | None = None,
                    margin_w: float | None = None) -> tuple[tuple[Component, ...],
                                                            PolicyConfig]:
    """(components, policy) of a preset's pdu_actuator section; `margin_frac`/`margin_w`
    replace the reactive margin (the structure of the sweep) when given."""
    acfg = actuator_config_from_params(
        load_node_parameters(preset_actuator_path(preset), "pdu_actuator"))
    policy = acfg.policy
    changes = {}
    if margin_frac is not None:
        changes["reactive_margin_frac"] = float(margin_frac)
    if margin_w is not None:
        changes["reactive_margin_w"] = float(margin_w)
    if changes:
        policy = dataclasses.replace(policy, **changes)
    return acfg.components, policy


def _check_ratio(name: str, value: float, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and 0 < value <= high):
        raise ConfigError(f"{name} = {value!r}: expected a number in (0, {high:g}]")
    return float(value)


def preset_mix(n_racks: int, seed: int, mix: Mapping[str, float] | None = None) -> list[str]:
    """`n_racks` presets in the proportions of `mix` (largest remainders), shuffled by seed."""
    mix = dict(DEFAULT_MIX if mix is None else mix)
    bad = [k for k in mix if k not in PRESETS]
    if bad or not mix or any(not (w >= 0) for w in mix.values()) or sum(mix.values()) <= 0:
        raise ConfigError(f"mix = {mix!r}: expected weights >= 0 of {', '.join(PRESETS)}")
    total = sum(mix.values())
    exact = {k: n_racks * w / total for k, w in mix.items()}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[:n_racks - sum(counts.values())]:
        counts[k] += 1
    kinds = [k for k in mix for _ in range(counts[k])]
    np.random.default_rng([seed, 17]).shuffle(kinds)
    return kinds


def make_room(n_racks: int = 24, seed: int = 5000, racks_per_row: int = 4,
              row_ratio: float = 0.85, room_ratio: float = 0.95, guaranteed_frac: float = 0.7,
              mix: Mapping[str, float] | None = None, presets: Sequence[str] | None = None,
              margin_frac: float | None = None, margin_w: float | None = None) -> Room:
    """A room of `n_racks` racks in rows of `racks_per_row` (the last row may be shorter).

    Rack i is ``r<row>-<k>`` with seed `seed` + i and a preset from `presets` (one per rack)
    or drawn in the proportions of `mix` by `seed`. Ratings and guaranteed shares as in the
    module doc; `margin_frac`/`margin_w` set every rack's reactive margin. ConfigError names
    a bad argument, or the level whose guaranteed shares do not fit.
    """
    if isinstance(n_racks, bool) or not isinstance(n_racks, int) or n_racks < 1:
        raise ConfigError(f"n_racks = {n_racks!r}: expected a whole number >= 1")
    if isinstance(racks_per_row, bool) or not isinstance(racks_per_row, int) or racks_per_row < 1:
        raise ConfigError(f"racks_per_row = {racks_per_row!r}: expected a whole number >= 1")
    row_ratio = _check_ratio("row_ratio", row_ratio)
    room_ratio = _check_ratio("room_ratio", room_ratio)
    guaranteed_frac = _check_ratio("guaranteed_frac", guaranteed_frac)
    kinds = list(presets) if presets is not None else preset_mix(n_racks, seed, mix)
    if len(kinds) != n_racks:
        raise ConfigError(f"presets has {len(kinds)} entries: expected one per rack "
                          f"({n_racks})")
    configs = {k: preset_actuator(k, margin_frac, margin_w) for k in set(kinds)}
    racks, rows = [], []
    for i, kind in enumerate(kinds):
        row = f"row{i // racks_per_row + 1}"
        if not rows or rows[-1] != row:
            rows.append(row)
        comps, policy = configs[kind]
        racks.append(RoomRack(f"r{i // racks_per_row + 1}-{i % racks_per_row + 1}", kind,
                              seed + i, row, comps, policy))
    row_nodes = []
    for row in rows:
        mine = [r for r in racks if r.row == row]
        row_nodes.append({
            "name": row, "rating_w": round(row_ratio * sum(r.rating_w for r in mine), 1),
            "children": [{"rack": r.name, "rating_w": r.rating_w,
                          "guaranteed_w": round(guaranteed_frac * r.rating_w, 1)}
                         for r in mine]})
    tree_config = {"power_tree": {
        "name": "room", "children": row_nodes,
        "rating_w": round(room_ratio * sum(n["rating_w"] for n in row_nodes), 1)}}
    derating = {r.policy.derating for r in racks}
    return Room(tuple(racks), load_power_tree(tree_config), tree_config, seed,
                derating.pop() if len(derating) == 1 else 0.8)
