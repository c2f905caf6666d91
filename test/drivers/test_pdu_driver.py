"""The Modbus PDU driver against the simulator's PDU on loopback, with Debian's mbpoll as an
independent client reading back what the driver wrote."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from helpers.devices import LOOPBACK_TIMEOUT_S

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.pdu_map import RegisterMap, load_register_map
from rackpower_nodes.drivers.pdu import (
    ModbusPdu, PduCapabilityError, PduClient, PduError, open_pdu, parse_pdu_url,
)
from rackpower_nodes.sim.pdu import PduModel, SimPduServer

MBPOLL = shutil.which("mbpoll") or "/usr/bin/mbpoll"


@pytest.fixture
def sim():
    srv = SimPduServer("rackpower_sim", PduModel(np.full(24, 2300.0), 4600.0), unit_id=3)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def pdu(sim):
    client = open_pdu(sim.url, "rackpower_sim", unit_id=3, timeout_s=LOOPBACK_TIMEOUT_S)
    client.connect()
    yield client
    client.close()


def _mbpoll_floats(port: int, unit: int, address: int, count: int) -> list[float]:
    """`count` big-endian float32 holding values from 0-based `address`, read by mbpoll."""
    if not shutil.which(MBPOLL):
        pytest.skip("mbpoll is not installed (apt-get install mbpoll)")
    out = subprocess.run(
        [MBPOLL, "-m", "tcp", "-p", str(port), "-a", str(unit), "-t", "4:float", "-B", "-0",
         "-r", str(address), "-c", str(count), "-1", "-o", "2", "127.0.0.1"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    # lines like "[400]: 	150.5"
    values = {int(a): float(v) for a, v in re.findall(r"^\[(\d+)\]:\s+(\S+)", out.stdout, re.M)}
    assert len(values) == count, out.stdout
    return [values[address + 2 * i] for i in range(count)]


def test_reads_metering_of_the_simulated_pdu(sim, pdu):
    assert isinstance(pdu, PduClient) and pdu.connected and pdu.can_write_allocations
    demand = np.zeros(24)
    demand[[0, 5, 23]] = [150.0, 230.0, 46.0]
    sim.update(demand, 0.1)
    r = pdu.read_outlets(range(1, 25))
    np.testing.assert_allclose(r.power_w, demand)
    np.testing.assert_allclose(r.current_a, demand / 230.0, rtol=1e-6)
    np.testing.assert_allclose(r.voltage_v, 230.0)
    assert r.state.dtype == bool and r.state.all()
    some = pdu.read_outlets([24, 6])
    assert some.outlets.tolist() == [24, 6] and some.power_w.tolist() == [46.0, 230.0]


def test_writes_allocations_and_mbpoll_reads_them_back(sim, pdu):
    outlets = [1, 2, 3, 7, 24]
    watts = [150.5, 0.0, 320.25, 99.0, 1200.0]
    pdu.write_allocations(outlets, watts)
    np.testing.assert_allclose(pdu.read_allocations(outlets), watts)
    np.testing.assert_allclose(sim.model.allocation_w[np.array(outlets) - 1], watts)
    got = _mbpoll_floats(sim.port, 3, 400, 24)
    expected = np.full(24, 2300.0)
    expected[np.array(outlets) - 1] = watts
    np.testing.assert_allclose(got, expected)
    # the allocation is enforced: outlet 1 is throttled to 150.5 W
    served = sim.update(np.full(24, 200.0), 0.1)
    assert served[0] == pytest.approx(150.5) and served[1] == 0.0
    assert pdu.read_outlets([1]).power_w[0] == pytest.approx(150.5)


def test_monitoring_only_map_refuses_allocations_and_switching_needs_the_flag(sim, pdu):
    with pytest.raises(PduCapabilityError, match="allowed"):
        pdu.set_outlet(3, False)
    assert sim.model.outlet_on.all()
    raw = dict(load_register_map("rackpower_sim").raw, switching_allowed=True)
    switching = open_pdu(sim.url, RegisterMap.from_mapping(raw, "switching.yaml"), unit_id=3)
    with switching:
        switching.set_outlet(3, False)
        assert not sim.model.outlet_on[2]
        assert switching.read_outlets([2, 3, 4]).state.tolist() == [True, False, True]
    # a metering map without an allocation register: only monitoring
    raw = {"outlets": 24, "points": {
        "outlet_power_w": {"table": "holding", "address": 100, "stride": 2, "type": "float32"}}}
    monitor = open_pdu(sim.url, RegisterMap.from_mapping(raw, "monitor.yaml"), unit_id=3)
    with monitor:
        assert not monitor.can_write_allocations
        with pytest.raises(PduCapabilityError, match="only be monitored"):
            monitor.write_allocations([1], [100.0])
        with pytest.raises(PduCapabilityError):
            monitor.read_allocations([1])
        r = monitor.read_outlets([1, 2])
        assert np.isnan(r.current_a).all() and np.isnan(r.voltage_v).all() and r.state is None


def test_a_restart_shows_in_the_boot_counter_or_the_uptime(sim, pdu):
    assert pdu.read_boot_marker() == ("boot_count", 1.0)
    sim.reboot()
    pdu.connect()                      # the reboot dropped the connection
    assert pdu.read_boot_marker() == ("boot_count", 2.0)
    raw = dict(load_register_map("rackpower_sim").raw)
    raw["points"] = {k: v for k, v in raw["points"].items() if k != "boot_count"}
    raw["points"]["uptime_s"] = {"table": "input", "address": 10, "type": "float32"}
    uptime_map = RegisterMap.from_mapping(raw, "uptime.yaml")
    srv = SimPduServer(uptime_map, PduModel(np.full(24, 2300.0), 4600.0)).start()
    client = open_pdu(srv.url, uptime_map, timeout_s=LOOPBACK_TIMEOUT_S)
    try:
        client.connect()
        kind, before = client.read_boot_marker()
        assert kind == "uptime_s" and before >= 0.0
        srv.reboot()
        client.connect()
        assert client.read_boot_marker()[1] < before + 60.0
    finally:
        client.close()
        srv.stop()
    xerus = open_pdu("tcp://127.0.0.1:1", "xerus_style")
    assert xerus.read_boot_marker() is None          # no such point: no request either


def test_xerus_style_preset_is_monitoring_only():
    client = open_pdu("tcp://127.0.0.1:1", "xerus_style")
    assert not client.can_write_allocations
    with pytest.raises(PduCapabilityError, match="xerus_style.*only be monitored"):
        client.write_allocations([1], [10.0])
    with pytest.raises(PduCapabilityError, match="switching"):
        client.set_outlet(1, True)


def test_identity_mismatch_wrong_unit_and_wrong_map_are_refused(sim):
    with pytest.raises(PduError, match=r"unit 3: holding register 1: identity check "
                                       r"outlet_count: read 24, expected 16"):
        open_pdu(sim.url, load_register_map("rackpower_sim").with_outlets(16), 3).connect()
    with pytest.raises(PduError, match="unit 9: holding register 0: Modbus exception 4"):
        open_pdu(sim.url, "rackpower_sim", unit_id=9).connect()
    xerus = open_pdu(sim.url, "xerus_style", unit_id=3)
    with pytest.raises(PduError, match=r"holding registers 1146\.\.1147: Modbus exception 2 "
                                       r"\(illegal data address\)"):
        xerus.connect()
    assert not xerus.connected


def test_connection_refused_names_url_and_cause():
    srv = SimPduServer("rackpower_sim").start()
    url = srv.url
    srv.stop()
    client = open_pdu(url, "rackpower_sim", timeout_s=0.3)
    with pytest.raises(PduError, match=re.escape(url) + r" unit 1: cannot connect: .*refused"):
        client.connect()
    assert not client.connected
    with pytest.raises(PduError, match="not connected, call connect"):
        client.read_outlets([1])


def test_server_killed_mid_use_then_restarted(sim, pdu):
    pdu.write_allocations([5], [500.0])
    sim.stop()
    with pytest.raises(PduError) as err:
        pdu.read_outlets([1, 2])
    message = str(err.value)
    assert sim.url in message and "unit 3" in message and "holding register" in message
    assert not pdu.connected
    with pytest.raises(PduError, match="cannot connect"):
        pdu.connect()
    sim.start()
    pdu.connect()
    assert pdu.connected
    assert pdu.read_allocations([5]).tolist() == [500.0]
    pdu.write_allocations([5], [250.0])
    assert sim.model.allocation_w[4] == 250.0


def test_requests_are_batched(sim, pdu, monkeypatch):
    calls = []
    client = pdu._client
    for name in ("read_holding_registers", "read_coils", "write_registers"):
        real = getattr(client, name)

        def spy(address, *args, _real=real, _name=name, **kwargs):
            calls.append((_name, address, kwargs.get("count", len(args[0]) if args else 1)))
            return _real(address, *args, **kwargs)

        monkeypatch.setattr(client, name, spy)
    pdu.read_outlets(range(1, 25))
    assert sorted(calls) == [("read_coils", 0, 24), ("read_holding_registers", 100, 48),
                             ("read_holding_registers", 200, 48),
                             ("read_holding_registers", 300, 48)]
    calls.clear()
    pdu.read_outlets([2, 9])           # dense point: one request spanning outlets 2..9
    assert ("read_holding_registers", 102, 16) in calls
    calls.clear()
    pdu.write_allocations([1, 2, 3, 10], [1.0, 2.0, 3.0, 10.0])
    assert calls == [("write_registers", 400, 6), ("write_registers", 418, 2)]


def test_bad_arguments_and_urls():
    with pytest.raises(ConfigError, match="expected tcp://host:port"):
        open_pdu("http://pdu", "rackpower_sim")
    with pytest.raises(ConfigError, match="unit_id = 300"):
        open_pdu("tcp://pdu:502", "rackpower_sim", unit_id=300)
    with pytest.raises(ConfigError, match="parity='X'"):
        parse_pdu_url("rtu:///dev/ttyUSB0?parity=X")
    assert parse_pdu_url("tcp://10.0.0.5") == {"kind": "tcp", "host": "10.0.0.5", "port": 502}
    assert parse_pdu_url("rtu:///dev/ttyUSB0?baudrate=9600&parity=N") == {
        "kind": "rtu", "port": "/dev/ttyUSB0", "baudrate": 9600, "parity": "N",
        "stopbits": 1, "bytesize": 8}
    client = open_pdu("tcp://127.0.0.1:1", "rackpower_sim")
    with pytest.raises(ValueError, match="expected outlet numbers 1..24"):
        client.read_outlets([0])
    with pytest.raises(ValueError, match="expected finite allocations"):
        client.write_allocations([1], [float("nan")])
    with pytest.raises(ValueError, match="one each"):
        client.write_allocations([1, 2], [1.0])


def test_rtu_framing_over_a_socket():
    """The RTU client path (ModbusSerialClient, RTU frames) through pyserial's socket://."""
    srv = SimPduServer("rackpower_sim", framer="rtu").start()
    try:
        client = ModbusPdu(f"rtu://socket://127.0.0.1:{srv.port}?baudrate=115200",
                           load_register_map("rackpower_sim"), unit_id=1,
                           timeout_s=LOOPBACK_TIMEOUT_S)
        with client:
            client.write_allocations([2], [42.0])
            assert client.read_allocations([2]).tolist() == [42.0]
            srv.update(np.full(24, 100.0), 0.1)
            assert client.read_outlets([2]).power_w.tolist() == [42.0]
    finally:
        srv.stop()


def test_a_device_that_never_answers_times_out():
    import socket
    import time

    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)                  # accepts the connection, never answers
        url = f"tcp://127.0.0.1:{mute.getsockname()[1]}"
        client = open_pdu(url, "rackpower_sim", timeout_s=0.2)
        began = time.monotonic()
        with pytest.raises(PduError, match=re.escape(url) + r" unit 1: holding register 0: "
                                                            r"ModbusIOException.*timeout 0.2 s"):
            client.connect()
        # one 0.2 s try, not pymodbus's default 3 s timeout with retries (>= 6 s)
        assert time.monotonic() - began < 5.0 and not client.connected
