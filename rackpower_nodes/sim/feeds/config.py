"""The rack's redundant feeds as configured: breakers per feed and each component's split.

A ``feeds:`` section (in the rack simulator's YAML, or a file of its own beside it)::

    feeds:
      breakers:                     # one per feed, in feed order
        A: {pdu: pdu-a, breaker_a: 10.0}
        B: {pdu: pdu-b, breaker_a: 10.0}
      derating: 0.8                 # each feed's continuous budget: breaker x derating
      thermal_constant_s: 30.0      # the trip curve of sim/pdu/model.py, per feed
      magnetic_multiple: 10.0
      dual_corded: [server, storage]   # kinds with a cord on every feed
      imbalance: 0.04               # a dual-corded component draws 1/F + U(-imbalance, imbalance)
      seed: 0                       #   of its power from each feed but the last (drawn once)
      split: {tor-a: [1.0, 0.0]}    # explicit fractions per feed (override the above)

A single-corded component hangs on the feed whose ``pdu`` is its PDU (``components[].pdu``
of the rack config). Without a ``feeds:`` section there is no feed model and the simulator
runs as before (one breaker for the rack).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rackpower_nodes.sim.rack_model import SimConfigError
from rackpower_nodes.sim.rack_model.checks import cfg_float, cfg_map, cfg_numbers

__all__ = ["FeedConfig", "load_feeds", "parse_feeds"]

KINDS = ("server", "switch", "storage")
MAX_IMBALANCE = 0.2


@dataclass(frozen=True)
class FeedConfig:
    """Validated feeds of one rack; powers in W, times in s.

    `split` (n, F): the fraction of component i's power drawn from feed f while every feed is
    up (rows sum to 1; a single-corded component has one 1). `pdus`: each feed's PDU name.
    """

    names: tuple[str, ...]
    pdus: tuple[str, ...]
    breaker_w: np.ndarray
    derating: float
    thermal_constant_s: float
    magnetic_multiple: float
    components: tuple[str, ...]
    split: np.ndarray

    @property
    def budget_w(self) -> np.ndarray:
        """(F,) each feed's continuous budget, W: breaker x derating."""
        return self.breaker_w * self.derating

    @property
    def dual(self) -> np.ndarray:
        """(n,) True where a component draws from more than one feed."""
        return np.count_nonzero(self.split > 0, axis=1) > 1

    def reordered(self, names: Sequence[str]) -> FeedConfig:
        """The same feeds with the components in the order of `names` (e.g. the
        controller's); ValueError naming the ones missing here."""
        missing = [n for n in names if n not in self.components]
        if missing or len(names) != len(self.components):
            raise ValueError(f"components {list(names)}: expected the rack's "
                             f"{list(self.components)} in any order (missing {missing})")
        order = [self.components.index(n) for n in names]
        return replace(self, components=tuple(names), split=self.split[order])


def load_feeds(source, rack) -> FeedConfig | None:
    """The ``feeds:`` section of `source` (a YAML path or a mapping) for `rack` (a
    `RackConfig`); None when there is none. SimConfigError names a bad key."""
    if isinstance(source, (str, Path)):
        import yaml

        try:
            source = yaml.safe_load(Path(source).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise SimConfigError(f"feeds config {source}: {exc}") from exc
    raw = cfg_map(source, "config")
    if raw.get("feeds") is None:
        return None
    return parse_feeds(raw["feeds"], rack)


def parse_feeds(section, rack) -> FeedConfig:
    """A `FeedConfig` from a ``feeds:`` mapping for `rack` (a `RackConfig`)."""
    sec = cfg_map(section, "feeds")
    known = {"breakers", "derating", "thermal_constant_s", "magnetic_multiple", "dual_corded",
             "imbalance", "seed", "split"}
    extra = sorted(set(sec) - known)
    if extra:
        raise SimConfigError(f"feeds: unknown keys {extra}, expected some of {sorted(known)}")
    breakers = cfg_map(sec.get("breakers"), "feeds.breakers")
    if len(breakers) < 2:
        raise SimConfigError(f"feeds.breakers: {len(breakers)} feeds, expected at least 2")
    volts = rack.nominal_v * rack.power_factor
    names, pdus, ratings = [], [], []
    rack_pdus = sorted({c.pdu for c in rack.components})
    for name, entry in breakers.items():
        key = f"feeds.breakers.{name}"
        entry = cfg_map(entry, key)
        pdu = entry.get("pdu")
        if not isinstance(pdu, str) or not pdu:
            raise SimConfigError(f"{key}.pdu: {pdu!r}, expected a PDU name of the rack "
                                 f"({', '.join(rack_pdus)})")
        if pdu in pdus:
            raise SimConfigError(f"{key}.pdu: {pdu!r} already feeds {names[pdus.index(pdu)]!r}")
        names.append(str(name))
        pdus.append(pdu)
        ratings.append(cfg_float(entry, "breaker_a", key, None, 1e-3, 1e4, "A") * volts)
    derating = cfg_float(sec, "derating", "feeds", 0.8, 1e-3, 1.0)
    thermal = cfg_float(sec, "thermal_constant_s", "feeds", 30.0, 1e-3, 1e6, "s")
    magnetic = cfg_float(sec, "magnetic_multiple", "feeds", 10.0, 1.0 + 1e-9, 1e3)
    split = _split(sec, rack, names, pdus)
    return FeedConfig(tuple(names), tuple(pdus), np.array(ratings), derating, thermal, magnetic,
                      tuple(c.name for c in rack.components), split)


def _split(sec: Mapping, rack, names: list[str], pdus: list[str]) -> np.ndarray:
    """(n, F) fractions per feed: single cords on their PDU's feed, dual cords 1/F each with
    the drawn imbalance, explicit ``split`` entries as given."""
    dual_kinds = sec.get("dual_corded", ["server", "storage"])
    if not isinstance(dual_kinds, list) or any(k not in KINDS for k in dual_kinds):
        raise SimConfigError(f"feeds.dual_corded: {dual_kinds!r}, expected a list of kinds "
                             f"from {list(KINDS)}")
    imbalance = cfg_float(sec, "imbalance", "feeds", 0.0, 0.0, MAX_IMBALANCE)
    seed = sec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SimConfigError(f"feeds.seed: {seed!r}, expected an integer >= 0")
    explicit = cfg_map(sec.get("split", {}), "feeds.split")
    comp_names = [c.name for c in rack.components]
    unknown = sorted(set(explicit) - set(comp_names))
    if unknown:
        raise SimConfigError(f"feeds.split: {unknown} are not components of the rack")
    n_feeds = len(names)
    rng = np.random.default_rng(seed)
    split = np.zeros((len(comp_names), n_feeds))
    for i, c in enumerate(rack.components):
        offsets = rng.uniform(-imbalance, imbalance, n_feeds - 1)   # drawn for every component
        if c.name in explicit:
            key = f"feeds.split.{c.name}"
            row = np.array(cfg_numbers(explicit[c.name], key, 0.0, 1.0, count=n_feeds))
            if abs(row.sum() - 1.0) > 1e-6:
                raise SimConfigError(f"{key}: {row.tolist()} sums to {row.sum():g}, "
                                     "expected 1")
            split[i] = row
        elif c.kind in dual_kinds:
            share = 1.0 / n_feeds + offsets
            split[i] = np.append(share, 1.0 - share.sum())
            if np.any(split[i] <= 0):
                raise SimConfigError(f"feeds.imbalance: {imbalance!r} leaves {c.name} a share "
                                     f"<= 0 of a feed ({split[i].tolist()}), expected less")
        elif c.pdu in pdus:
            split[i, pdus.index(c.pdu)] = 1.0
        else:
            raise SimConfigError(f"components[{i}] ({c.name}): single-corded on pdu {c.pdu!r}, "
                                 f"which no feed in feeds.breakers names ({', '.join(pdus)})")
    return split
