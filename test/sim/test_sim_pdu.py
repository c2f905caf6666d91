"""The simulator's PDU: the outlet/breaker model, its Modbus server, and the live rack's PDUs."""
from __future__ import annotations

import time

import numpy as np
import pytest
from pymodbus.client import ModbusTcpClient

from rackpower_nodes.core.pdu_map import load_register_map
from rackpower_nodes.sim.live import LiveRack
from rackpower_nodes.sim.pdu import PduModel, SimPduServer

BREAKER_W = 4600.0


def _model(n: int = 4, rating: float = 10_000.0, **kw) -> PduModel:
    return PduModel(np.full(n, rating), BREAKER_W, **kw)


def _run(model: PduModel, total_w: float, seconds: float, dt: float = 0.1) -> None:
    demand = np.full(model.n_outlets, total_w / model.n_outlets)
    for _ in range(round(seconds / dt)):
        model.apply(demand, dt)


# -- model ----------------------------------------------------------------------------------
def test_serves_min_of_demand_and_allocation_and_counts_what_it_withheld():
    m = _model(rating=2300.0)
    m.set_allocations([0, 1], [100.0, 0.0])          # outlet 2: allocation 0 = no power
    m.set_outlet_on([2], False)                        # outlet 3: switched off
    demand = np.array([150.0, 80.0, 60.0, 40.0])
    for _ in range(10):
        served = m.apply(demand, 0.5)
    np.testing.assert_allclose(served, [100.0, 0.0, 0.0, 40.0])
    np.testing.assert_allclose(m.throttled_j, [250.0, 400.0, 300.0, 0.0])   # (d - s) * 5 s
    np.testing.assert_allclose(m.under_allocated_s, [5.0, 5.0, 0.0, 0.0])   # d > allocation
    np.testing.assert_allclose(m.under_allocated_j, [250.0, 400.0, 0.0, 0.0])
    np.testing.assert_allclose(m.served_j, [500.0, 0.0, 0.0, 200.0])
    np.testing.assert_allclose(m.demand_j, demand * 5.0)
    assert m.time_s == pytest.approx(5.0) and m.trips == 0


def test_allocation_defaults_to_the_outlet_rating_and_bad_values_are_refused():
    m = _model(rating=1000.0)
    np.testing.assert_array_equal(m.allocation_w, 1000.0)
    np.testing.assert_allclose(m.apply(np.array([1200.0, 10.0, 0.0, -5.0]), 0.1),
                               [1000.0, 10.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected finite allocations >= 0 W"):
        m.set_allocations([0], [-1.0])
    with pytest.raises(ValueError, match="outlet_ratings_w"):
        PduModel([], BREAKER_W)
    with pytest.raises(ValueError, match="breaker_w = 0"):
        PduModel([1.0], 0)



def test_a_server_cap_limits_its_outlet_like_an_allocation():
    m = _model(rating=2300.0)
    m.set_allocations([0, 1], [100.0, 300.0])
    m.set_server_caps([1, 2], [120.0, 50.0])         # BMC limits below / without an allocation
    demand = np.array([150.0, 200.0, 60.0, 40.0])
    for _ in range(4):
        served = m.apply(demand, 0.5)
    np.testing.assert_allclose(served, [100.0, 120.0, 50.0, 40.0])
    np.testing.assert_allclose(m.throttled_j, [100.0, 160.0, 20.0, 0.0])
    np.testing.assert_allclose(m.under_allocated_s, [2.0, 2.0, 2.0, 0.0])
    m.set_server_caps([1, 2], np.inf)                  # limits lifted: the allocation again
    np.testing.assert_allclose(m.apply(demand, 0.5), [100.0, 200.0, 60.0, 40.0])
    with pytest.raises(ValueError, match="server caps >= 0 W"):
        m.set_server_caps([0], [-1.0])

def test_no_trip_at_or_below_the_rating_for_hours():
    m = _model()
    _run(m, BREAKER_W, 4 * 3600.0, dt=1.0)
    _run(m, 0.99 * BREAKER_W, 3600.0, dt=1.0)
    assert m.trips == 0 and not m.tripped and m.heat_s == 0.0
    assert m.time_to_trip_s(1.0) == float("inf")


@pytest.mark.parametrize("ratio", [1.35, 2.0, 2.55])
def test_thermal_trip_after_the_documented_time(ratio):
    m = _model()
    expected = m.thermal_constant_s / (ratio ** 2 - 1.0)     # 36.5 s, 10 s, 5.4 s
    assert expected == pytest.approx(m.time_to_trip_s(ratio))
    _run(m, ratio * BREAKER_W, expected - 0.5, dt=0.05)
    assert not m.tripped
    _run(m, ratio * BREAKER_W, 1.0, dt=0.05)
    assert m.tripped and m.trips == 1
    assert m.trip_time_s == pytest.approx(expected, abs=0.06)


def test_135_percent_trips_in_tens_of_seconds_and_200_percent_in_seconds():
    m = _model()
    assert 10.0 <= m.time_to_trip_s(1.35) <= 600.0
    assert 1.0 <= m.time_to_trip_s(2.0) <= 15.0


def test_heat_is_remembered_and_cools_below_the_rating():
    m = _model()
    _run(m, 1.35 * BREAKER_W, 20.0)                 # about 16.5 s of 30 s heat
    heat = m.heat_s
    assert 15.0 < heat < 18.0
    _run(m, 0.5 * BREAKER_W, 5.0)                   # cools at (1 - 0.25) per s
    assert m.heat_s == pytest.approx(heat - 0.75 * 5.0)
    _run(m, 0.5 * BREAKER_W, 60.0)
    assert m.heat_s == 0.0 and not m.tripped


def test_instantaneous_magnetic_trip_and_a_tripped_rack_serves_nothing():
    m = _model(magnetic_multiple=5.0)
    m.apply(np.full(4, 100.0), 0.1)
    served = m.apply(np.full(4, 6.0 * BREAKER_W / 4), 0.001)
    assert m.tripped and m.trips == 1 and served.sum() == 0.0
    for _ in range(50):
        assert m.apply(np.full(4, 100.0), 0.1).sum() == 0.0
    assert m.trips == 1 and m.unserved_after_trip_j == pytest.approx(50 * 400.0 * 0.1)
    np.testing.assert_array_equal(m.cap_w(), 0.0)
    m.reset_counters()
    assert not m.tripped and m.apply(np.full(4, 100.0), 0.1).sum() == pytest.approx(400.0)


def test_apply_block_matches_apply_step_by_step():
    rng = np.random.default_rng(3)
    demand = rng.uniform(0.0, 500.0, (4000, 24)) * np.linspace(0.6, 1.2, 4000)[:, None]
    a, b = _model(24), _model(24)
    for m in (a, b):
        m.set_allocations(np.arange(6), 120.0)
    step = np.array([a.apply(row, 0.1) for row in demand])
    block = np.vstack([b.apply_block(demand[:1500], 0.1), b.apply_block(demand[1500:], 0.1)])
    np.testing.assert_allclose(block, step)
    assert a.trips == b.trips == 1
    assert b.trip_time_s == pytest.approx(a.trip_time_s)
    for name in ("throttled_j", "under_allocated_s", "under_allocated_j", "served_j"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, atol=1e-6)
    assert b.heat_s == pytest.approx(a.heat_s)
    assert b.unserved_after_trip_j == pytest.approx(a.unserved_after_trip_j)


# -- server ---------------------------------------------------------------------------------
@pytest.fixture
def server():
    srv = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), BREAKER_W)).start()
    yield srv
    srv.stop()


def _client(srv: SimPduServer) -> ModbusTcpClient:
    c = ModbusTcpClient("127.0.0.1", port=srv.port, timeout=2, retries=0)
    assert c.connect()
    return c


def _floats(c: ModbusTcpClient, address: int, n: int) -> list[float]:
    """n big-endian float32 values from holding registers (decoded here, not by the map)."""
    regs = c.read_holding_registers(address, count=2 * n, device_id=1).registers
    return np.frombuffer(np.array(regs, dtype=">u2").tobytes(), dtype=">f4").tolist()


def test_server_meters_served_power_and_takes_allocations_and_coils(server):
    c = _client(server)
    try:
        assert c.read_holding_registers(0, count=3, device_id=1).registers == [0x5250, 24, 1]
        demand = np.arange(24) * 10.0
        server.update(demand, 0.1)
        assert _floats(c, 100, 24) == pytest.approx(demand.tolist())
        assert _floats(c, 200, 3) == pytest.approx((demand[:3] / 230.0).tolist(), rel=1e-6)
        assert _floats(c, 300, 2) == [230.0, 230.0]
        assert _floats(c, 400, 2) == [2300.0, 2300.0]
        regs = c.convert_to_registers([25.0, 0.0], c.DATATYPE.FLOAT32, word_order="big")
        assert not c.write_registers(404, regs, device_id=1).isError()     # outlets 3, 4
        assert not c.write_coil(5, False, device_id=1).isError()           # outlet 6 off
        served = server.update(demand, 0.1)
        assert served[2:6].tolist() == [20.0, 0.0, 40.0, 0.0]
        assert _floats(c, 104, 4) == [20.0, 0.0, 40.0, 0.0]
        assert c.read_coils(0, count=8, device_id=1).bits[:8] == [True] * 5 + [False, True, True]
        # metering is read-only; a negative allocation is refused and changes nothing
        assert c.write_registers(100, [0, 0], device_id=1).exception_code == 2
        neg = c.convert_to_registers([-5.0], c.DATATYPE.FLOAT32, word_order="big")
        assert c.write_registers(400, neg, device_id=1).exception_code == 3
        assert server.model.allocation_w[0] == 2300.0
    finally:
        c.close()


def test_server_restarts_on_the_same_port_with_the_model_state(server):
    port = server.port
    c = _client(server)
    regs = c.convert_to_registers([123.0], c.DATATYPE.FLOAT32, word_order="big")
    c.write_registers(400, regs, device_id=1)
    server.stop()
    assert not server.running
    with pytest.raises(Exception):                      # the connection is gone
        c.read_holding_registers(0, count=1, device_id=1)
    c.close()
    server.start()
    assert server.port == port
    c = _client(server)
    try:
        assert _floats(c, 400, 1) == [123.0]
    finally:
        c.close()


def test_reboot_restores_the_defaults_counts_the_boot_and_drops_connections(server):
    c = _client(server)
    assert c.read_input_registers(0, count=2, device_id=1).registers == [0, 1]   # boot 1
    regs = c.convert_to_registers([100.0], c.DATATYPE.FLOAT32, word_order="big")
    c.write_registers(400, regs, device_id=1)
    c.write_coil(2, False, device_id=1)
    assert server.model.allocation_w[0] == 100.0 and not server.model.outlet_on[2]
    port = server.port
    server.reboot()
    assert server.running and server.port == port and server.boot_count == 2
    with pytest.raises(Exception):                      # the connection did not survive
        c.read_holding_registers(0, count=1, device_id=1)
    c.close()
    # the defaults (the outlet ratings) sum far above the breaker: 24 x 2300 W
    np.testing.assert_array_equal(server.model.allocation_w, 2300.0)
    assert server.model.outlet_on.all()
    c = _client(server)
    try:
        assert _floats(c, 400, 1) == [2300.0]
        assert c.read_input_registers(0, count=2, device_id=1).registers == [0, 2]
        assert c.write_registers(0, [1, 2], device_id=1).isError()   # the counter: read-only
    finally:
        c.close()


def test_reboot_to_configured_defaults_and_a_stopped_server_stays_stopped():
    srv = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), BREAKER_W),
                       defaults_w=500.0, boot_count=7)
    srv.model.set_allocations([0], [10.0])
    srv.reboot()
    assert not srv.running and srv.boot_count == 8
    np.testing.assert_array_equal(srv.model.allocation_w, 500.0)
    with pytest.raises(ValueError, match="defaults_w"):
        SimPduServer("rackpower_sim", defaults_w=-1.0)
    with pytest.raises(ValueError, match="down_s"):
        srv.reboot(down_s=-1.0)


def test_a_foreign_write_by_mbpoll_takes_effect(server):
    """Modbus has no authentication: any client on the network may write an allocation,
    and the PDU enforces it (what rackpower's read-back verification is for)."""
    import shutil
    import subprocess

    mbpoll = shutil.which("mbpoll")
    if mbpoll is None:
        pytest.skip("mbpoll is not installed (apt-get install mbpoll)")
    out = subprocess.run([mbpoll, "-m", "tcp", "-p", str(server.port), "-a", "1", "-t",
                          "4:float", "-B", "-0", "-r", "402", "-1", "127.0.0.1", "777.5"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "Written 1 references" in out.stdout, out.stdout + out.stderr
    assert server.model.allocation_w[1] == 777.5
    served = server.update(np.full(24, 1000.0), 0.1)
    assert served[1] == 777.5 and served[0] == 1000.0


def test_a_slow_pdu_answers_late(server):
    """Delayed answers: a client that waits less than the delay gets none."""
    from rackpower_nodes.drivers.pdu import PduError, open_pdu

    pdu = open_pdu(server.url, "rackpower_sim", timeout_s=1.0)
    pdu.connect()
    server.set_delay(read_s=5.0)
    with pytest.raises(PduError, match="timeout 1 s"):
        pdu.read_allocations([1])
    server.set_delay()
    pdu.connect()
    np.testing.assert_array_equal(pdu.read_allocations([1]), [2300.0])
    pdu.close()
    with pytest.raises(ValueError, match="write_s"):
        server.set_delay(write_s=float("nan"))


def test_server_survives_clients_coming_and_going(server):
    for _ in range(5):
        c = _client(server)
        assert c.read_holding_registers(1, count=1, device_id=1).registers == [24]
        c.close()
    clients = [_client(server) for _ in range(3)]
    assert [c.read_coils(0, count=1, device_id=1).bits[0] for c in clients] == [True] * 3
    for c in clients:
        c.close()


def test_tripped_breaker_shows_zero_volts(server):
    server.update(np.full(24, 11.0 * BREAKER_W / 24), 0.1)
    c = _client(server)
    try:
        assert server.model.tripped
        assert _floats(c, 300, 1) == [0.0] and _floats(c, 100, 1) == [0.0]
    finally:
        c.close()


def test_server_rejects_maps_without_the_sim_layout():
    with pytest.raises(ValueError, match="outlet_allocation_w missing"):
        SimPduServer("xerus_style")
    with pytest.raises(ValueError, match="do not fit"):
        SimPduServer(load_register_map("rackpower_sim"), PduModel(np.ones(8), 10.0))


# -- live rack ------------------------------------------------------------------------------
def test_live_rack_serves_its_pdus_and_the_board_shows_throttling(tmp_path):
    with LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=100.0) as rack:
        m = rack.manifest()
        assert [p["name"] for p in m["pdus"]] == ["pdu-a", "pdu-b"]
        assert all(p["port"] > 0 and p["unit_id"] == 1 and p["map"] == "rackpower_sim"
                   and p["url"] == f"tcp://127.0.0.1:{p['port']}" for p in m["pdus"])
        assert m["pdu_outlets"]["srv02"] == ["pdu-b", 1]
        assert m["breaker_w"] == pytest.approx(4600.0) and m["budget_w"] == pytest.approx(3680.0)
        srv02 = rack.sim.index("srv02")
        source = rack.board._source
        assert source(np.array([rack.sim_time()]))[0, srv02] > 0.1
        c = _client(rack.pdus["pdu-b"])
        try:
            regs = c.convert_to_registers([23.0], c.DATATYPE.FLOAT32, word_order="big")
            c.write_registers(400, regs, device_id=1)          # pdu-b outlet 1 = srv02
            time.sleep(0.4)
            assert source(np.array([rack.sim_time()]))[0, srv02] == pytest.approx(0.1)  # 23/230
            assert _floats(c, 100, 1) == [23.0]
        finally:
            c.close()
        stats = rack.pdu_stats()
        assert stats["components"]["srv02"]["throttled_j"] > 0.0
        assert stats["components"]["srv01"]["throttled_j"] == 0.0


def test_live_rack_caps_a_server_through_its_bmc(tmp_path):
    from rackpower_nodes.drivers.bmc import RedfishPowerCap

    with LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=100.0,
                  bmc_port=0) as rack:
        bmcs = rack.manifest()["bmcs"]
        assert sorted(bmcs) == [f"srv{i:02d}" for i in range(1, 13)]   # servers only
        srv03 = rack.sim.index("srv03")
        source = rack.board._source
        caps = {}
        for name in ("srv03", "srv04"):          # the two schemas, alternating by server
            cap = RedfishPowerCap(bmcs[name], username="admin", password="rackpower")
            cap.connect()
            caps[name] = cap
        assert {c.api for c in caps.values()} == {"environment_metrics", "power_control"}
        assert caps["srv03"].allowable_min_w == pytest.approx(64.0)     # R710 idle
        assert caps["srv03"].allowable_max_w == pytest.approx(570.0)    # its PSU
        # below the allowable minimum: held there (the server's idle power)
        np.testing.assert_array_equal(caps["srv03"].write_allocations([1], [30.0]), [64.0])
        time.sleep(0.4)
        assert rack.manifest()["pdu_outlets"]["srv03"] == ["pdu-a", 2]
        assert rack.pdu_model.cap_w()[1] == 64.0           # pdu-a outlet 2: 0-based 1
        t = rack.sim_time() + np.arange(50) * 0.01
        assert np.all(source(t)[:, srv03] <= 64.0 / 230.0 + 1e-12)
        assert caps["srv03"].read_outlets([1]).power_w[0] <= 64.0
        stats = rack.pdu_stats()["components"]
        assert stats["srv03"]["server_cap_w"] == 64.0
        assert stats["srv04"]["server_cap_w"] is None
        for cap in caps.values():
            cap.close()


def test_live_rack_without_pdus(tmp_path):
    with LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=100.0,
                  pdu_base_port=None, bmc_port=0) as rack:
        m = rack.manifest()
        assert m["pdus"] == [] and m["bmcs"] == {} and rack.pdu_stats() == {}


def test_cli_live_pdu_options():
    from rackpower_nodes.sim.cli import _parser

    args = _parser().parse_args(["live", "--link", "/tmp/b"])
    assert args.pdu_base_port == 5020 and not args.no_pdus and args.pdu_map == "rackpower_sim"
    args = _parser().parse_args(["live", "--link", "/tmp/b", "--pdu-base-port", "0",
                                 "--no-pdus", "--pdu-map", "my.yaml"])
    assert args.pdu_base_port == 0 and args.no_pdus and args.pdu_map == "my.yaml"
    args = _parser().parse_args(["live", "--link", "/tmp/b"])
    assert args.bmc_port == 5080 and not args.no_bmcs and args.bmc_api == "alternate"
    args = _parser().parse_args(["live", "--link", "/tmp/b", "--no-bmcs", "--bmc-api",
                                 "power_control"])
    assert args.no_bmcs and args.bmc_api == "power_control"
