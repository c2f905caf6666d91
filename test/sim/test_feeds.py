"""The two-feed rack model: the feeds config (validated, naming the key), the split of each
component over its feeds, feed loss (survivors carry the dual-corded load at once, single
cords go dark), the per-feed breakers' trip curve and the loss counters (time to cap)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from helpers import REPO

from rackpower_nodes.sim.feeds import FeedRack, load_feeds, parse_feeds
from rackpower_nodes.sim.pdu import PduModel
from rackpower_nodes.sim.rack_model import SimConfigError
from rackpower_nodes.sim.rack_sim import load_config

FEEDS_YAML = REPO / "config" / "rack_feeds.yaml"
DT = 0.1


@pytest.fixture(scope="module")
def rack():
    return load_config(None)


@pytest.fixture(scope="module")
def section():
    return yaml.safe_load(FEEDS_YAML.read_text())["feeds"]


def _tiny(rack, section, **split):
    """The rack's feeds with every component's split given (name -> [a, b]) or 50/50."""
    sec = copy.deepcopy(section)
    sec["split"] = {n: split.get(n, [0.5, 0.5]) for n in rack.names}
    return parse_feeds(sec, rack)


def test_the_shipped_feeds_config(rack):
    feeds = load_feeds(FEEDS_YAML, rack)
    assert feeds.names == ("A", "B") and feeds.pdus == ("pdu-a", "pdu-b")
    np.testing.assert_allclose(feeds.breaker_w, [2300.0, 2300.0])
    np.testing.assert_allclose(feeds.budget_w, [1840.0, 1840.0])
    np.testing.assert_allclose(feeds.split.sum(axis=1), 1.0)
    names = list(rack.names)
    np.testing.assert_array_equal(feeds.split[names.index("tor-a")], [1.0, 0.0])
    np.testing.assert_array_equal(feeds.split[names.index("tor-b")], [0.0, 1.0])
    dual = [i for i, c in enumerate(rack.components) if c.kind in ("server", "storage")]
    assert feeds.dual[dual].all() and feeds.dual.sum() == len(dual)
    assert np.all(np.abs(feeds.split[dual, 0] - 0.5) <= 0.04)
    assert np.ptp(feeds.split[dual, 0]) > 0.01           # an imbalance was drawn
    assert load_feeds(FEEDS_YAML, rack).split.tobytes() == feeds.split.tobytes()  # seeded


def test_no_feeds_section_means_no_feed_model(rack):
    assert load_feeds({"seed": 1}, rack) is None


@pytest.mark.parametrize("change, key", [
    (lambda s: s.update(extra=1), "feeds: unknown keys ['extra']"),
    (lambda s: s["breakers"].pop("B"), "feeds.breakers"),
    (lambda s: s["breakers"]["A"].pop("breaker_a"), "feeds.breakers.A.breaker_a"),
    (lambda s: s["breakers"]["A"].update(breaker_a=-3), "feeds.breakers.A.breaker_a"),
    (lambda s: s["breakers"]["B"].update(pdu="pdu-a"), "feeds.breakers.B.pdu"),
    (lambda s: s["breakers"]["B"].update(pdu="pdu-z"), "tor-b"),
    (lambda s: s.update(derating=1.5), "feeds.derating"),
    (lambda s: s.update(imbalance=0.5), "feeds.imbalance"),
    (lambda s: s.update(dual_corded=["fridge"]), "feeds.dual_corded"),
    (lambda s: s.update(seed=-1), "feeds.seed"),
    (lambda s: s.update(split={"srv99": [0.5, 0.5]}), "feeds.split"),
    (lambda s: s.update(split={"srv01": [0.7, 0.7]}), "feeds.split.srv01"),
    (lambda s: s.update(split={"srv01": [1.0]}), "feeds.split.srv01"),
])
def test_a_bad_feeds_config_names_the_key(rack, section, change, key):
    sec = copy.deepcopy(section)
    change(sec)
    with pytest.raises(SimConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_feeds(sec, rack)


def test_both_feeds_up_each_carries_its_share(rack, section):
    feeds = load_feeds(FEEDS_YAML, rack)
    model = FeedRack(feeds)
    demand = np.linspace(100.0, 250.0, len(rack.names))
    served = model.apply(demand, DT)
    np.testing.assert_allclose(served, demand)
    np.testing.assert_allclose(model.feed_load_w, demand @ feeds.split)
    assert model.trips == 0 and model.stats()["events"] == []


def test_loss_moves_the_dual_load_at_once_and_single_cords_go_dark(rack, section):
    tor_a = rack.names.index("tor-a")
    feeds = _tiny(rack, section, **{"tor-a": [1.0, 0.0], "tor-b": [0.0, 1.0]})
    model = FeedRack(feeds)
    demand = np.full(len(rack.names), 100.0)
    model.apply(demand, DT)
    np.testing.assert_allclose(model.feed_load_w, [800.0, 800.0])
    model.fail_feed("A")
    served = model.apply(demand, DT)
    assert served[tor_a] == 0.0 and np.all(np.delete(served, tor_a) == 100.0)
    np.testing.assert_allclose(model.feed_load_w, [0.0, 1500.0])   # all but tor-a, on B
    stats = model.stats()
    assert stats["dark_j"] == pytest.approx(100.0 * DT)
    assert stats["throttled_j"] == 0.0
    assert stats["events"][0]["feed"] == "A" and list(stats["events"][0]["survivors"]) == ["B"]
    model.restore_feed("A")
    model.apply(demand, DT)
    np.testing.assert_allclose(model.feed_load_w, [800.0, 800.0])
    assert model.stats()["events"][0]["t_restore_s"] == pytest.approx(2 * DT)


def test_an_uncapped_survivor_trips_on_the_pdu_trip_curve(rack, section):
    feeds = _tiny(rack, section)
    model = FeedRack(feeds)
    n = len(rack.names)
    demand = np.full(n, 1.5 * 2300.0 / n)          # both feeds: 0.75 each; one: 1.5
    model.fail_feed("B", t_s=5.0)
    expected = 5.0 + PduModel([1.0], 2300.0).time_to_trip_s(1.5)     # 24 s after the loss
    steps = 0
    while not model.tripped and steps < 1000:
        model.apply(demand, DT)
        steps += 1
    assert model.tripped and model.trips == 1
    assert model.breakers[0].trip_time_s == pytest.approx(expected, abs=2 * DT)
    stats = model.stats()
    event = stats["events"][0]["survivors"]["A"]
    assert event["trips"] == 1 and event["peak_multiple"] == pytest.approx(1.5)
    assert event["time_to_cap_s"] is None and event["peak_heat"] >= 1.0
    assert stats["feeds"]["A"]["over_rating_s"] == pytest.approx(expected - 5.0, abs=2 * DT)
    assert model.lost_seen(0.0) == frozenset({"A", "B"})


def test_caps_within_the_trip_time_save_the_survivor_and_time_to_cap_is_measured(rack,
                                                                                 section):
    feeds = _tiny(rack, section)
    model = FeedRack(feeds, hold_s=1.0)
    n = len(rack.names)
    demand = np.full(n, 1.5 * 2300.0 / n)
    model.fail_feed("A", t_s=2.0)
    for k in range(600):
        t = k * DT
        if t >= 2.0 + 1.3 - 1e-9:                  # caps in force 1.3 s after the loss
            model.set_allocations(np.arange(n), 1800.0 / n)
        model.apply(demand, DT)
    assert not model.tripped
    survivor = model.stats()["events"][0]["survivors"]["B"]
    assert survivor["time_to_cap_s"] == pytest.approx(1.3, abs=1.5 * DT)
    assert survivor["time_to_rating_s"] == pytest.approx(1.3, abs=1.5 * DT)
    assert survivor["peak_multiple"] == pytest.approx(1.5)
    assert 0.0 < survivor["peak_heat"] < 0.2
    event = model.stats()["events"][0]
    lost_w = (1.5 * 2300.0 - 1800.0)
    assert event["throttled_j"] == pytest.approx(lost_w * (60.0 - 3.3), rel=0.01)
    assert sum(event["throttled_by_component_j"]) == pytest.approx(event["throttled_j"])


def test_the_actuator_sees_a_loss_after_the_detection_time(rack, section):
    model = FeedRack(_tiny(rack, section))
    demand = np.full(len(rack.names), 50.0)
    model.fail_feed("A", t_s=1.0)
    seen = []
    for _ in range(30):
        seen.append(model.lost_seen(0.3))
        model.apply(demand, DT)
    first = next(k for k, s in enumerate(seen) if s)
    assert seen[first] == frozenset({"A"}) and first * DT == pytest.approx(1.3)


def test_bad_feed_names_and_times_are_refused(rack, section):
    model = FeedRack(_tiny(rack, section))
    with pytest.raises(ValueError, match="feed = 'C'"):
        model.fail_feed("C")
    with pytest.raises(ValueError, match="t_s"):
        model.restore_feed("A", float("nan"))
    with pytest.raises(ValueError, match="hold_s"):
        FeedRack(_tiny(rack, section), hold_s=-1.0)
