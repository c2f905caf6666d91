"""RackDemand and RackBudget messages to and from the core's shapes (nodes/room_msgs.py), and
a rack's id from its namespace; no DDS."""
from __future__ import annotations

import math

import pytest

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.room import RackGrant, rack_demand
from rackpower_nodes.nodes.room_msgs import (
    demand_from_msg, demand_to_msg, grant_from_msg, grant_to_msg, rack_id_of)


def test_a_demand_survives_the_message():
    d = rack_demand("r1", 1796329000.25, 1.0, [2, 1, 2], [50.0, 40.0, 60.0],
                    [300.0, 45.0, 100.0], 1840.0, 700.0,
                    total_w={"p50": 400.0, "p90": 450.5, "p99": 500.25}, acked_seq=7,
                    acked_budget_w=1420.0, budget_source="coordinator")
    back = demand_from_msg(demand_to_msg(d))
    assert back == d             # float32 fields: these values are exact in float32
    assert back.priority == (2, 1) and back.floor_w == (110.0, 40.0)


def test_a_demand_before_any_grant_keeps_nan():
    d = rack_demand("r1", 1.5, 1.0, [1], [50.0], [60.0], 1840.0, 700.0,
                    budget_source="fallback")
    back = demand_from_msg(demand_to_msg(d))
    assert math.isnan(back.acked_budget_w) and back.acked_seq == 0 and back.total_w == {}


def test_a_grant_survives_the_message():
    g = RackGrant("r2", 12, 1500.0, 1840.0, 2.0, "room")
    msg = grant_to_msg(g, 1796329000.5)
    assert msg.header.stamp.sec == 1796329000 and msg.header.stamp.nanosec == 500000000
    assert grant_from_msg(msg) == g


@pytest.mark.parametrize("ns, rack", [("/rack_07", "rack_07"), ("/row_1/rack_07", "rack_07"),
                                      ("/r1/", "r1")])
def test_the_rack_id_is_the_last_part_of_the_namespace(ns, rack):
    assert rack_id_of(ns) == rack


def test_the_root_namespace_names_no_rack():
    with pytest.raises(ConfigError, match="coordinator.rack_id"):
        rack_id_of("/")
