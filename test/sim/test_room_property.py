"""Property: over random rooms and demand shapes, every step of the shared loop keeps every
level's allocations in force and served power within its rating, trips no breaker, and
respects the global priority order at every coordinator step."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rackpower_nodes.sim.room import make_room
from rackpower_nodes.sim.room.loop import run_room
from helpers.room_sim import shaped_day

LEVELS = st.lists(st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.3]) | st.floats(0.0, 1.5),
                  min_size=1, max_size=4)


@st.composite
def rooms(draw):
    n = draw(st.integers(2, 5))
    presets = draw(st.lists(st.sampled_from(["office", "ai", "mixed"]), min_size=n,
                            max_size=n))
    row_ratio = draw(st.floats(0.75, 1.0))
    room_ratio = draw(st.floats(0.75, 1.0))
    guaranteed = draw(st.floats(0.4, 1.0)) * row_ratio * room_ratio * 0.999
    room = make_room(n, seed=draw(st.integers(100, 199)),
                     racks_per_row=draw(st.integers(1, n)), row_ratio=row_ratio,
                     room_ratio=room_ratio, guaranteed_frac=guaranteed, presets=presets,
                     margin_frac=draw(st.sampled_from([0.02, 0.1, 0.3])))
    steps = 60
    days = {r.name: shaped_day(r, draw(LEVELS), draw(st.floats(0.0, 0.3)), steps,
                               draw(st.integers(0, 2**31)))
            for r in room.racks}
    return room, days


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rooms())
def test_every_step_keeps_the_ratings_and_the_priority_order(case):
    room, days = case
    res = run_room(room, days, "shared")
    assert res.over_rating_steps == 0
    assert np.all(res.level_max_alloc <= 1.0 + 1e-9)
    assert np.all(res.level_max_served <= 1.0 + 1e-9)
    assert res.trips == {"rack": 0, "row": 0, "room": 0}
    assert res.priority_violation_steps == 0, res.violation_examples
