"""The PDU link (drivers/pdu_link.py) against real simulated PDUs on loopback: writes keep the
budget in every state the PDUs acknowledge, also when one PDU stops answering or restarts."""
from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.devices import LOOPBACK_TIMEOUT_S, foreign_write

from rackpower_nodes.core.pdu_map import RegisterMap
from rackpower_nodes.drivers.pdu import open_pdu
from rackpower_nodes.drivers.pdu_link import PduLink, PduTarget, float32_floor
from rackpower_nodes.sim.pdu import PduModel, SimPduServer

BUDGET = 1000.0
CEILING = 600.0


def _server(port: int = 0) -> SimPduServer:
    return SimPduServer("rackpower_sim", PduModel(np.full(24, CEILING), 10_000.0),
                        port=port).start()


@pytest.fixture
def pdus():
    servers = [_server(), _server()]
    yield servers
    for s in servers:
        s.stop()


def _link(servers, maps=("rackpower_sim", "rackpower_sim")) -> PduLink:
    """Components 0, 1 on PDU a outlets 1, 2; components 2, 3 on PDU b outlets 1, 2."""
    targets = [PduTarget(name, open_pdu(s.url, m, timeout_s=LOOPBACK_TIMEOUT_S), np.array([1, 2]),
                         np.array(index))
               for name, s, m, index in zip("ab", servers, maps, ([0, 1], [2, 3]))]
    link = PduLink(targets, 4, BUDGET, np.full(4, CEILING), retry_s=0.1)
    assert link.connect_all() == []
    return link


def _held(servers) -> np.ndarray:
    return np.concatenate([s.model.allocation_w[:2] for s in servers])


def test_writes_reach_both_pdus_and_the_acknowledged_sum_never_exceeds_the_budget(pdus):
    link = _link(pdus)
    # the PDUs start at their ratings (2400 W in all): the first write shrinks first
    for want in ([250.0, 250.0, 250.0, 250.0], [400.0, 100.0, 300.0, 200.0],
                 [100.0, 400.0, 200.0, 300.0]):
        assert link.write_now(np.array(want))
        np.testing.assert_array_equal(_held(pdus), float32_floor(np.array(want)))
        assert link.in_force_w.sum() <= BUDGET
    assert link.last_written
    link.close()


def _writes(link) -> list[int]:
    return [p["writes"] for p in link.status().pdus]


def test_with_room_for_old_and_new_values_each_pdu_is_written_once(pdus):
    link = _link(pdus)
    assert link.write_now(np.array([200.0, 200.0, 200.0, 200.0]))
    before = _writes(link)
    # each PDU has one outlet growing and one shrinking; 250 + 200 + 250 + 200 = 900 W fits
    # the budget whatever lands first: one request per PDU
    assert link.write_now(np.array([250.0, 150.0, 250.0, 150.0]))
    np.testing.assert_array_equal(_held(pdus), [250.0, 150.0, 250.0, 150.0])
    assert [a - b for a, b in zip(_writes(link), before)] == [1, 1]
    before = _writes(link)
    assert link.write_now(np.array([300.0, 100.0, 300.0, 100.0]))   # worst case 1000 W: once
    assert [a - b for a, b in zip(_writes(link), before)] == [1, 1]
    # 450 + 100 + 450 + 100 = 1100 W would not: the shrinks are written (and acknowledged)
    # before the growth, two requests per PDU, and the budget holds in between
    before = _writes(link)
    assert link.write_now(np.array([450.0, 50.0, 450.0, 50.0]))
    np.testing.assert_array_equal(_held(pdus), [450.0, 50.0, 450.0, 50.0])
    assert [a - b for a, b in zip(_writes(link), before)] == [2, 2]
    assert link.in_force_w.sum() <= BUDGET
    link.close()


def test_a_pdu_that_stops_answering_holds_back_growth_elsewhere(pdus):
    link = _link(pdus)
    assert link.write_now(np.array([250.0, 250.0, 250.0, 250.0]))
    port_b = pdus[1].port
    pdus[1].stop()
    # b should shrink to make room for a's growth; b cannot be reached, so a may only grow
    # as far as b's last acknowledged allocations leave room for
    assert not link.write_now(np.array([450.0, 450.0, 50.0, 50.0]))
    held_a = pdus[0].model.allocation_w[:2]
    assert held_a.sum() + 500.0 <= BUDGET          # b still holds 250 + 250
    assert not link.status().ok and "b:" in link.status().reason
    # b comes back with its defaults (600 W per outlet): the link reads them back, so a
    # still may not grow until b has shrunk
    pdus[1] = _server(port_b)
    assert link.connect_all() == []
    assert link.in_force_w[2:].tolist() == [CEILING, CEILING]
    assert link.write_now(np.array([450.0, 450.0, 50.0, 50.0]))
    np.testing.assert_array_equal(_held(pdus), [450.0, 450.0, 50.0, 50.0])
    link.close()


def test_monitoring_only_pdus_are_never_written_and_never_reported_written(pdus):
    raw = {"outlets": 24, "points": {
        "outlet_power_w": {"table": "holding", "address": 100, "stride": 2, "type": "float32"}}}
    monitor = RegisterMap.from_mapping(raw, "monitor.yaml")
    link = _link(pdus, maps=(monitor, monitor))
    assert link.write_now(np.array([100.0, 100.0, 100.0, 100.0]))   # nothing needed writing
    assert not link.last_written
    np.testing.assert_array_equal(_held(pdus), [CEILING] * 4)
    link.close()


def test_float32_floor_never_rounds_up():
    w = np.array([0.1, 1 / 3, 2300.0000001, 920.0, 1e-9])
    f = float32_floor(w)
    assert np.all(f <= w) and np.all(f.astype(np.float32).astype(np.float64) == f)


# -- verification from the hardware -----------------------------------------------------------
def _wait(condition, timeout_s: float = 20.0) -> bool:
    """Poll `condition` until true; the timeout is a guard against hanging, not a figure."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def test_a_foreign_value_is_named_counted_as_held_and_corrected(pdus):
    link = _link(pdus)
    want = np.array([250.0, 250.0, 250.0, 250.0])
    assert link.write_now(want)
    np.testing.assert_array_equal(link.held_w(), want)
    foreign_write(pdus[1], 1, 600.0)                 # b1: 250 -> 600 W, 1350 W in all
    found = link.verify_now()
    assert found == ["PDU b outlet 1: expected 250 W, found 600 W (read-back)"]
    # held_w reports the foreign value, and the budget arithmetic counts it as in force
    np.testing.assert_array_equal(link.held_w(), [250.0, 250.0, 600.0, 250.0])
    assert link.in_force_w.sum() == 1350.0
    conf = link.confirm(want)
    assert not conf.ok and conf.differences == ["PDU b outlet 1: expected 250 W, found 600 W"]
    link.start()                                      # the worker corrects it at once
    assert _wait(lambda: pdus[1].model.allocation_w[0] == 250.0)
    assert _wait(lambda: link.status().pdus[1]["corrections"] == 1)
    b = link.status().pdus[1]
    assert (b["foreign_values"], b["corrections"], b["uncorrected"]) == (1, 1, 0)
    assert b["last_foreign_value"] == "PDU b outlet 1: expected 250 W, found 600 W (read-back)"
    np.testing.assert_array_equal(link.held_w(), want)
    assert link.confirm(want).ok
    link.close()


def test_a_foreign_raise_holds_back_growth_elsewhere_until_it_is_shrunk(pdus):
    link = _link(pdus)
    assert link.write_now(np.array([250.0, 250.0, 250.0, 250.0]))
    foreign_write(pdus[1], 1, 600.0)
    assert link.verify_now()
    pdus[1].stop()                                    # ... and b cannot be corrected
    assert not link.write_now(np.array([400.0, 400.0, 50.0, 50.0]))
    # a may not grow: the 600 W found on b still counts (250 + 250 + 600 + 250 > 1000)
    np.testing.assert_array_equal(pdus[0].model.allocation_w[:2], [250.0, 250.0])
    assert np.isnan(link.held_w()[2:]).all()          # b unknown now, not assumed
    link.close()


def test_a_pdu_restarted_with_defaults_above_the_budget_is_counted_and_corrected(pdus):
    link = _link(pdus)
    want = np.array([250.0, 250.0, 250.0, 250.0])
    assert link.write_now(want)
    link.submit(want)
    link.start()
    pdus[1].reboot()                                  # back to 600 + 600 W; boot 1 -> 2
    assert _wait(lambda: link.status().pdus[1]["corrections"] == 2)
    np.testing.assert_array_equal(_held(pdus), want)
    b = link.status().pdus[1]
    assert (b["reboots"], b["foreign_values"], b["reconnects"]) == (1, 2, 1), b
    assert b["last_reboot"] == "PDU b restarted (boot_count 1 -> 2)"
    assert "expected 250 W, found 600 W (after connecting)" in b["last_foreign_value"]
    link.close()


def test_held_w_is_unknown_until_read_and_after_a_failed_request(pdus):
    targets = [PduTarget("a", open_pdu(pdus[0].url, "rackpower_sim", timeout_s=LOOPBACK_TIMEOUT_S),
                         np.array([1, 2]), np.array([0, 1]))]
    link = PduLink(targets, 2, BUDGET, np.full(2, CEILING), retry_s=0.1)
    assert np.isnan(link.held_w()).all()              # nothing read yet: no assumption
    assert link.connect_all() == []
    np.testing.assert_array_equal(link.held_w(), [CEILING, CEILING])    # as read back
    pdus[0].stop()
    assert link.verify_now() == []
    assert np.isnan(link.held_w()).all()              # not the ceilings, not the last value
    assert link.in_force_w.tolist() == [CEILING, CEILING]   # the budget keeps the worst case
    link.close()


def _until(cond, link: PduLink, want: np.ndarray, timeout_s: float = 30.0) -> bool:
    """Submit `want` every 20 ms (a steady controller) until `cond()`; False after the guard."""
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            return False
        link.submit(want)
        time.sleep(0.02)
    return True


def test_an_unchanged_allocation_is_not_written_again_but_still_verified(pdus):
    link = _link(pdus)
    a, b = link.targets
    want = np.array([250.0, 250.0, 250.0, 250.0])
    link.start()
    assert _until(lambda: np.array_equal(_held(pdus), want), link, want)
    writes, reads = (a.writes, b.writes), (a.readbacks, b.readbacks)
    # the same allocation over and over: no request writes it again, the read-back goes on
    assert _until(lambda: min(a.readbacks - reads[0], b.readbacks - reads[1]) >= 3, link, want)
    assert (a.writes, b.writes) == writes
    # a foreign value is still found by the read-back and corrected while nothing changes
    foreign_write(pdus[0], 1, 600.0)
    assert _until(lambda: a.corrections == 1 and _held(pdus)[0] == 250.0, link, want)
    assert a.mismatches == 1 and a.writes == writes[0] + 1 and b.writes == writes[1]
    # a changed allocation is written, to the PDU whose outlets changed only
    changed = np.array([300.0, 200.0, 250.0, 250.0])
    assert _until(lambda: np.array_equal(_held(pdus), changed), link, changed)
    assert a.writes > writes[0] + 1 and b.writes == writes[1]
    link.close()


def test_a_write_answered_with_the_value_held_counts_as_a_read_back(pdus):
    """A BMC answers a PATCH with the limit it holds: its next read-back is due a period after
    the write. A Modbus write's answer only echoes the addresses: the PDU's read-back stays
    due."""
    from helpers.devices import PASSWORD, USER, sim_bmc

    from rackpower_nodes.drivers.bmc import RedfishPowerCap

    bmc = sim_bmc().start()
    try:
        cap = RedfishPowerCap(bmc.chassis_url("a1"), username=USER, password=PASSWORD,
                              timeout_s=1.0)
        pdu = PduTarget("a", open_pdu(pdus[0].url, "rackpower_sim", timeout_s=LOOPBACK_TIMEOUT_S),
                        np.array([1]), np.array([0]))
        cap_t = PduTarget("bmc:a1", cap, np.array([1]), np.array([1]), resolution_w=1.0,
                          kind="bmc")
        link = PduLink([pdu, cap_t], 2, BUDGET, np.full(2, 400.0), retry_s=0.1)
        assert link.connect_all() == []
        pdu.next_verify = cap_t.next_verify = 0.0          # both read-backs overdue
        before = time.monotonic()
        assert link._write(np.array([200.0, 300.0]))
        assert bmc.limit_w("a1") == 300.0 and pdus[0].model.allocation_w[0] == 200.0
        assert cap_t.next_verify >= before + link.verify_s
        assert pdu.next_verify == 0.0
        link.close()
    finally:
        bmc.stop()


@pytest.mark.parametrize("resolution", [0.0, 1.0, 5.0, 0.25])
def test_a_target_rounds_as_the_core_rule_does(resolution):
    from rackpower_nodes.core.actuation import round_down

    t = PduTarget("a", None, np.array([1, 2, 3]), np.array([0, 1, 2]), resolution_w=resolution)
    values = np.array([0.0, 230.7, 1e6 / 3])
    np.testing.assert_array_equal(t.rounded(values), round_down(values, resolution))
