"""Shrink-first release of rack budgets: hand-computed steps on the small room (room 10 kW >
row_1 6 kW > racks a, b of 4 kW, guaranteed 2 kW each; rack c of 5 kW, guaranteed 3 kW), and a
property over simulated racks with real `BudgetLease`s, late and lost messages and a silent
coordinator: no level's racks may ever draw more than its rating."""
from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.room import PROPERTY, demand, small_tree, trees
from rackpower_nodes.core.room import BudgetLease, RackDemand, RackGrant, ShrinkFirst


def ack(rack: str, grant: RackGrant | None, stamp: float, source: str = "coordinator",
        budget_w: float | None = None) -> RackDemand:
    """The demand of a rack that has applied `grant` (None: none yet, on fallback)."""
    if grant is None:
        return demand(rack, {1: (0.0, 1.0)}, stamp_unix=stamp, budget_source="fallback",
                      acked_budget_w=budget_w if budget_w is not None else math.nan)
    return demand(rack, {1: (0.0, 1.0)}, stamp_unix=stamp, acked_seq=grant.seq,
                  acked_budget_w=grant.budget_w if budget_w is None else budget_w,
                  budget_source=source)


def budgets(grants: dict[str, RackGrant]) -> dict[str, float]:
    return {r: g.budget_w for r, g in grants.items()}


def test_racks_never_heard_from_count_at_their_rating():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)
    assert sf.committed_w() == {"a": 4000, "b": 4000, "c": 5000}
    assert sf.update({"a": 3000, "b": 9000, "c": 1000}, {}, 0.0) == {}   # nobody to grant
    assert sf.committed_w() == {"a": 4000, "b": 4000, "c": 5000}
    # a and b on fallback at their guaranteed shares; c unheard: the room counts 9000 W and
    # row_1 has 2000 W of room
    fallback = {r: ack(r, None, 0.0, budget_w=2000.0) for r in ("a", "b")}
    grants = sf.update({"a": 3000, "b": 3000, "c": 1000}, fallback, 1.0)
    assert budgets(grants) == {"a": 2500, "b": 2500}
    assert grants["a"] == RackGrant("a", 1, 2500.0, 3000.0, 10.0, "room")
    assert sf.committed_w() == {"a": 2500, "b": 2500, "c": 5000}


def test_under_a_level_counted_over_its_rating_nobody_grows():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)
    # c on its own config (counted at 5000 W), a and b on fallback holding 3000 and 2500 W:
    # the room counts 10500 W > 10000 W; new grants hold them where they are, at most (c,
    # which says nothing of what it holds: its guaranteed share)
    heard = {"a": ack("a", None, 0.0, budget_w=3000.0), "b": ack("b", None, 0.0,
                                                                 budget_w=2500.0),
             "c": demand("c", {1: (0, 1)}, stamp_unix=0.0)}
    grants = sf.update({"a": 4000, "b": 500, "c": 5000}, heard, 0.0)
    assert budgets(grants) == {"a": 3000, "b": 500, "c": 3000}


def test_growth_waits_for_the_shrink_to_be_acknowledged():
    sf = ShrinkFirst(small_tree(), lease_s=10.0, coordinator="row_1")
    fallback = {r: ack(r, None, 0.0, budget_w=g) for r, g in
                (("a", 2000.0), ("b", 2000.0), ("c", 3000.0))}
    g1 = sf.update({"a": 3000, "b": 3000, "c": 4000}, fallback, 0.0)
    # from the guaranteed shares (7000 W): row_1 has 2000 W of room, the room 3000 W
    assert budgets(g1) == {"a": 3000, "b": 3000, "c": 4000}
    acks = {r: ack(r, g, 1.0) for r, g in g1.items()}
    assert budgets(sf.update({}, acks, 1.0)) == budgets(g1)          # no target: kept
    g2 = sf.update({"a": 4000, "b": 2000, "c": 4000}, acks, 2.0)
    assert budgets(g2) == {"a": 3000, "b": 2000, "c": 4000}          # b shrinks, a waits
    assert (g2["a"].seq, g2["a"].target_w, g2["b"].seq) == (1, 4000.0, 2)
    assert sf.committed_w()["b"] == 3000.0                           # until b says so
    acks["b"] = ack("b", g1["b"], 0.5)                               # late: older than known
    assert budgets(sf.update({"a": 4000}, acks, 2.5))["a"] == 3000
    acks["b"] = ack("b", g2["b"], 3.0)
    g3 = sf.update({"a": 4000}, acks, 3.0)
    assert budgets(g3) == {"a": 4000, "b": 2000, "c": 4000} and g3["a"].seq == 2
    assert sf.committed_w() == {"a": 4000, "b": 2000, "c": 4000}


def on_fallback(stamp: float = 0.0) -> dict[str, RackDemand]:
    """Every rack of the small room on its guaranteed share, no grant yet."""
    return {r: ack(r, None, stamp, budget_w=g) for r, g in
            (("a", 2000.0), ("b", 2000.0), ("c", 3000.0))}


def test_devices_holding_more_than_granted_count():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)
    g = sf.update({"a": 1000, "b": 1000, "c": 1000}, on_fallback(), 0.0)
    assert budgets(g) == {"a": 1000, "b": 1000, "c": 1000}           # shrinks: at once
    acks = {r: ack(r, g[r], 1.0, budget_w=w) for r, w in
            (("a", 1000.0), ("b", 3500.0), ("c", 1000.0))}   # b's devices read back 3500 W
    g = sf.update({"a": 4000}, acks, 1.0)
    assert g["a"].budget_w == 2500.0                        # row_1: 6000 - 3500


def test_a_stale_or_falling_back_rack_counts_its_guaranteed_share():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)            # stale after 5 s
    g = sf.update({"a": 1000, "b": 1000, "c": 1000}, on_fallback(), 0.0)
    acks = {r: ack(r, g[r], 0.0) for r in g}
    sf.update({}, acks, 0.0)
    assert sf.committed_w() == {"a": 1000, "b": 1000, "c": 1000}
    sf.update({}, acks, 5.0)
    assert sf.committed_w() == {"a": 1000, "b": 1000, "c": 1000}
    g2 = sf.update({}, {"a": acks["a"], "b": ack("b", g["b"], 5.5, source="fallback",
                                                 budget_w=1000.0)}, 5.5)
    # a and c unchanged for more than 5 s: stale; b's lease on grant 1 is lapsing: that
    # grant is gone, a new one needs a new seq
    assert sf.committed_w() == {"a": 2000, "b": 2000, "c": 3000}
    assert (g2["a"].seq, g2["b"].seq, g2["b"].budget_w) == (1, 2, 2000.0)
    acks = {"a": ack("a", g["a"], 6.0), "b": ack("b", g2["b"], 6.0), "c": ack("c", g["c"], 6.0)}
    sf.update({"b": 1000}, acks, 6.0)
    assert sf.committed_w() == {"a": 1000, "b": 2000, "c": 1000}


def test_after_a_silence_of_its_own_every_rack_counts_its_guaranteed_share():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)
    g = sf.update({"a": 1000, "b": 1000, "c": 1000}, on_fallback(), 0.0)
    acks = {r: ack(r, g[r], 1.0) for r in g}
    sf.update({}, acks, 1.0)
    assert sf.committed_w() == {"a": 1000, "b": 1000, "c": 1000}
    # 9 s without an update: these demands may have waited all that time
    acks = {r: ack(r, g[r], 2.0) for r in g}
    sf.update({}, acks, 10.0)
    assert sf.committed_w() == {"a": 2000, "b": 2000, "c": 3000}


def test_a_rack_on_its_own_config_counts_at_its_rating():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)
    sf.update({}, {"c": ack("c", None, 0.0)}, 0.0)
    assert sf.committed_w()["c"] == 3000.0
    sf.update({}, {"c": demand("c", {1: (0, 1)}, stamp_unix=1.0, acked_budget_w=900.0)}, 1.0)
    assert sf.committed_w()["c"] == 5000.0


def test_after_a_restart_a_rack_counts_at_its_rating_until_it_acks_one_of_ours():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)
    old = RackGrant("a", 41, 1500.0, 1500.0, 10.0, "room")   # from the previous instance
    g = sf.update({"a": 1500}, {"a": ack("a", old, 0.0)}, 0.0)
    assert g["a"].seq == 42 and sf.committed_w()["a"] == 4000.0
    sf.update({"a": 1500}, {"a": ack("a", g["a"], 1.0)}, 1.0)
    assert sf.committed_w()["a"] == 1500.0


def test_a_restarted_rack_takes_the_grant_in_force_again():
    sf = ShrinkFirst(small_tree(), lease_s=10.0)
    g = sf.update({"a": 1000, "b": 1000, "c": 1000}, on_fallback(), 0.0)
    sf.update({}, {r: ack(r, g[r], 1.0) for r in g}, 1.0)
    # a's actuator restarts: a fresh lease, nothing acknowledged, on fallback
    restarted = {**{r: ack(r, g[r], 2.0) for r in g}, "a": ack("a", None, 2.0, budget_w=800.0)}
    again = sf.update({}, restarted, 2.0)
    assert again["a"].seq == 1 and sf.committed_w()["a"] == 2000.0   # its guaranteed share
    lease = BudgetLease(4000.0, 2000.0)
    assert lease.on_grant(again["a"], 0.0) and lease.budget_w(0.0) == 1000.0
    sf.update({}, {**restarted, "a": ack("a", again["a"], 3.0)}, 3.0)
    assert sf.committed_w()["a"] == 1000.0


@pytest.mark.parametrize("kw, message", [
    (dict(lease_s=0.0), r"lease_s = 0.0: expected a finite number > 0 \(s\)"),
    (dict(lease_s=10.0, stale_s=math.inf), r"stale_s = inf: expected a finite number > 0"),
])
def test_bad_settings_raise(kw, message):
    with pytest.raises(ValueError, match=message):
        ShrinkFirst(small_tree(), **kw)


class _Room:
    """Racks with real `BudgetLease`s and a coordinator, talking with late and lost messages.

    Every step (1 s): due grants arrive; each rack's drawable power is its lease's budget;
    some racks send a demand (acking what they applied) that arrives 0-3 steps later; the
    coordinator, unless silent, updates with the newest demands it has and sends every grant
    with a delay of 0-2 steps, a rack missing at most two in a row."""

    def __init__(self, tree, rng: random.Random, lease_s: float = 10.0):
        self.tree, self.rng = tree, rng
        self.sf = ShrinkFirst(tree, lease_s)
        self.leases = {r: BudgetLease(s.rating_w, s.guaranteed_w) for r, s in tree.racks.items()}
        self.grants_in_flight: list[tuple[float, RackGrant]] = []
        self.demands_in_flight: list[tuple[float, RackDemand]] = []
        self.heard: dict[str, RackDemand] = {}
        self.missed = {r: 0 for r in tree.racks}

    def step(self, now: float, targets: dict | None, send_p: float) -> dict[str, float]:
        rng = self.rng
        for at, g in sorted(self.grants_in_flight, key=lambda x: (x[0], rng.random())):
            if at <= now:
                self.leases[g.rack].on_grant(g, now)
        self.grants_in_flight = [x for x in self.grants_in_flight if x[0] > now]
        drawn = {r: lease.budget_w(now) for r, lease in self.leases.items()}
        for rack, lease in self.leases.items():
            if rng.random() < send_p:
                d = demand(rack, {1: (0.0, 1.0)}, stamp_unix=now, acked_seq=lease.seq,
                           acked_budget_w=lease.budget_w(now), budget_source=lease.source(now))
                self.demands_in_flight.append((now + rng.randint(0, 3), d))
        for at, d in self.demands_in_flight:
            if at <= now and (d.rack not in self.heard or
                              d.stamp_unix >= self.heard[d.rack].stamp_unix or rng.random() < .5):
                self.heard[d.rack] = d                    # sometimes an older one after all
        self.demands_in_flight = [x for x in self.demands_in_flight if x[0] > now]
        if targets is not None:
            for rack, g in self.sf.update(targets, self.heard, now).items():
                if self.missed[rack] < 2 and rng.random() < 0.3:
                    self.missed[rack] += 1
                    continue
                self.missed[rack] = 0
                self.grants_in_flight.append((now + rng.randint(0, 2), g))
        return drawn


@PROPERTY
@given(trees(max_racks=8), st.integers(0, 2**32 - 1), st.floats(0.3, 1.0))
def test_no_level_ever_carries_more_than_its_rating(tree, seed, send_p):
    rng = random.Random(seed)
    room = _Room(tree, rng)
    targets: dict[str, float] = {}
    for k in range(60):
        silent = 25 <= k < 40                             # the coordinator stops for 15 s
        if rng.random() < 0.4:
            targets = {r: rng.choice([0.0, 0.5, 1.0, rng.random()]) * s.rating_w
                       for r, s in tree.racks.items() if rng.random() < 0.8}
        drawn = room.step(float(k), None if silent else targets, send_p)
        for name, level in tree.levels.items():
            total = math.fsum(drawn[r] for r in tree.racks_under(name))
            assert total <= level.rating_w, (k, name, total, level.rating_w)
        if not silent and k > 0:
            committed = room.sf.committed_w()
            assert all(drawn[r] <= committed[r] for r in tree.racks), (k, drawn, committed)
