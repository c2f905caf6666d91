"""core/actuation.py: how a new allocation replaces the held one (dead band, whole watts,
shrinks first, growth within the budget), and the evaluation run with BMC-style writes."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rackpower_nodes.core.actuation import (
    grow_within_budget, round_down, settle, skip_small_changes)
from rackpower_nodes.core.allocation import Component, PolicyConfig
from rackpower_nodes.core.evaluation import EvalSetup, bmc_actuation, run_mode
from rackpower_nodes.sim.pdu import PduModel


def test_exact_writes_reach_the_wanted_values():
    held = np.array([300.0, 100.0, 250.0])
    want = np.array([120.0, 280.0, 250.5])
    np.testing.assert_allclose(settle(held, want, 0.0, 0.0, 700.0), want)


def test_growth_waits_for_room_in_component_order():
    after_shrink = np.array([300.0, 300.0, 100.0])
    want = np.array([400.0, 350.0, 100.0])
    grow = np.array([True, True, False])
    np.testing.assert_allclose(grow_within_budget(after_shrink, want, grow, 900.0), want)
    # 50 W of room: the first component takes it, the second waits
    np.testing.assert_allclose(grow_within_budget(after_shrink, want, grow, 750.0),
                               [350.0, 300.0, 100.0])
    held = np.array([300.0, 300.0, 300.0])
    np.testing.assert_allclose(settle(held, want, 0.0, 0.0, 700.0), [300.0, 300.0, 100.0])


def test_dead_band_and_whole_watts():
    held = np.array([200.0, 200.0, 200.0, 0.0])
    want = np.array([203.0, 196.0, 180.7, 57.9])
    np.testing.assert_array_equal(skip_small_changes(held, want, 5.0),
                                  [200.0, 200.0, 180.7, 57.9])
    np.testing.assert_array_equal(round_down(want, np.array([1.0, 1.0, 1.0, 0.0])),
                                  [203.0, 196.0, 180.0, 57.9])
    np.testing.assert_array_equal(settle(held, want, 5.0, 1.0, 1000.0),
                                  [200.0, 200.0, 180.0, 57.0])
    # no dead band, whole watts: a change under a watt is not written, as the PDU link does
    np.testing.assert_array_equal(settle(np.array([200.0, 200.0]), np.array([199.5, 198.5]),
                                         0.0, 1.0, 1000.0), [200.0, 198.0])


@settings(max_examples=500, deadline=None)
@given(n=st.integers(1, 12), data=st.data())
def test_settle_never_passes_the_budget_nor_the_larger_of_held_and_wanted(n, data):
    watts = arrays(np.float64, n, elements=st.floats(0.0, 800.0))
    held, want = data.draw(watts), data.draw(watts)
    budget = data.draw(st.floats(1.0, 5000.0))
    dead_band = data.draw(st.floats(0.0, 20.0))
    resolution = data.draw(st.sampled_from([0.0, 1.0]))
    out = settle(held, want, dead_band, resolution, budget)
    assert np.all(out >= 0.0)
    assert np.all(out <= np.maximum(held, want) + 1e-9)
    if held.sum() <= budget:
        assert out.sum() <= budget + 1e-9
    if dead_band == 0.0 and resolution == 0.0 and want.sum() <= budget:
        np.testing.assert_allclose(out, want, atol=1e-6)


def test_bmc_actuation_only_where_a_cap_url_is_set():
    assert bmc_actuation(["", ""], 5.0) == (None, None)
    band, res = bmc_actuation(["http://b/redfish/v1/Chassis/1", ""], 5.0)
    np.testing.assert_array_equal(band, [5.0, 0.0])
    np.testing.assert_array_equal(res, [1.0, 0.0])


def test_evaluation_with_bmc_writes_holds_the_budget_and_whole_watts():
    rng = np.random.default_rng(4)
    steps, n = 600, 4
    demand = 150.0 + 40.0 * np.sin(np.arange(steps)[:, None] / 50.0 + np.arange(n)) \
        + rng.normal(0.0, 3.0, (steps, n))
    comps = tuple(Component(f"c{i}", 50.0, 400.0, 1) for i in range(n))
    policy = PolicyConfig(breaker_w=900.0, derating=0.8)          # 720 W
    exact = run_mode("reactive", demand, 0.0, 10.0, EvalSetup(comps, policy),
                     PduModel(np.full(n, 400.0), 900.0))
    band, res = bmc_actuation(["u"] * n, 5.0)
    caps = run_mode("reactive", demand, 0.0, 10.0,
                    EvalSetup(comps, policy, dead_band_w=band, resolution_w=res),
                    PduModel(np.full(n, 400.0), 900.0))
    for r in (exact, caps):
        assert r.budget_violations == 0 and r.breaker_trips == 0
    held = caps.trace["allocated_w"][1:]
    np.testing.assert_array_equal(held, np.floor(held))           # whole watts in force
    assert np.all(held.sum(axis=1) <= 720.0)
    assert not np.array_equal(held, np.floor(exact.trace["allocated_w"][1:]))  # it did differ
