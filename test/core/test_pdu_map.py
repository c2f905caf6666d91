"""Register maps: presets load, every validation rule names file, key, value and expectation,
codecs round-trip, request planning respects the Modbus limits."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.pdu_map import (
    PRESET_DIR, RegisterMap, decode_words, encode_words, load_register_map, plan_blocks,
    preset_names,
)

GOOD = {
    "outlets": 8,
    "points": {
        "outlet_power_w": {"table": "holding", "address": 100, "stride": 2, "type": "float32"},
        "outlet_current_a": {"table": "input", "address": 0, "type": "uint16", "scale": 0.01},
        "outlet_state": {"table": "coil", "address": 0, "writable": True},
        "outlet_allocation_w": {"table": "holding", "address": 400, "stride": 2,
                                "type": "float32", "writable": True},
    },
    "identity": {"outlet_count": {"table": "holding", "address": 1, "type": "uint16",
                                  "expect": "outlets"}},
}


def _with(path: str, value):
    """GOOD with the dotted `path` set to `value` (or removed when value is ...)."""
    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return raw


def test_presets_load_and_are_installed_from_config_pdu():
    assert {"rackpower_sim", "xerus_style"} <= set(preset_names())
    assert PRESET_DIR.name == "pdu" and PRESET_DIR.parent.name == "config"
    sim = load_register_map("rackpower_sim")
    assert sim.outlets == 24 and sim.can_write_allocations and not sim.switching_allowed
    assert not sim.can_switch
    power = sim.point("outlet_power_w")
    assert (power.table, power.address, power.stride, power.type, power.word_order) == \
        ("holding", 100, 2, "float32", "big")
    assert {c.name: c.expect for c in sim.identity}["outlet_count"] == 24
    xerus = load_register_map("xerus_style")
    assert not xerus.can_write_allocations and xerus.point("outlet_allocation_w") is None
    assert xerus.point("outlet_current_a").type == "float32"
    assert xerus.point("outlet_state").table == "coil"
    assert "vendor" in (PRESET_DIR / "xerus_style.yaml").read_text()


def test_load_by_path_and_unknown_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("outlets: 2\npoints:\n  outlet_power_w: {table: input, address: 5, "
                    "type: int16, scale: 0.5}\n")
    m = load_register_map(path)
    assert m.name == "mine" and m.source == str(path) and m.point("outlet_power_w").stride == 1
    with pytest.raises(ConfigError, match="no such preset.*rackpower_sim"):
        load_register_map("no_such_pdu")
    with pytest.raises(ConfigError, match="cannot read"):
        load_register_map(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("outlets: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_register_map(tmp_path / "bad.yaml")


def test_with_outlets_revalidates_identity():
    m = load_register_map("rackpower_sim").with_outlets(16)
    assert m.outlets == 16 and {c.name: c.expect for c in m.identity}["outlet_count"] == 16


@pytest.mark.parametrize("raw, message", [
    ([1, 2], "top level = [1, 2]: expected a mapping"),
    (_with("outlets", ...), "outlets: missing, expected an integer"),
    (_with("outlets", 0), "outlets = 0: expected 1..4096"),
    (_with("outlets", "24"), "outlets = '24': expected an integer"),
    (_with("outlets", True), "outlets = True: expected an integer"),
    (_with("colour", "red"), "colour: unknown key, expected one of"),
    (_with("switching_allowed", "yes"), "switching_allowed = 'yes': expected true or false"),
    (_with("points", None), "points = None: expected a mapping of point names"),
    (_with("points.outlet_power_w", ...), "points.outlet_power_w: missing, expected a register"),
    (_with("points.outlet_energy_j", {}), "points.outlet_energy_j: unknown key"),
    (_with("points.outlet_power_w", 7), "points.outlet_power_w = 7: expected a mapping"),
    (_with("points.outlet_power_w.table", "coil"),
     "points.outlet_power_w.table = 'coil': expected one of holding, input"),
    (_with("points.outlet_power_w.table", ...), "points.outlet_power_w.table missing"),
    (_with("points.outlet_power_w.address", -1), "points.outlet_power_w.address = -1: expected"),
    (_with("points.outlet_power_w.address", 1.5), "address = 1.5: expected an integer"),
    (_with("points.outlet_power_w.address", 65535), "outlet 8 ends at address"),
    (_with("points.outlet_power_w.stride", 1), "points.outlet_power_w.stride = 1: expected 2"),
    (_with("points.outlet_power_w.type", "float"),
     "points.outlet_power_w.type = 'float': expected one of uint16, int16"),
    (_with("points.outlet_power_w.word_order", "middle"),
     "word_order = 'middle': expected one of big, little"),
    (_with("points.outlet_power_w.scale", 0), "scale = 0: expected a finite non-zero number"),
    (_with("points.outlet_power_w.scale", float("nan")), "scale = nan: expected a finite"),
    (_with("points.outlet_power_w.bits", 3), "points.outlet_power_w.bits: unknown key"),
    (_with("points.outlet_current_a.writable", True),
     "outlet_current_a.writable = True: the input table is read-only"),
    (_with("points.outlet_state.table", "holding"),
     "outlet_state.table = 'holding': expected one of coil, discrete"),
    (_with("points.outlet_state.type", "uint16"),
     "outlet_state.type = 'uint16': expected one of bool"),
    (_with("points.outlet_allocation_w.writable", False),
     "outlet_allocation_w.writable = False: expected true"),
    (_with("points.outlet_allocation_w.table", "input"),
     "outlet_allocation_w.table = 'input': expected one of holding"),
    (_with("points.outlet_allocation_w.address", 110),
     "holding register 110 is also used by outlet_power_w"),
    (_with("identity.outlet_count.address", 100),
     "identity.outlet_count: holding register 100 is also used by outlet_power_w"),
    (_with("identity.outlet_count.expect", "many"),
     "identity.outlet_count.expect = 'many': expected a number or 'outlets'"),
    (_with("identity.outlet_count.table", "coil"),
     "identity.outlet_count.table = 'coil': expected one of holding, input"),
    (_with("identity.outlet_count", 5), "identity.outlet_count = 5: expected a mapping"),
    (_with("identity", [1]), "identity = [1]: expected a mapping"),
    (_with("switching_allowed", True) | {"points": {
        "outlet_power_w": GOOD["points"]["outlet_power_w"],
        "outlet_state": {"table": "coil", "address": 0}}},
     "switching_allowed = True: expected points.outlet_state to be a coil with writable"),
    (_with("switching_allowed", True) | {"points": {
        "outlet_power_w": GOOD["points"]["outlet_power_w"]}},
     "switching_allowed = True: expected an outlet_state coil point"),
    (_with("name", 5), "name = 5: expected a string"),
    (_with("points.boot_count", {"table": "coil", "address": 0}),
     "points.boot_count.table = 'coil': expected one of holding, input"),
    (_with("points.boot_count", {"table": "input", "address": 0, "type": "uint32",
                                 "stride": 2}),
     "points.boot_count.stride: unknown key"),
    (_with("points.uptime_s", {"table": "holding", "address": 401, "type": "uint32"}),
     "points.uptime_s: holding register 401 is also used by outlet_allocation_w"),
])
def test_malformed_maps_name_file_key_value_and_expectation(raw, message):
    with pytest.raises(ConfigError) as err:
        RegisterMap.from_mapping(raw, "maps/bad.yaml")
    assert message in str(err.value)
    assert all(e.startswith("maps/bad.yaml: ") for e in err.value.errors)


def test_device_wide_restart_points():
    """boot_count and uptime_s are one value per PDU: no stride, no outlet count."""
    assert RegisterMap.from_mapping(GOOD, "good.yaml").boot_point is None
    raw = _with("points.uptime_s", {"table": "input", "address": 65534, "type": "uint32"})
    m = RegisterMap.from_mapping(raw, "good.yaml")
    assert m.boot_point.name == "uptime_s" and not m.boot_point.per_outlet
    raw["points"]["boot_count"] = {"table": "holding", "address": 0, "type": "uint16"}
    m = RegisterMap.from_mapping(raw, "good.yaml")
    assert m.boot_point.name == "boot_count"           # the counter is preferred
    sim = load_register_map("rackpower_sim").boot_point
    assert (sim.table, sim.address, sim.type) == ("input", 0, "uint32")


def test_good_map_and_switching_flag():
    m = RegisterMap.from_mapping(GOOD, "good.yaml")
    assert m.can_write_allocations and not m.can_switch
    assert RegisterMap.from_mapping(_with("switching_allowed", True), "g.yaml").can_switch
    np.testing.assert_array_equal(m.point("outlet_power_w").address_of([1, 8]), [100, 114])


@pytest.mark.parametrize("type_, order, values", [
    ("float32", "big", [0.0, 1.5, -230.25, 3.0e5]),
    ("float32", "little", [0.0, 1.5, -230.25]),
    ("uint32", "big", [0, 1, 70000, 2**32 - 1]),
    ("int32", "little", [-(2**31), -1, 0, 2**31 - 1]),
    ("uint16", "big", [0, 1, 65535]),
    ("int16", "big", [-32768, -1, 32767]),
])
def test_codecs_round_trip(type_, order, values):
    words = encode_words(np.array(values, dtype=float), type_, order)
    assert words.dtype == np.uint16
    np.testing.assert_allclose(decode_words(words, type_, order), values, rtol=1e-7)


def test_word_order_and_scale():
    big = encode_words(np.array([1.0]), "float32", "big")
    assert big.tolist() == [[0x3F80, 0x0000]]
    assert encode_words(np.array([1.0]), "float32", "little").tolist() == [[0x0000, 0x3F80]]
    m = RegisterMap.from_mapping(GOOD, "good.yaml")
    current = m.point("outlet_current_a")
    assert current.encode([2.5]).tolist() == [[250]]
    assert current.decode([[250]]).tolist() == [2.5]
    with pytest.raises(ValueError, match="outlet_current_a: raw value 70000.0 outside uint16"):
        current.encode([700.0])
    with pytest.raises(ValueError, match="expected finite"):
        current.encode([float("nan")])


def test_plan_blocks_merges_within_limits():
    # contiguous and touching spans merge; a readable gap merges; an unknown gap does not
    assert plan_blocks([(100, 2), (102, 2)], 125) == [(100, 4)]
    assert plan_blocks([(100, 2), (110, 2)], 125) == [(100, 2), (110, 2)]
    assert plan_blocks([(100, 2), (110, 2)], 125, [(100, 48)]) == [(100, 12)]
    # the limit splits: 24 float32 outlets x 3 points never exceed 125 per request
    blocks = plan_blocks([(a, 2) for a in range(0, 300, 2)], 125)
    assert all(n <= 125 for _, n in blocks) and sum(n for _, n in blocks) == 300
    assert blocks[0] == (0, 124)            # never splits a 2-register value
    assert plan_blocks([(0, 300)], 123) == [(0, 123), (123, 123), (246, 54)]
    assert plan_blocks([], 125) == []
