"""Tests of the allocation controller's corrections: what each one reports, and the pinned
growth of a component held at its allocation (the allocation in force, the hold, priorities)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.allocation import flat, rack

from rackpower_nodes.core.allocation import AllocationController


# ---------------------------------------------------------------- corrections


def settled(breaker_w) -> AllocationController:
    """Proactive controller after one cycle at 100 W forecast and measured: [105, 105] W."""
    ctl = rack(breaker_w)
    ctl.step(100.0, [100.0, 100.0], flat(100.0, [100, 100]))
    assert ctl.allocated_w.tolist() == [105.0, 105.0]
    return ctl


@pytest.mark.parametrize("breaker_w, gpu_w, allocated, action", [
    (10000.0, 150.0, [157.5, 105.0], "raised_from_slack"),
    # budget 250 W: both keep their measured draw; the cpu's headroom went to the gpu
    (312.5, 150.0, [150.0, 100.0], "took_from_lower_priority"),
    (10000.0, 1200.0, [1000.0, 105.0], "capped_at_ceiling"),
    (312.5, 300.0, [230.0, 20.0], "budget_exhausted"),  # cpu cut to its floor
    (10000.0, 50.0, [105.0, 105.0], "none"),  # below the forecast: nothing to raise
])
def test_corrections_report_what_was_done(breaker_w, gpu_w, allocated, action):
    ctl = settled(breaker_w)
    d = ctl.step(100.1, [gpu_w, 100.0], flat(100.0, [100, 100]), in_force_w=[105.0, 105.0])
    assert d.allocated_w.tolist() == allocated
    (c,) = d.corrections
    assert (c.component, c.predicted_w, c.actual_w, c.allocated_w) == ("gpu", 100.0, gpu_w, 105.0)
    assert (c.new_allocated_w, c.action) == (allocated[0], action)
    assert c.error_w == gpu_w - 100.0


def test_a_throttled_component_grows_from_what_it_holds_until_it_is_free():
    """The gpu's demand steps to 400 W while the PDU holds it at 110 W: pinned, its demand
    unknown, it asks for three times what it holds plus the margin (363 W), then, still
    held, three times that (up to its 1000 W ceiling); once free it keeps its measured draw
    plus the margin (440 W covers 400 W); the cpu, not held, keeps its own."""
    ctl = rack(mode="reactive", pinned_hold_s=0.0)
    ctl.step(0.0, [100.0, 50.0], None)
    demand = np.array([400.0, 50.0])
    steps, pinned = [], []
    for t in (1.0, 2.0, 3.0, 4.0):
        held = ctl.allocated_w.copy()               # the devices hold the last allocation
        d = ctl.step(t, np.minimum(demand, held), None, in_force_w=held)
        steps.append(d.allocated_w[0])
        pinned.append([c.component for c in d.corrections])
        assert d.allocated_w[1] == 60.0
    assert steps == pytest.approx([363.0, 1000.0, 440.0, 440.0])
    assert pinned == [["gpu"], ["gpu"], [], []]


def test_pinned_is_judged_against_the_allocation_in_force_when_measured():
    """Decisions take lead_s to reach the devices: a measurement at the old allocation is
    pinned (the new one is not in force yet), and the controller's own estimate of what is in
    force says the same when the devices' is not given."""
    ctl = rack(mode="reactive", lead_s=1.0, pinned_hold_s=0.0)
    ctl.step(0.0, [100.0, 50.0], None)             # gpu 110 W, in force from t = 1 s
    assert ctl.in_force_at(0.5).tolist() == ctl.static_allocation().tolist()
    assert ctl.in_force_at(1.0).tolist() == [110.0, 60.0]
    d = ctl.step(1.0, [110.0, 50.0], None)          # held at 110: pinned, grows to 363
    assert d.allocated_w[0] == 363.0
    d = ctl.step(1.5, [110.0, 50.0], None)          # 363 is not in force before t = 2 s
    assert d.allocated_w[0] == 363.0 and [c.component for c in d.corrections] == ["gpu"]
    assert d.corrections[0].allocated_w == 110.0
    # the devices' report wins over the estimate; NaN falls back to it
    assert ctl.in_force_at(1.6, [np.nan, 55.0]).tolist() == [110.0, 55.0]
    with pytest.raises(ValueError, match="in_force_w has shape"):
        ctl.in_force_at(1.6, [1.0])


def test_an_unthrottled_component_a_margin_below_its_allocation_is_not_pinned():
    """Even with a margin of 1 %: pinned needs the power within half the margin of the
    allocation, so a component sitting where the controller put it does not grow."""
    ctl = rack(mode="reactive", reactive_margin_frac=0.01, reactive_margin_w=2.0,
               pinned_hold_s=0.0)
    ctl.step(0.0, [500.0, 50.0], None)
    held = ctl.allocated_w.copy()
    assert held[0] == 505.0
    d = ctl.step(1.0, [500.0, 50.0], None, in_force_w=held)
    assert d.corrections == () and d.allocated_w[0] == 505.0
    d = ctl.step(2.0, [504.5, 50.0], None, in_force_w=held)   # within 1 W of 505: held
    assert [c.component for c in d.corrections] == ["gpu"] and d.allocated_w[0] == 1000.0


def test_a_short_clip_at_the_allocation_gains_the_margin_a_held_one_grows():
    """Noise above the margin clips a component at its allocation for a step or two: that
    gains only the margin; held for pinned_hold_s (0.2 s) it is throttled and grows."""
    ctl = rack(mode="reactive", pinned_hold_s=0.2)
    ctl.step(0.0, [100.0, 50.0], None)
    got = []
    for t in (1.0, 1.1, 1.2):
        held = np.array([110.0, 60.0])                # the devices keep 110 W in force
        got.append(ctl.step(t, [110.0, 50.0], None, in_force_w=held).allocated_w[0])
    assert got == pytest.approx([121.0, 121.0, 363.0])
    ctl.step(1.3, [100.0, 50.0], None, in_force_w=[110.0, 60.0])   # free: the run ends
    d = ctl.step(1.4, [110.0, 50.0], None, in_force_w=[110.0, 60.0])
    assert d.allocated_w[0] == pytest.approx(121.0)  # a new run starts from zero


def test_priorities_decide_who_waits_when_two_pinned_components_do_not_both_fit():
    """Budget 400 W, both components held at their allocation and wanting more: the slack
    goes to the gpu (priority 2) first; still held a whole actuation delay (lead_s) later,
    the gpu claims the cpu's (priority 1) draw down to its floor: the cpu waits."""
    ctl = rack(breaker_w=500.0, mode="reactive", pinned_hold_s=0.0)    # budget 400 W
    ctl.step(0.0, [100.0, 100.0], None)
    held = ctl.allocated_w.copy()
    assert held.tolist() == [110.0, 110.0]
    d = ctl.step(1.0, held, None, in_force_w=held)
    assert d.allocated_w.tolist() == [290.0, 110.0]
    held = d.allocated_w.copy()
    d = ctl.step(2.0, held, None, in_force_w=held)
    assert d.allocated_w.tolist() == [380.0, 20.0]   # cpu down to its floor: it waits



def test_a_pinned_run_ends_when_the_controller_allocates_the_static_split():
    """Held, then static for a while (nothing is judged pinned there): back in reactive, a
    new clip at the allocation starts a new run and gains only the margin."""
    ctl = rack(mode="reactive", pinned_hold_s=0.2)
    ctl.step(0.0, [100.0, 50.0], None)
    ctl.step(1.0, [110.0, 50.0], None, in_force_w=[110.0, 60.0])     # a run starts at 1 s
    ctl.set_mode("static")
    ctl.step(2.0, [110.0, 50.0], None, in_force_w=[110.0, 60.0])
    ctl.set_mode("reactive")
    d = ctl.step(3.0, [110.0, 50.0], None, in_force_w=[110.0, 60.0])
    assert d.allocated_w[0] == pytest.approx(121.0)
