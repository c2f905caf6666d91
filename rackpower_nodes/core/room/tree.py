"""The room's power tree: levels (room, feeds, rows) with continuous ratings, racks as leaves.

Pure data, no rclpy. `load_power_tree` reads the `power_tree:` section of a YAML file (or a
mapping of the same shape) and checks it; `PowerTree` itself checks its links and the
guaranteed shares, so a tree built in code is as safe as one read from a file.

A level's `rating_w` is its continuous rating (breaker x derating, W). A rack's rating may be
above its parent's (oversubscription is the point of a shared budget), but the guaranteed
shares under every level must fit its rating: they are what the racks fall back to when the
coordinator is silent, and that must be safe with nobody talking.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rackpower_nodes.core.params import ConfigError, read_yaml

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_LEVEL_KEYS = ("name", "rating_w", "children")
_RACK_KEYS = ("rack", "rating_w", "guaranteed_w")


@dataclass(frozen=True)
class RackSpec:
    """A rack (a leaf): its `parent` level, continuous `rating_w` and `guaranteed_w` (W)."""

    name: str
    parent: str
    rating_w: float
    guaranteed_w: float


@dataclass(frozen=True)
class TreeLevel:
    """A level of the tree: `parent` is None at the top; `children` names the levels or racks
    directly below it, in config order."""

    name: str
    rating_w: float
    parent: str | None
    children: tuple[str, ...]


@dataclass(frozen=True)
class PowerTree:
    """A power tree: `top` names the top level; `levels` and `racks` by name (config order).

    Construction checks that the links agree (every child exists and names its parent back,
    every level and rack is reachable from the top, no name is both), that ratings are finite
    and > 0, that 0 <= guaranteed share <= rating for every rack, and that the guaranteed
    shares under every level sum to at most its rating; it raises `ConfigError` otherwise.
    """

    top: str
    levels: dict[str, TreeLevel]
    racks: dict[str, RackSpec]
    _under: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _up: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    member: np.ndarray = field(init=False, repr=False, compare=False)
    """(levels, racks) bool, read-only: `member[i, j]` when rack j (in `rack_names` order) is
    under level i (in `levels` order)."""

    def __post_init__(self) -> None:
        errors = _link_errors(self.top, self.levels, self.racks)
        if errors:
            raise ConfigError(errors)
        up = {r: _chain(self.levels, spec.parent) for r, spec in self.racks.items()}
        under: dict[str, list[str]] = {name: [] for name in self.levels}
        for rack, chain in up.items():
            for level in chain:
                under[level].append(rack)
        object.__setattr__(self, "_up", up)
        object.__setattr__(self, "_under", {k: tuple(v) for k, v in under.items()})
        member = np.array([[r in set(under[name]) for r in self.racks] for name in self.levels],
                          dtype=bool).reshape(len(self.levels), len(self.racks))
        member.setflags(write=False)
        object.__setattr__(self, "member", member)
        errors = [f"level {name!r}: guaranteed shares of its racks sum to {g:g} W > its "
                  f"rating_w {self.levels[name].rating_w:g} W: the fallback with the "
                  "coordinator silent would overload it"
                  for name, g in self.guaranteed_sums().items()
                  if g > self.levels[name].rating_w]
        if errors:
            raise ConfigError(errors)

    @property
    def rack_names(self) -> tuple[str, ...]:
        """Every rack, in config order."""
        return tuple(self.racks)

    def ancestors(self, rack: str) -> tuple[str, ...]:
        """The levels above `rack`, nearest first (the top last). KeyError for an unknown rack."""
        return self._up[rack]

    def racks_under(self, level: str) -> tuple[str, ...]:
        """Every rack below `level` at any depth, in config order."""
        return self._under[level]

    def guaranteed_sums(self) -> dict[str, float]:
        """{level: sum of the guaranteed shares of the racks under it} (W)."""
        return {name: math.fsum(self.racks[r].guaranteed_w for r in racks)
                for name, racks in self._under.items()}


def _chain(levels: Mapping[str, TreeLevel], start: str | None) -> tuple[str, ...]:
    chain = []
    while start is not None:
        chain.append(start)
        start = levels[start].parent
    return tuple(chain)


def _bad_number(value: Any, positive: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return not math.isfinite(value) or (value <= 0 if positive else value < 0)


def _link_errors(top: str, levels: Mapping[str, TreeLevel],
                 racks: Mapping[str, RackSpec]) -> list[str]:
    """Why these levels and racks are not one tree under `top` (empty when they are)."""
    errors = [f"{name!r}: both a level and a rack; names must be unique"
              for name in set(levels) & set(racks)]
    if top not in levels or levels[top].parent is not None:
        errors.append(f"top {top!r}: expected a level with parent None")
        return errors
    for name, level in levels.items():
        if _bad_number(level.rating_w, positive=True):
            errors.append(f"level {name!r}: rating_w = {level.rating_w!r}: expected a number > 0")
        if level.parent is not None and name not in getattr(levels.get(level.parent),
                                                            "children", ()):
            errors.append(f"level {name!r}: parent {level.parent!r} does not list it")
        for child in level.children:
            node = levels.get(child) or racks.get(child)
            if node is None or node.parent != name:
                errors.append(f"level {name!r}: child {child!r} is not a level or rack whose "
                              f"parent is {name!r}")
    for name, rack in racks.items():
        if _bad_number(rack.rating_w, positive=True):
            errors.append(f"rack {name!r}: rating_w = {rack.rating_w!r}: expected a number > 0")
        elif _bad_number(rack.guaranteed_w, positive=False) or rack.guaranteed_w > rack.rating_w:
            errors.append(f"rack {name!r}: guaranteed_w = {rack.guaranteed_w!r}: expected a "
                          f"number in 0 .. rating_w = {rack.rating_w!r}")
        if name not in getattr(levels.get(rack.parent), "children", ()):
            errors.append(f"rack {name!r}: parent {rack.parent!r} is not a level listing it")
    reached, stack = set(), [top]
    while stack:
        name = stack.pop()
        if name in reached:
            errors.append(f"{name!r}: reached twice from {top!r}; expected a tree")
            break
        reached.add(name)
        stack.extend(levels[name].children if name in levels else ())
    errors += [f"{name!r}: not reachable from the top level {top!r}"
               for name in [*levels, *racks] if name not in reached]
    return errors


def load_power_tree(source: str | Path | Mapping) -> PowerTree:
    """Read and check a power tree from a YAML file whose top key is `power_tree:`, or from a
    mapping holding that key (or the top level itself: `{name:, rating_w:, children:}`).

    A level is `{name, rating_w, children}`, a rack `{rack, rating_w, guaranteed_w}`, both in
    W. Every error is a `ConfigError` naming the key path (`power_tree.children[1].rating_w`),
    the value and what was expected; a file's errors are prefixed with the file.
    """
    if isinstance(source, Mapping):
        return _tree_from(source)
    path = Path(source)
    doc = read_yaml(path)
    try:
        return _tree_from(doc)
    except ConfigError as exc:
        raise ConfigError([f"{path}: {e}" for e in exc.errors]) from exc


def _tree_from(doc: Any) -> PowerTree:
    if isinstance(doc, Mapping) and "power_tree" in doc:
        # ROS node sections ({ros__parameters: ...}) may share the file; nothing else may
        extra = sorted(str(k) for k, v in doc.items() if k != "power_tree" and not (
            isinstance(v, Mapping) and "ros__parameters" in v))
        if extra:
            raise ConfigError([f"{k}: unknown key; expected power_tree (and ROS node "
                               "sections)" for k in extra])
        doc, key = doc["power_tree"], "power_tree"
    elif isinstance(doc, Mapping) and "name" in doc:
        key = "power_tree"
    else:
        got = (f"keys {sorted(map(str, doc))}" if isinstance(doc, Mapping)
               else type(doc).__name__)
        raise ConfigError(f"power_tree: missing; expected a mapping with a power_tree: key, "
                          f"got {got}")
    reader = _Reader()
    top = reader.level(doc, key, None)
    if reader.errors:
        raise ConfigError(reader.errors)
    if top is None:
        raise ConfigError(f"{key}: expected a level {{name, rating_w, children}} at the top")
    return PowerTree(top, reader.levels, reader.racks)


class _Reader:
    """Walks the YAML tree depth-first, collecting levels, racks and every error."""

    def __init__(self) -> None:
        self.levels: dict[str, TreeLevel] = {}
        self.racks: dict[str, RackSpec] = {}
        self.where: dict[str, str] = {}
        self.errors: list[str] = []

    def level(self, node: Any, key: str, parent: str | None) -> str | None:
        if not isinstance(node, Mapping):
            self.errors.append(f"{key} = {node!r}: expected a mapping {{name, rating_w, "
                               "children}} or {rack, rating_w, guaranteed_w}")
            return None
        if "rack" in node:
            if parent is None:
                self.errors.append(f"{key}: a rack at the top; expected a level above racks")
                return None
            return self.rack(node, key, parent)
        name = self._name(node, key, "name", _LEVEL_KEYS)
        rating = self._number(node, key, "rating_w", positive=True)
        children = node.get("children")
        if not isinstance(children, list) or not children:
            self.errors.append(f"{key}.children = {children!r}: expected a non-empty list of "
                               "levels and racks")
            children = []
        if name is None:
            return None
        if rating is not None:  # placeholder: levels in config order, the top first
            self.levels[name] = TreeLevel(name, rating, parent, ())
        names = [self.level(child, f"{key}.children[{i}]", name)
                 for i, child in enumerate(children)]
        if rating is not None:
            self.levels[name] = TreeLevel(name, rating, parent,
                                          tuple(n for n in names if n is not None))
        self._check_guaranteed(name, key)
        return name

    def rack(self, node: Mapping, key: str, parent: str) -> str | None:
        name = self._name(node, key, "rack", _RACK_KEYS)
        rating = self._number(node, key, "rating_w", positive=True)
        guaranteed = self._number(node, key, "guaranteed_w", positive=False)
        if None not in (rating, guaranteed) and guaranteed > rating:
            self.errors.append(f"{key}.guaranteed_w = {guaranteed!r}: above the rack's "
                               f"rating_w {rating!r}; expected <= rating_w")
            return None
        if name is None or rating is None or guaranteed is None:
            return None
        self.racks[name] = RackSpec(name, parent, float(rating), float(guaranteed))
        return name

    def _name(self, node: Mapping, key: str, name_key: str, known: tuple) -> str | None:
        for extra in sorted(map(str, set(node) - set(known))):
            close = difflib.get_close_matches(extra, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.errors.append(f"{key}.{extra}: unknown key; expected {', '.join(known)}{hint}")
        name = node.get(name_key)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            self.errors.append(f"{key}.{name_key} = {name!r}: expected a name of "
                               "[A-Za-z0-9_.-]+")
            return None
        if name in self.where:
            self.errors.append(f"{key}.{name_key} = {name!r}: duplicate of "
                               f"{self.where[name]}; expected unique names")
            return None
        self.where[name] = f"{key}.{name_key}"
        return name

    def _number(self, node: Mapping, key: str, name: str, positive: bool) -> float | None:
        if name not in node:
            self.errors.append(f"{key}.{name}: missing; expected a number "
                               f"{'> 0' if positive else '>= 0'} (W)")
            return None
        value = node[name]
        if _bad_number(value, positive):
            self.errors.append(f"{key}.{name} = {value!r}: expected a finite number "
                               f"{'> 0' if positive else '>= 0'} (W)")
            return None
        return float(value)

    def _check_guaranteed(self, name: str, key: str) -> None:
        level = self.levels.get(name)
        if level is None:
            return
        total, stack = [], list(level.children)
        while stack:
            child = stack.pop()
            if child in self.racks:
                total.append(self.racks[child].guaranteed_w)
            elif child in self.levels:
                stack.extend(self.levels[child].children)
        if math.fsum(total) > level.rating_w:
            self.errors.append(f"{key}: guaranteed_w of the racks under {name!r} sum to "
                               f"{math.fsum(total):g} W > its rating_w {level.rating_w:g} W; "
                               "expected the fallback (every rack on its guaranteed share) "
                               "to fit every level")
