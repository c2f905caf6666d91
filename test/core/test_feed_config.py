"""The actuator's redundant-feed parameters (core/feed_config.py): plain pytest, no ROS."""
from __future__ import annotations

import re

import numpy as np
import pytest
from helpers.rack import actuator_params

from rackpower_nodes.core.actuator_config import actuator_config_from_params
from rackpower_nodes.core.params import ConfigError, flatten_parameters

AB = {"names": ["A", "B"], "breaker_a": [4.0]}          # 920 W each, 736 W budgets


def _params(feeds=AB, pdus_feed=("A", "B"), **components) -> dict:
    values = flatten_parameters(actuator_params([5020, 5021]))    # pdu-a, pdu-b
    values.update({f"feeds.{k}": v for k, v in feeds.items()})
    if pdus_feed is not None:
        values["pdus.feed"] = list(pdus_feed)
    values.update({f"components.{k}": v for k, v in components.items()})
    return values


def test_no_feeds_is_one_feed_as_before():
    cfg = actuator_config_from_params(flatten_parameters(actuator_params([5020, 5021])))
    assert cfg.feeds is None


def test_dual_corded_by_outlets_and_the_trip_curve():
    cfg = actuator_config_from_params(_params(second_pdu=["pdu-b", "pdu-b", "", ""]))
    plan = cfg.feeds.plan
    assert plan.names == ("A", "B")
    np.testing.assert_allclose(plan.breaker_w, [920.0, 920.0])
    np.testing.assert_allclose(plan.budget_w, [736.0, 736.0])            # budget.derating
    np.testing.assert_allclose(plan.split, [[0.5, 0.5], [0.5, 0.5], [0, 1], [0, 1]])
    assert plan.cap_time_s == 3.0 and plan.overload_multiple == pytest.approx(np.sqrt(11.0))
    assert cfg.feeds.pdu_feed == {"pdu-a": "A", "pdu-b": "B"}
    assert cfg.feeds.lost({"pdu-b"}) == {"B"} and cfg.feeds.lost(set()) == frozenset()


def test_explicit_split_overload_and_feed_ratings():
    feeds = dict(AB, breaker_a=[4.0, 3.0], voltage_v=200.0, derating=0.5,
                 overload_multiple=1.5, cap_time_s=1.0)
    cfg = actuator_config_from_params(
        _params(feeds, feed_split=[0.6, 0.4, 0.4, 0.6, 1.0, 0.0, 0.0, 1.0]))
    plan = cfg.feeds.plan
    np.testing.assert_allclose(plan.breaker_w, [800.0, 600.0])
    np.testing.assert_allclose(plan.budget_w, [400.0, 300.0])
    assert plan.overload_multiple == 1.5
    np.testing.assert_allclose(plan.split[0], [0.6, 0.4])


@pytest.mark.parametrize("params, expected", [
    (_params(pdus_feed=None), "pdus.feed = []: has 0 values, expected 2"),
    (_params(pdus_feed=("A", "C")), "pdus.feed[1] = 'C' (pdu-b)"),
    (_params(pdus_feed=("A", "A")), "feeds.names: feed 'B' has no PDU"),
    (_params(dict(AB, breaker_a=[])), "feeds.breaker_a = []"),
    (_params(second_pdu=["pdu-c", "", "", ""]), "components.second_pdu[0] = 'pdu-c'"),
    (_params(feed_split=[0.5, 0.5]), "components.feed_split: has 2 values, expected 8"),
    (_params(feed_split=[0.5, 0.6] + [1.0, 0.0] * 3), "components.feed_split[0:2]"),
    (_params(dict(AB, breaker_a=[1.0]), second_pdu=["pdu-b"] * 2 + ["pdu-a"] * 2),
     "components.floor_w: after losing feed A, the floors on feed B sum to 200 W, above its "
     "budget 184 W"),
    (_params(feeds={}, pdus_feed=("A", "B")), "pdus.feed: set without feeds.names"),
])
def test_errors_name_the_key(params, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        actuator_config_from_params(params)
