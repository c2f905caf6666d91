"""ChangeGate: a component's health verdict goes out at once when it changes, otherwise once
every refresh period."""
from __future__ import annotations

import math

import pytest

from rackpower_nodes.core.health.publishing import ChangeGate


def test_an_unchanged_verdict_goes_out_once_per_refresh_period():
    gate = ChangeGate(5.0)
    sent = [t for t in range(0, 21) if gate.due("srv01", ("ok", ""), float(t))]
    assert sent == [0, 5, 10, 15, 20]


def test_a_change_of_state_or_cause_goes_out_at_once_and_restarts_the_period():
    gate = ChangeGate(5.0)
    assert gate.due("srv01", ("ok", ""), 0.0)
    assert not gate.due("srv01", ("ok", ""), 1.0)
    assert gate.due("srv01", ("watch", "psu_efficiency"), 2.0)
    assert gate.due("srv01", ("watch", "fan_wear"), 3.0)          # another cause
    assert gate.due("srv01", ("ok", ""), 4.0)                      # back to ok
    assert not gate.due("srv01", ("ok", ""), 8.9)
    assert gate.due("srv01", ("ok", ""), 9.0)


def test_components_are_gated_apart():
    gate = ChangeGate(5.0)
    assert gate.due("srv01", ("ok", ""), 0.0)
    assert gate.due("srv02", ("ok", ""), 1.0)          # its own first message
    assert not gate.due("srv01", ("ok", ""), 1.0)
    assert gate.due("srv01", ("ok", ""), 5.0) and not gate.due("srv02", ("ok", ""), 5.0)


def test_zero_refresh_lets_every_verdict_through_and_a_clock_going_back_refreshes():
    every = ChangeGate(0.0)
    assert all(every.due("srv01", ("ok", ""), 0.0) for _ in range(3))
    gate = ChangeGate(5.0)
    assert gate.due("srv01", ("ok", ""), 100.0)
    assert gate.due("srv01", ("ok", ""), 50.0)         # the wall clock stepped back


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_a_bad_period_is_refused(bad):
    with pytest.raises(ValueError, match="refresh_s"):
        ChangeGate(bad)
