"""What the room coordination tests share: hypothesis strategies for power trees and demands,
a small hand-made tree, and the rating checks a division or a commitment must pass.

- `trees()`: random valid `PowerTree`s: 1-3 levels of levels, 2-25 racks, ratings that
  oversubscribe (a level below the sum of its children), guaranteed shares that fit;
- `demands(tree)`: random `RackDemand`s, 1-4 priority classes a rack, floors within the
  rack's guaranteed share (so the floors always fit), some racks silent;
- `demand(rack, {priority: (floor, demand)})`: one `RackDemand` by hand;
- `small_tree()`: room 10 kW > row_1 6 kW > (a, b: 4 kW each), c: 5 kW directly in the room;
- `over_ratings(tree, budget_w)`: messages for every rack or level above its rating (exact
  sums), empty when all fit.
"""
from __future__ import annotations

import math

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rackpower_nodes.core.room.tree import PowerTree, load_power_tree
from rackpower_nodes.core.room.types import RackDemand

__all__ = ["PROPERTY", "demand", "demands", "over_ratings", "small_tree", "trees"]

PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def small_tree() -> PowerTree:
    return load_power_tree({"power_tree": {"name": "room", "rating_w": 10000, "children": [
        {"name": "row_1", "rating_w": 6000, "children": [
            {"rack": "a", "rating_w": 4000, "guaranteed_w": 2000},
            {"rack": "b", "rating_w": 4000, "guaranteed_w": 2000}]},
        {"rack": "c", "rating_w": 5000, "guaranteed_w": 3000}]}})


def demand(rack: str, classes: dict[int, tuple[float, float]], rating_w: float = math.inf,
           guaranteed_w: float = 0.0, **kw) -> RackDemand:
    prio = tuple(sorted(classes, reverse=True))
    return RackDemand(rack, kw.pop("stamp_unix", 0.0), 60.0, prio,
                      tuple(classes[p][0] for p in prio), tuple(classes[p][1] for p in prio),
                      rating_w, guaranteed_w, **kw)


@st.composite
def trees(draw, max_racks: int = 25) -> PowerTree:
    n_racks = draw(st.integers(2, max_racks))
    depth = draw(st.integers(1, 3))
    racks = []
    for i in range(n_racks):
        rating = draw(st.floats(500.0, 8000.0))
        share = draw(st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0]) | st.floats(0.0, 1.0))
        racks.append({"rack": f"r{i:02d}", "rating_w": rating, "guaranteed_w": 0.6 * share
                      * rating})
    nodes = racks
    for d in range(depth - 1, -1, -1):
        groups = _split(draw, nodes, 1 if d == 0 else draw(st.integers(1, max(1, len(nodes)))))
        nodes = [_level(draw, f"l{d}_{g}", kids) for g, kids in enumerate(groups)]
    return load_power_tree({"power_tree": nodes[0]})


def _split(draw, nodes: list, k: int) -> list[list]:
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(nodes) - 1)), min_size=k - 1,
                                max_size=k - 1, unique=True))) if len(nodes) > 1 else []
    bounds = [0, *cuts, len(nodes)]
    return [nodes[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _level(draw, name: str, kids: list) -> dict:
    def walk(node):
        if "rack" in node:
            return node["rating_w"], node["guaranteed_w"]
        pairs = [walk(k) for k in node["children"]]
        return math.fsum(p[0] for p in pairs), math.fsum(p[1] for p in pairs)
    pairs = [walk(k) for k in kids]
    rated, guaranteed = math.fsum(p[0] for p in pairs), math.fsum(p[1] for p in pairs)
    factor = draw(st.sampled_from([0.3, 0.6, 1.0, 2.0]) | st.floats(0.2, 1.5))
    rating = max(factor * rated, guaranteed * (1 + 1e-9), 1.0)
    return {"name": name, "rating_w": rating, "children": kids}


@st.composite
def demands(draw, tree: PowerTree, silent: bool = True) -> dict[str, RackDemand]:
    out = {}
    for rack, spec in tree.racks.items():
        if silent and draw(st.integers(0, 9)) == 0:
            continue
        prio = draw(st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True))
        floor_part = draw(st.floats(0.0, 1.0)) * spec.guaranteed_w / len(prio)
        classes = {}
        for p in prio:
            floor = floor_part * draw(st.floats(0.0, 1.0))
            classes[p] = (floor, floor + draw(st.sampled_from([0.0, 0.5, 1.5]) |
                                             st.floats(0.0, 1.5)) * spec.rating_w)
        out[rack] = demand(rack, classes, spec.rating_w, spec.guaranteed_w)
    return out


def over_ratings(tree: PowerTree, budget_w: dict[str, float]) -> list[str]:
    bad = [f"rack {r}: {budget_w[r]} > {s.rating_w}" for r, s in tree.racks.items()
           if budget_w[r] > s.rating_w]
    for name, level in tree.levels.items():
        total = math.fsum(budget_w[r] for r in tree.racks_under(name))
        if total > level.rating_w:
            bad.append(f"level {name}: {total} > {level.rating_w}")
    return bad
