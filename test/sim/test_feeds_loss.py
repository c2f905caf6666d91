"""Feed loss under load in fast mode: the real controller (feed-aware, with its precomputed
contingency caps) against the two-feed rack, through the actuator's detection time and the
BMC cap latency. The survivor's breaker must not trip, the caps must land well inside the
trip curve's time, and the same controller never told of the loss must overload the survivor
until it trips (the counterfactual the caps prevent)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO

from rackpower_nodes.core.evaluation import EvalSetup
from rackpower_nodes.sim.feeds import load_feeds
from rackpower_nodes.sim.feeds.scenario import feed_plan, run_case
from rackpower_nodes.sim.pdu import PduModel
from rackpower_nodes.sim.rack_sim import generate, load_config
from rackpower_nodes.tools.evaluate_data import actuator_config

DETECT_S = 0.3          # the actuator's PDU read timeout
BMC_S, PDU_S = 1.0, 0.1
LOSS_AT_S, LOSS_S = 60.0, 120.0
START_H = 13.0          # the office day's busiest hour


@pytest.fixture(scope="module")
def busy():
    """Four busy minutes of a simulated office day (13:00), in the actuator's order."""
    acfg = actuator_config(REPO / "config" / "rack.yaml", [])
    names = [c.id for c in acfg.components]
    data = generate(START_H + 4 / 60, seed=42)
    first = int(START_H * 3600 * data.rate_hz)
    demand = np.ascontiguousarray(data.power_w[first:, [data.names.index(n) for n in names]])
    feeds = load_feeds(REPO / "config" / "rack_feeds.yaml", load_config(None)).reordered(names)
    capped = np.array([bool(u) for u in acfg.cap_urls])
    setup = EvalSetup(acfg.components, acfg.policy, np.where(capped, BMC_S, PDU_S))
    return demand, data.start_unix + START_H * 3600, data.rate_hz, setup, feeds


def _run(busy, case, feed):
    demand, start, rate, setup, feeds = busy
    plan = feed_plan(feeds, cap_time_s=3.0)
    return run_case(case, demand, start, rate, setup, feeds, plan, "reactive",
                    (feed, LOSS_AT_S, LOSS_S), DETECT_S)


@pytest.mark.parametrize("feed", ["A", "B"])
def test_the_survivor_is_capped_within_the_trip_curve_and_does_not_trip(busy, feed):
    demand, _, _, _, feeds = busy
    run = _run(busy, "feed-aware", feed)
    loss = run.summary()
    survivor = "B" if feed == "A" else "A"
    s = feeds.names.index(survivor)
    # under load: the survivor carries well over its rating the moment the feed goes
    assert loss["peak_multiple"] > 1.2
    assert run.stats["trips"] == 0 and loss["survivor_trips"] == 0
    assert run.result.seconds == pytest.approx(len(demand) / 10.0)     # ran to the end
    # capped: detection + the BMC latency (+ a control period), far inside the trip time
    trip_s = PduModel([1.0], feeds.breaker_w[s]).time_to_trip_s(loss["peak_multiple"])
    assert loss["time_to_cap_s"] is not None
    assert loss["time_to_cap_s"] <= DETECT_S + BMC_S + 0.2
    assert loss["time_to_cap_s"] < 0.1 * trip_s
    assert loss["peak_heat"] < 0.1
    # the price: energy throttled while the feed was out, the lowest priority first
    assert loss["loss_throttled_j"] > 0
    by_p = loss["loss_throttled_by_priority_j"]
    assert by_p[3] == pytest.approx(0.0, abs=1.0)
    assert run.stats["feeds"][survivor]["over_budget_s"] < DETECT_S + BMC_S + 0.5
    # restored: both feeds up again, each within its budget at the end
    assert not run.stats["feeds"][feed]["lost"]
    assert np.all(np.array([run.stats["feeds"][f]["load_w"] for f in feeds.names])
                  <= feeds.budget_w + 1e-6)


def test_without_the_contingency_the_survivor_trips(busy):
    capped = _run(busy, "feed-aware", "A").summary()
    blind = _run(busy, "no contingency", "A")
    loss = blind.summary()
    assert loss["survivor_trips"] == 1 and blind.stats["trips"] == 1
    assert loss["time_to_cap_s"] is None and loss["peak_heat"] >= 1.0
    # it tripped on the curve, after carrying the overload the caps remove in ~1.3 s
    tripped_after = blind.stats["feeds"]["B"]["trip_time_s"] - LOSS_AT_S
    assert tripped_after == pytest.approx(loss["over_rating_s"], abs=0.2)
    assert tripped_after > 10 * capped["time_to_cap_s"]
    assert blind.result.seconds < LOSS_AT_S + LOSS_S          # the rack went dark
