"""The shipped operator views of the rack (config/rviz/rack.rviz, config/foxglove/
rack_layout.json) read what the rack_view node publishes: its topic, with QoS RViz can match
(transient local), every marker namespace core/rack_view.py draws, and the allocation fields
the Foxglove plot names exist in PowerAllocation."""
from __future__ import annotations

import json

import yaml
from helpers import REPO

from rackpower_nodes.core.rack_view import RackView, snapshot

RVIZ = REPO / "config" / "rviz" / "rack.rviz"
FOXGLOVE = REPO / "config" / "foxglove" / "rack_layout.json"
TOPIC = "/rack_01/rack_markers"


def _namespaces() -> set[str]:
    snap = snapshot("rack_01", "proactive", "", 3680.0, 4600.0, ["a"], [1.0], [2.0], [3.0])
    return {m.ns for m in RackView().markers(snap) if m.ns}


def test_rviz_config_shows_the_markers_in_the_racks_frame():
    doc = yaml.safe_load(RVIZ.read_text())
    manager = doc["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "rack_01"
    (display,) = [d for d in manager["Displays"]
                  if d["Class"] == "rviz_default_plugins/MarkerArray"]
    topic = display["Topic"]
    assert topic["Value"] == TOPIC
    assert topic["Durability Policy"] == "Transient Local"
    assert topic["Reliability Policy"] == "Reliable"
    assert set(display["Namespaces"]) == _namespaces()


def test_foxglove_layout_has_the_3d_view_the_totals_plot_and_the_raw_allocation():
    from rackpower.msg import PowerAllocation

    doc = json.loads(FOXGLOVE.read_text())
    panels = doc["configById"]
    (three_d,) = [p for k, p in panels.items() if k.startswith("3D!")]
    assert three_d["topics"] == {TOPIC: {"visible": True}}
    (plot,) = [p for k, p in panels.items() if k.startswith("Plot!")]
    fields = [p["value"].rsplit(".", 1) for p in plot["paths"]]
    assert {topic for topic, _ in fields} == {"/rack_01/power_allocation"}
    assert [f for _, f in fields] == ["total_measured_w", "total_allocated_w", "budget_w"]
    assert all(hasattr(PowerAllocation(), f) for _, f in fields)
    (raw,) = [p for k, p in panels.items() if k.startswith("RawMessages!")]
    assert raw["topicPath"] == "/rack_01/power_allocation"

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(
            node["second"])
    assert sorted(leaves(doc["layout"])) == sorted(panels)
