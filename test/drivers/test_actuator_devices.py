"""The actuator's background connector (drivers/actuator_devices.py `LinkConnector`) against
simulated PDUs on loopback: polling never waits on a device, a PDU that does not answer is
named, attempts are spaced by retry_s, and a PDU that answers yields a connected link."""
from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
from helpers.rack import free_port

from rackpower_nodes.drivers.actuator_devices import (
    LinkConnector, configure_failed, leave_static_split)
from rackpower_nodes.drivers.pdu import open_pdu
from rackpower_nodes.drivers.pdu_link import PduLink, PduTarget
from rackpower_nodes.sim.pdu import PduModel, SimPduServer


def _link(port: int) -> PduLink:
    target = PduTarget("pdu-a", open_pdu(f"tcp://127.0.0.1:{port}", "rackpower_sim",
                                         timeout_s=1.0), np.array([1, 2]), np.array([0, 1]))
    return PduLink([target], 2, 1000.0, np.full(2, 600.0), retry_s=0.1)


def _wait_result(connector: LinkConnector, retry_s: float = 3600.0, timeout_s: float = 30.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        result = connector.poll(retry_s)
        if result is not None:
            return result
        time.sleep(0.01)
    pytest.fail("the connector never finished its attempt")


def test_poll_returns_while_an_attempt_is_under_way_and_names_a_pdu_that_is_down():
    gate = threading.Event()
    port = free_port()             # nothing listens there

    def make() -> PduLink:
        gate.wait(30.0)            # a device that takes as long as the test wants
        return _link(port)

    connector = LinkConnector(make)
    assert connector.poll(0.0) is None and connector.busy    # started, not finished
    for _ in range(5):             # the attempt cannot finish before the gate opens
        assert connector.poll(0.0) is None
    gate.set()
    link, errors = _wait_result(connector)
    assert link is None
    assert len(errors) == 1 and errors[0].startswith("pdu-a: ")
    assert "configure failed, not answering: pdu-a: " in configure_failed(errors, 2.0)
    assert configure_failed(errors, 2.0).endswith("(retrying every 2 s)")
    assert not connector.busy
    # the next attempt waits for retry_s after the last one started
    assert connector.poll(3600.0) is None and not connector.busy
    assert connector.poll(0.0) is None and connector.busy
    connector.close()
    assert not connector.busy


def test_a_pdu_that_answers_gives_a_connected_link_that_writes():
    server = SimPduServer("rackpower_sim", PduModel(np.full(24, 600.0), 10_000.0)).start()
    try:
        port = int(server.url.rsplit(":", 1)[1])
        connector = LinkConnector(lambda: _link(port))
        link, errors = _wait_result(connector, retry_s=0.0)
        assert errors == [] and link is not None
        assert link.health() == (True, "")
        assert link.write_now(np.array([250.0, 300.0]))
        np.testing.assert_array_equal(server.model.allocation_w[:2], [250.0, 300.0])
        link.close()
        connector.close()
    finally:
        server.stop()


def test_close_closes_a_link_nobody_took():
    server = SimPduServer("rackpower_sim", PduModel(np.full(24, 600.0), 10_000.0)).start()
    try:
        port = int(server.url.rsplit(":", 1)[1])
        made: list[PduLink] = []
        connector = LinkConnector(lambda: made.append(_link(port)) or made[-1])
        connector.start()
        connector.close()
        assert len(made) == 1 and not made[0].targets[0].client.connected
    finally:
        server.stop()


@pytest.fixture
def pdu():
    """A simulated PDU on loopback, answering in time unless a test delays it."""
    server = SimPduServer("rackpower_sim", PduModel(np.full(24, 600.0), 10_000.0)).start()
    yield server
    server.set_delay()
    server.stop()


def _connected_link(server: SimPduServer) -> PduLink:
    link = _link(int(server.url.rsplit(":", 1)[1]))
    link.connect_all()
    return link


def test_a_static_split_read_back_late_once_is_written_and_confirmed_again(pdu):
    """A PDU that answers the read-back too late once (a busy device, a starved simulator):
    the split is written and read again and confirmed, and the text says it took attempts."""
    link = _connected_link(pdu)
    pdu.set_delay(read_s=3.0)                 # beyond the link's 1 s timeout
    first_confirm = link.confirm

    def confirm_then_answer_in_time(want_w):
        conf = first_confirm(want_w)
        pdu.set_delay()                       # the PDU answers in time from now on
        return conf

    link.confirm = confirm_then_answer_in_time
    confirmed, text = leave_static_split(link, np.array([250.0, 300.0]), 1000.0,
                                         "deactivate", retry_within_s=30.0)
    assert confirmed, text
    assert text.startswith("deactivate: static split confirmed by read-back: devices "
                           "hold 550 W of 1000 W ("), text
    assert re.search(r"\(2 attempts in [\d.]+ s\)$", text), text
    np.testing.assert_array_equal(pdu.model.allocation_w[:2], [250.0, 300.0])
    link.close()


def test_a_static_split_never_read_back_is_named_after_the_bounded_retries(pdu):
    link = _connected_link(pdu)
    pdu.set_delay(read_s=3.0)                 # never in time
    start = time.monotonic()
    confirmed, text = leave_static_split(link, np.array([250.0, 300.0]), 1000.0,
                                         "shutdown", retry_within_s=3.0)
    took = time.monotonic() - start
    assert not confirmed
    m = re.search(r"^shutdown: static split NOT confirmed by read-back \(550 W written, "
                  r"devices hold unknown W of 1000 W \((\d+) attempts in ([\d.]+) s\)\): "
                  r"PDU pdu-a outlet 1: expected 250 W, not read back: ", text)
    assert m, text
    assert int(m[1]) >= 2
    # no new attempt starts after the bound (one attempt: its reads' timeouts, < 5 s)
    assert float(m[2]) <= took + 0.05         # the text rounds to 0.1 s
    link.close()


def test_a_static_split_confirmed_at_once_says_no_attempts(pdu):
    link = _connected_link(pdu)
    confirmed, text = leave_static_split(link, np.array([250.0, 300.0]), 1000.0, "shutdown")
    assert confirmed and text.endswith("devices hold 550 W of 1000 W"), text
    link.close()
