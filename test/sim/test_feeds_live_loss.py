"""A lost feed in the live simulator, stepped by hand (the rack's thread not started): the
survivor's load at the instant of the loss is what the outlets served then, even when caps
land before the rack's next step (an actuator on a fast link reacts within tens of ms, the live
rack steps every 0.1 s, later on a busy machine)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO

from rackpower_nodes.sim.live import LiveRack

BUSY_START = 1709557200.0       # 2024-03-04 13:00 UTC: simulated time 0 is the office's busy hour
RATING_W = 2300.0               # config/rack_feeds.yaml: 10 A at 230 V per feed


@pytest.fixture()
def rack(tmp_path):
    return LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=200.0,
                    pdu_base_port=0, bmc_port=None, feeds=REPO / "config" / "rack_feeds.yaml",
                    start_unix=BUSY_START)


def _survivor(rack: LiveRack) -> dict:
    return rack.feeds.stats()["events"][0]["survivors"]["B"]


def test_the_survivor_carries_the_load_of_the_instant_of_the_loss(rack):
    rack._advance_pdus(0.0, 0.1)
    tor_a = rack.sim.names.index("tor-a")
    served = rack.pdu_model.served_w[rack._outlet_of]
    carried = float(served.sum() - served[tor_a])        # tor-a is on feed A only: dark
    assert carried > 1.05 * RATING_W, served             # the busy hour overloads B alone

    rack.feeds.fail("A")
    assert _survivor(rack)["peak_multiple"] == pytest.approx(carried / RATING_W, rel=1e-9)
    # the contingency lands before the next step: every outlet capped to a tenth of its draw
    outlets = rack._outlet_of
    rack.pdu_model.set_server_caps(outlets, 0.1 * rack.pdu_model.served_w[outlets])
    rack._advance_pdus(0.1, 0.2)
    b = _survivor(rack)
    assert b["peak_multiple"] == pytest.approx(carried / RATING_W, rel=1e-9)
    assert rack.feeds.rack.feed_load_w[1] < RATING_W and rack.feeds.rack.trips == 0
    assert b["time_to_rating_s"] is None or b["time_to_rating_s"] >= 0.0


def test_a_loss_at_light_load_records_no_overload(rack):
    rack._advance_pdus(0.0, 0.1)
    outlets = rack._outlet_of
    rack.pdu_model.set_server_caps(outlets, np.full(len(outlets), 50.0))
    rack._advance_pdus(0.1, 0.2)
    rack.feeds.fail("A")
    assert 0.0 < _survivor(rack)["peak_multiple"] < 1.0
