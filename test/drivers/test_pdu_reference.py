"""ReferenceReader: the simulator's Modbus PDU on loopback read as the reference meter."""
from __future__ import annotations

import time

import numpy as np
import pytest

from rackpower_nodes.core.health_monitor_config import ReferencePdu
from rackpower_nodes.drivers.pdu_reference import ReferenceReader
from rackpower_nodes.sim.pdu import PduModel, SimPduServer


@pytest.fixture
def sim():
    srv = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0)).start()
    demand = np.zeros(24)
    demand[[2, 6]] = (180.0, 95.5)                     # outlets 3 and 7
    srv.update(demand, 0.1)
    yield srv
    srv.stop()


def _pdu(url: str) -> ReferencePdu:
    return ReferencePdu("pdu-a", url, "rackpower_sim", 1, ("srv03", "stor-1"), (3, 7))


def test_each_wired_outlet_is_read_as_its_components_power(sim):
    got: list[tuple[float, dict]] = []
    reader = ReferenceReader([_pdu(sim.url)], 0.05, 1.0, lambda t, w: got.append((t, w)))
    reader.read_once()
    (t, watts), = got
    assert abs(t - time.time()) < 5
    assert watts == pytest.approx({"srv03": 180.0, "stor-1": 95.5}, abs=0.1)
    assert reader.state() == "1 reads; pdu-a: ok"
    reader.stop()


def test_a_pdu_that_does_not_answer_is_said_and_read_again_once_back(sim):
    got: list[dict] = []
    url, port = sim.url, sim.port
    sim.stop()
    reader = ReferenceReader([_pdu(url)], 0.05, 0.3, lambda t, w: got.append(w))
    reader.read_once()
    assert not got and "pdu-a: PDU tcp://127.0.0.1" in reader.state()
    assert "cannot connect" in reader.state()
    back = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0),
                        port=port).start()
    try:
        reader.start()                          # the thread reads every 0.05 s
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got and set(got[-1]) == {"srv03", "stor-1"}
        assert reader.state().endswith("pdu-a: ok")
    finally:
        reader.stop()
        back.stop()
