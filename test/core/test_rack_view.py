"""core/rack_view.py, rack_layout.py and rack_view_config.py: the markers of a hand-made
allocation (positions by rack unit, colours by state, text, the gauge's numbers, DELETEALL
when the component list changes) and the view's configuration errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.rack_layout import (
    RACK_WIDTH_M, U_M, LayoutError, Placement, Slot, lay_out, placement_from_config)
from rackpower_nodes.core.rack_view import (
    AMBER, GREEN, GREY, RED, Health, RackView, power_state, snapshot)
from rackpower_nodes.core.rack_view_config import (
    load_rack_view_config_yaml, rack_view_config_from_params)

REPO = Path(__file__).resolve().parents[2]

NAN = math.nan
IDS = ["srv01", "srv02", "srv03", "tor-a"]
# srv01 well under (100 of 250), srv02 near (230 of 250), srv03 held (250 of 250),
# tor-a not measured yet
MEASURED = [100.0, 230.0, 250.0, NAN]
ALLOCATED = [250.0, 250.0, 250.0, 200.0]
CEILING = [500.0, 500.0, 400.0, 400.0]


def _snap(ids=IDS, measured=MEASURED, **kw):
    n = len(ids)
    return snapshot("rack_07", kw.pop("mode", "proactive"), "", 3680.0, 4600.0, ids,
                    measured[:n], ALLOCATED[:n], CEILING[:n], **kw)


def _by(markers, ns):
    return {m.id: m for m in markers if m.ns == ns}


def _view():
    # srv03 at U10..U11 (2U) by configuration; the others stacked from the top of a 12U rack
    placement = placement_from_config(12, ["srv03", "tor-a"], kinds=["server", "switch"],
                                      rack_u=[10, 0], height_u=[2, 0])
    return RackView(placement, near_fraction=0.85, held_fraction=0.97)


def test_boxes_stand_at_their_rack_units():
    markers = _view().markers(_snap())
    shells = _by(markers, "shell")
    assert sorted(shells) == [0, 1, 2, 3]             # one per component, id = its index
    # srv01 and srv02 stack from the top (U12, U11 is taken by srv03's 2U: U10-U11)
    expect = {0: (12, 1), 1: (9, 1), 2: (10, 2), 3: (8, 1)}
    for i, (u, h) in expect.items():
        box = shells[i]
        assert box.shape == "cube"
        assert box.position[2] == pytest.approx((u - 1 + h / 2) * U_M)
        assert box.scale[2] == pytest.approx(h * U_M, abs=0.004)   # less the gap
        assert box.scale[0] == pytest.approx(RACK_WIDTH_M)
        assert box.scale[1] == pytest.approx(0.6)
    # the cabinet outline is as tall as the rack
    outline = _by(markers, "rack")[0]
    assert max(p[2] for p in outline.points) == pytest.approx(12 * U_M)


@pytest.mark.parametrize(("measured", "allocated", "state"), [
    (100.0, 250.0, "under"), (215.0, 250.0, "near"), (243.0, 250.0, "held"),
    (260.0, 250.0, "held"), (NAN, 250.0, "unmeasured"), (100.0, NAN, "unmeasured"),
    (0.0, 0.0, "under"), (5.0, 0.0, "held")])
def test_power_state(measured, allocated, state):
    assert power_state(measured, allocated, 0.85, 0.97) == state


def test_colours_fill_and_allocation_tick_follow_power():
    markers = _view().markers(_snap())
    fills, shells, ticks = (_by(markers, ns) for ns in ("fill", "shell", "allocation"))
    assert [fills[i].color for i in range(4)] == [GREEN, AMBER, RED, GREY]
    assert [shells[i].color[:3] for i in range(4)] == [c[:3] for c in (GREEN, AMBER, RED,
                                                                       GREY)]
    assert all(shells[i].color[3] < fills[i].color[3] for i in range(4))   # faint shell
    # the fill is measured / ceiling of the rack's width, from the left rail
    assert fills[0].scale[0] == pytest.approx(100 / 500 * RACK_WIDTH_M)
    assert fills[0].position[0] == pytest.approx(fills[0].scale[0] / 2)
    assert fills[2].scale[0] == pytest.approx(250 / 400 * RACK_WIDTH_M)
    assert fills[3].scale[0] > 0                     # unmeasured: a sliver, never zero
    # the allocation tick at allocated / ceiling, spanning the component's height
    tick = ticks[1]
    assert tick.shape == "lines" and len(tick.points) == 2
    assert [p[0] for p in tick.points] == pytest.approx([250 / 500 * RACK_WIDTH_M] * 2)
    # everything in front of the rack face stands at y < 0
    assert all(p[1] < 0 for p in tick.points) and fills[0].position[1] < 0


def test_text_says_id_measured_and_allocated_watts_and_health():
    health = {"srv02": Health("fault", "fan_wear"), "srv01": Health("ok"),
              "tor-a": Health("watch", "sensor_stuck", sensor_fault=True),
              "srv03": Health("fault", "", sensor_fault=True)}
    markers = _view().markers(_snap(), health)
    labels = _by(markers, "label")
    assert labels[0].text == "srv01 100 W / 250 W"
    assert labels[1].text == "srv02 230 W / 250 W  FAULT fan_wear"
    assert labels[2].text == "srv03 250 W / 250 W  FAULT sensor"
    assert labels[3].text == "tor-a ? W / 200 W  WATCH sensor_stuck"
    outlines = _by(markers, "health")
    assert outlines[1].shape == "lines" and outlines[1].color == RED
    assert len(outlines[1].points) == 24             # the box's 12 edges
    assert outlines[3].color == AMBER
    assert outlines[0].shape == "delete"             # ok: no outline
    unknown = _by(_view().markers(_snap()), "health")  # no verdicts: no outlines
    assert {m.shape for m in unknown.values()} == {"delete"}


def test_gauge_numbers_and_bars():
    snap = _snap()
    markers = _view().markers(snap)
    gauge = _by(markers, "gauge")
    h = 12 * U_M
    assert snap.total_measured_w == pytest.approx(580.0)       # the known measurements
    assert snap.total_allocated_w == pytest.approx(950.0)
    assert gauge[0].scale[2] == pytest.approx(h)               # full scale: the breaker
    assert gauge[1].scale[2] == pytest.approx(950.0 / 4600.0 * h)   # allocated
    assert gauge[2].scale[2] == pytest.approx(580.0 / 4600.0 * h)   # measured
    assert gauge[2].color == GREEN                              # far under the budget
    assert [p[2] for p in gauge[3].points] == pytest.approx([3680.0 / 4600.0 * h] * 2)
    assert gauge[4].text.splitlines() == [
        "budget 3680 W (breaker 4600 W)", "allocated 950 W", "measured 580 W",
        "mode proactive"]


def test_stale_allocation_is_grey_and_says_so():
    markers = _view().markers(_snap(stale=True, age_s=12.4))
    assert {m.color for m in _by(markers, "fill").values()} == {GREY}
    assert _by(markers, "gauge")[2].color == GREY
    assert _by(markers, "rack")[1].text == "rack_07  proactive  STALE: allocation 12 s old"


def test_deleteall_first_and_whenever_the_component_list_changes():
    view = _view()
    first = view.markers(_snap())
    assert first[0].shape == "delete_all"
    again = view.markers(_snap(measured=[120.0, 200.0, 240.0, 50.0]))
    assert all(m.shape != "delete_all" for m in again)
    # the same markers (namespace, id) in place: RViz updates them
    assert [(m.ns, m.id) for m in again] == [(m.ns, m.id) for m in first[1:]]
    fewer = view.markers(_snap(ids=IDS[:3]))
    assert fewer[0].shape == "delete_all"
    assert sorted(_by(fewer, "shell")) == [0, 1, 2]


def test_layout_overflow_grows_the_rack_and_bad_slots_are_named():
    slots, top = lay_out(["a", "b", "c"], Placement(units=2))
    assert (slots["a"], slots["b"], slots["c"]) == (Slot(2, 1), Slot(1, 1), Slot(3, 1))
    assert top == 3
    with pytest.raises(LayoutError, match="srv02 and srv01 both occupy U5"):
        Placement(42, {"srv01": Slot(4, 2), "srv02": Slot(5, 1)})
    with pytest.raises(LayoutError, match="srv01: rack_u 42, height_u 2 is outside a 42U"):
        Placement(42, {"srv01": Slot(42, 2)})


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError) as info:
        rack_view_config_from_params({
            "components.names": ["srv01", "srv02"], "components.rack_u": [3],
            "components.kinds": ["server", "gpu"], "publish.period_s": 0.1,
            "colours.near_fraction": 0.9, "colours.held_fraction": 0.8,
            "rack.unit": 42})
    text = str(info.value)
    assert "components.rack_u = [3]: has 1 values, expected 2" in text
    assert "components.kinds[1] = 'gpu': expected one of server, switch, storage" in text
    assert "publish.period_s = 0.1: expected 0.5..60.0" in text
    assert "expected near_fraction < held_fraction" in text
    assert "rack.unit: not a parameter of rack_view; did you mean 'rack.units'?" in text
    with pytest.raises(ConfigError, match="srv02 and srv01 both occupy U4"):
        rack_view_config_from_params({"components.names": ["srv01", "srv02"],
                                      "components.rack_u": [3, 4], "components.height_u":
                                      [2, 1]})
    cfg = rack_view_config_from_params({})
    assert (cfg.period_s, cfg.placement.units, cfg.frame_id) == (1.0, 42, "")


@pytest.mark.parametrize("name", ["rack.yaml", "rack_ai.yaml"])
def test_shipped_configs_place_every_component_of_the_rack(name):
    """The rack_view section of a shipped config places exactly the actuator's components,
    each in the rack, none overlapping (the loader checks overlaps)."""
    from rackpower_nodes.core.actuator_config import load_actuator_config_yaml

    path = REPO / "config" / name
    placement = load_rack_view_config_yaml(path).placement
    ids = [c.id for c in load_actuator_config_yaml(path).components]
    assert sorted(placement.fixed) == sorted(ids)
    slots, top = lay_out(ids, placement)
    assert top == placement.units
