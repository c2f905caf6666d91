"""The room's power tree: loading config/room.example.yaml, the tree's queries, and every
config error naming its key path."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given

from helpers.room import PROPERTY, small_tree, trees
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.room import (
    PowerTree, RackSpec, TreeLevel, load_power_tree)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "room.example.yaml"

ROOM = {"power_tree": {"name": "room", "rating_w": 10000, "children": [
    {"name": "row_1", "rating_w": 6000, "children": [
        {"rack": "a", "rating_w": 4000, "guaranteed_w": 2000},
        {"rack": "b", "rating_w": 4000, "guaranteed_w": 2000}]},
    {"rack": "c", "rating_w": 5000, "guaranteed_w": 3000}]}}


def edited(path: tuple, value) -> dict:
    """ROOM with the key at `path` (keys and list indices) set to `value` (None: deleted)."""
    doc = copy.deepcopy(ROOM)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def test_example_config_is_a_realistic_oversubscribed_room():
    tree = load_power_tree(EXAMPLE)
    assert tree.top == "room" and list(tree.levels) == ["room", "row_1", "row_2"]
    assert len(tree.rack_names) == 6
    assert all(spec.rating_w == 3680.0 for spec in tree.racks.values())  # 230 V x 20 A x 0.8
    for name, level in tree.levels.items():
        rated = sum(tree.racks[r].rating_w for r in tree.racks_under(name))
        assert tree.guaranteed_sums()[name] <= level.rating_w < rated


def test_queries_follow_the_config_order():
    tree = small_tree()
    assert tree.rack_names == ("a", "b", "c")
    assert tree.ancestors("a") == ("row_1", "room") and tree.ancestors("c") == ("room",)
    assert tree.racks_under("row_1") == ("a", "b")
    assert tree.racks_under("room") == ("a", "b", "c")
    assert tree.levels["row_1"] == TreeLevel("row_1", 6000.0, "room", ("a", "b"))
    assert tree.racks["c"] == RackSpec("c", "room", 5000.0, 3000.0)
    assert tree.member.tolist() == [[True, True, True], [True, True, False]]
    with pytest.raises(KeyError):
        tree.ancestors("nope")


def test_the_top_key_is_optional_and_a_rack_may_exceed_its_parent():
    doc = edited(("power_tree", "children", 0, "children", 0, "rating_w"), 9000)
    tree = load_power_tree(doc["power_tree"])
    assert tree.racks["a"].rating_w == 9000.0 > tree.levels["row_1"].rating_w


@pytest.mark.parametrize("path, value, message", [
    (("power_tree", "children", 0, "ratng_w"), 1, "power_tree.children[0].ratng_w: unknown key"
     "; expected name, rating_w, children; did you mean 'rating_w'?"),
    (("power_tree", "children", 1, "name"), "c", "power_tree.children[1].name: unknown key"),
    (("power_tree", "children", 0, "rating_w"), None,
     "power_tree.children[0].rating_w: missing; expected a number > 0 (W)"),
    (("power_tree", "children", 1, "guaranteed_w"), None,
     "power_tree.children[1].guaranteed_w: missing; expected a number >= 0 (W)"),
    (("power_tree", "rating_w"), 0, "power_tree.rating_w = 0: expected a finite number > 0"),
    (("power_tree", "children", 1, "rating_w"), -5.0,
     "power_tree.children[1].rating_w = -5.0: expected a finite number > 0 (W)"),
    (("power_tree", "children", 1, "rating_w"), "5 kW",
     "power_tree.children[1].rating_w = '5 kW': expected a finite number > 0 (W)"),
    (("power_tree", "children", 1, "guaranteed_w"), float("nan"),
     "power_tree.children[1].guaranteed_w = nan: expected a finite number >= 0 (W)"),
    (("power_tree", "children", 1, "rack"), "a",
     "power_tree.children[1].rack = 'a': duplicate of power_tree.children[0].children[0].rack"),
    (("power_tree", "children", 1, "rack"), "row_1",
     "power_tree.children[1].rack = 'row_1': duplicate of power_tree.children[0].name"),
    (("power_tree", "children", 1, "rack"), "rack 7", "power_tree.children[1].rack = 'rack 7'"
     ": expected a name of [A-Za-z0-9_.-]+"),
    (("power_tree", "children", 1, "guaranteed_w"), 5000.5,
     "power_tree.children[1].guaranteed_w = 5000.5: above the rack's rating_w 5000.0"),
    (("power_tree", "children", 0, "rating_w"), 3999,
     "power_tree.children[0]: guaranteed_w of the racks under 'row_1' sum to 4000 W > its "
     "rating_w 3999 W"),
    (("power_tree", "rating_w"), 6999, "power_tree: guaranteed_w of the racks under 'room' "
     "sum to 7000 W > its rating_w 6999 W"),
    (("power_tree", "children", 0, "children"), [], "power_tree.children[0].children = []: "
     "expected a non-empty list of levels and racks"),
    (("power_tree", "children", 1), "rack_09", "power_tree.children[1] = 'rack_09': expected "
     "a mapping"),
    (("power_tree",), {"rack": "x", "rating_w": 1, "guaranteed_w": 0},
     "power_tree: a rack at the top; expected a level above racks"),
    (("room",), {}, "room: unknown key; expected power_tree (and ROS node sections)"),
])
def test_every_config_error_names_its_key_path(path, value, message):
    with pytest.raises(ConfigError) as info:
        load_power_tree(edited(path, value))
    assert any(message in e for e in info.value.errors), info.value.errors


def test_all_errors_are_reported_at_once():
    doc = edited(("power_tree", "children", 1, "rating_w"), -1)
    doc["power_tree"]["children"][0]["children"][1]["bogus"] = 1
    with pytest.raises(ConfigError) as info:
        load_power_tree(doc)
    assert len(info.value.errors) == 2, info.value.errors


def test_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read"):
        load_power_tree(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("power_tree: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML"):
        load_power_tree(bad)
    other = tmp_path / "other.yaml"
    other.write_text("pdu_actuator: {ros__parameters: {}}\n")
    with pytest.raises(ConfigError, match=r"other.yaml: power_tree: missing; expected a mapping "
                                          r"with a power_tree: key, got keys \['pdu_actuator'\]"):
        load_power_tree(other)
    other.write_text(other.read_text() + EXAMPLE.read_text())  # node sections may share it
    assert len(load_power_tree(other).rack_names) == 6
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=r"empty.yaml: power_tree: missing"):
        load_power_tree(empty)
    over = tmp_path / "over.yaml"
    over.write_text(EXAMPLE.read_text().replace("rating_w: 15000", "rating_w: 14000"))
    with pytest.raises(ConfigError, match=r"over.yaml: power_tree: guaranteed_w .* 'room' sum "
                                          r"to 14400 W > its rating_w 14000 W"):
        load_power_tree(over)


def test_a_tree_built_in_code_is_checked_too():
    levels = {"room": TreeLevel("room", 5000.0, None, ("a", "b"))}
    racks = {"a": RackSpec("a", "room", 4000.0, 3000.0), "b": RackSpec("b", "room", 4000.0,
                                                                        3000.0)}
    with pytest.raises(ConfigError, match="level 'room': guaranteed shares of its racks sum "
                                          "to 6000 W > its rating_w 5000 W"):
        PowerTree("room", levels, racks)
    with pytest.raises(ConfigError, match="rack 'b': parent 'row' is not a level listing it"):
        PowerTree("room", levels, {**racks, "b": RackSpec("b", "row", 1.0, 0.0)})
    with pytest.raises(ConfigError, match="top 'row': expected a level with parent None"):
        PowerTree("row", levels, racks)
    orphan = {**levels, "row": TreeLevel("row", 1.0, None, ())}
    with pytest.raises(ConfigError, match="'row': not reachable from the top level 'room'"):
        PowerTree("room", orphan, {k: RackSpec(k, "room", 1.0, 0.0) for k in racks})


@PROPERTY
@given(trees())
def test_random_trees_are_consistent(tree):
    assert set(tree.racks_under(tree.top)) == set(tree.rack_names)
    for rack in tree.rack_names:
        chain = tree.ancestors(rack)
        assert chain[-1] == tree.top and chain[0] == tree.racks[rack].parent
        assert all(rack in tree.racks_under(level) for level in chain)
    for name, total in tree.guaranteed_sums().items():
        assert total <= tree.levels[name].rating_w
