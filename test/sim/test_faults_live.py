"""Faults in the live simulator: RackSimulator.inject (sensor faults on the board's source only,
component faults on the rack's power), the control socket's inject_fault through a real Unix
socket and the board's pty, and the CLI's --fault."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from rackpower_nodes.core.frame_codec import FrameDecoder
from rackpower_nodes.sim.cli import _parser, main
from rackpower_nodes.sim.control import ControlServer, send_command
from rackpower_nodes.sim.faults import FaultSpec, FaultSpecError
from rackpower_nodes.sim.live import LiveRack
from rackpower_nodes.sim.rack_sim import RackSimulator, SimData


def _wait(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.02)


def test_sensor_fault_shows_on_the_board_source_but_not_in_power():
    sim, twin = RackSimulator(seed=4), RackSimulator(seed=4)
    sim.step(20.0)
    twin.step(20.0)                 # the same requests: the same blocks, the same samples
    src = sim.current_source([0, 1], 2)
    spec = sim.inject(FaultSpec("sensor_offset", "srv01", 25.0, 0, 115.0))
    assert spec.onset_s == 25.0                     # sensor faults apply from their onset
    t = np.linspace(20.0, 40.0, 201)
    assert np.array_equal(sim.power_at(t), twin.power_at(t))
    amps = src(t)
    volts = sim.config.nominal_v * sim.config.power_factor
    after = t >= 25.0
    assert np.allclose(amps[after, 0] * volts, sim.power_at(t[after])[:, 0] + 115.0)
    assert np.allclose(amps[~after, 0] * volts, sim.power_at(t[~after])[:, 0])
    assert np.allclose(amps[:, 1] * volts, sim.power_at(t)[:, 1])
    assert sim.faults == (spec,)


def test_stuck_channel_holds_what_it_read_at_onset():
    sim = RackSimulator(seed=5)
    sim.inject(FaultSpec("sensor_stuck", "tor-a", 10.0, 0, 0.0))
    col = sim.index("tor-a")
    src = sim.current_source([col], 1)
    t = np.linspace(10.0, 60.0, 101)
    amps = src(t)[:, 0]
    assert np.all(amps == amps[0]) and np.std(sim.power_at(t)[:, col]) > 0.1
    volts = sim.config.nominal_v * sim.config.power_factor
    assert amps[0] * volts == pytest.approx(sim.power_at(np.array([10.0]))[0, col])


def test_component_fault_changes_power_from_the_first_new_sample():
    sim, twin = RackSimulator(seed=6), RackSimulator(seed=6)
    for s in (sim, twin):           # the same requests: the same blocks, the same samples
        s.step(30.0)                                    # samples made up to ~40 s
    spec = sim.inject(FaultSpec("psu_efficiency", "srv02", 30.0, 0, 0.5, failure_s=100.0))
    assert 30.0 < spec.onset_s <= 30.0 + 11.0
    assert spec.failure_s == pytest.approx(100.0 + spec.onset_s - 30.0)
    t = np.arange(spec.onset_s, spec.onset_s + 30.0, 0.1)
    i = sim.index("srv02")
    assert np.allclose(sim.power_at(t)[:, i], 1.5 * twin.power_at(t)[:, i])
    early = np.arange(25.0, spec.onset_s - 0.2, 0.1)
    assert np.array_equal(sim.power_at(early), twin.power_at(early))
    with pytest.raises(FaultSpecError, match="disk_retries cannot hit 'srv01'"):
        sim.inject(FaultSpec("disk_retries", "srv01", 50.0, 0, 2.0))
    with pytest.raises(FaultSpecError, match="component: 'nope'"):
        sim.inject(FaultSpec("fan_wear", "nope", 50.0, 0, 2.0))
    assert sim.faults == (spec,)


@pytest.fixture()
def rack(tmp_path):
    live = LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=200.0,
                    sim_faults=[FaultSpec("fan_wear", "srv03", 0.0, 0, 20.0)])
    with live, ControlServer(live, tmp_path / "control.sock") as server:
        live.sock = server.path
        yield live


def test_inject_fault_over_the_control_socket_reaches_the_board_not_the_pdu(rack):
    volts = rack.sim.config.nominal_v * rack.sim.config.power_factor
    decoder = FrameDecoder(rack.board.layout)
    scale = 0.001 * volts                              # W per ADC count
    with open(rack.board.port_path, "rb", buffering=0) as port:
        def board_w(n: int) -> np.ndarray:
            frames = []
            while sum(len(f) for f in frames) < n:
                frames.append(decoder.feed(port.read(65536)))
            return np.concatenate([f.samples[:, 0] for f in frames]) * scale

        board_w(50)
        answer = send_command(rack.sock, {"cmd": "inject_fault", "fault": {
            "kind": "sensor_offset", "component": "srv01", "magnitude": 2000.0}})
        assert answer["ok"], answer
        fault = answer["fault"]
        assert (fault["kind"], fault["component"], fault["magnitude"]) == \
            ("sensor_offset", "srv01", 2000.0)
        assert fault["onset_s"] <= rack.sim_time() and fault["failure_s"] is None
        _wait(lambda: board_w(20).min() > 1500.0, "the board reading 2 kW high")
    true_w = rack.sim.power_at(np.array([rack.sim_time()]))[0, 0]
    assert true_w < 1000.0
    manifest = rack.manifest()
    pdu, outlet = manifest["pdu_outlets"]["srv01"]
    names = [p["name"] for p in manifest["pdus"]]
    first = sum(p["outlets"] for p in manifest["pdus"][:names.index(pdu)])

    def served_w() -> float:
        with rack.pdu_lock:
            return float(rack.pdu_model.served_w[first + outlet - 1])

    _wait(lambda: served_w() > 10.0, "the PDU serving srv01")
    assert served_w() < 1000.0                         # the PDU meters the true draw
    stats = send_command(rack.sock, {"cmd": "stats"})
    assert [f["kind"] for f in stats["faults"]] == ["fan_wear", "sensor_offset"]
    assert stats["injected"] == {"inject_fault": 1}


@pytest.mark.parametrize(("fault", "message"), [
    ({"kind": "disk_retries", "component": "srv01"}, "disk_retries cannot hit 'srv01'"),
    ({"kind": "fan_wear", "component": "srv99"}, "component: 'srv99'"),
    ({"kind": "melt", "component": "srv01"}, "fault.kind = 'melt'"),
    ({"kind": "fan_wear", "component": "srv01", "colour": 3}, "colour"),
    ({"kind": "fan_wear", "component": "srv01", "growth": "sudden"}, "growth 'sudden'"),
])
def test_bad_faults_over_the_socket_are_answered_with_the_field(rack, fault, message):
    answer = send_command(rack.sock, {"cmd": "inject_fault", "fault": fault})
    assert not answer["ok"] and message in answer["error"], answer
    assert "fault = 3" in send_command(rack.sock, {"cmd": "inject_fault", "fault": 3})["error"]


def test_cli_fast_fault_option_saves_the_ground_truth(tmp_path, caplog):
    out = tmp_path / "run"
    assert main(["fast", "--hours", "0.05", "--seed", "2", "--out", str(out),
                 "--fault", "fan_wear:srv02:0.01:0.02:15", "--fault",
                 "sensor_gain:tor-a:0.02"]) == 0
    saved = json.loads((out / "rack_sim_faults.json").read_text())
    assert [(f["kind"], f["component"], f["onset_s"], f["growth_s"], f["magnitude"])
            for f in saved] == [("fan_wear", "srv02", 36.0, 72.0, 15.0),
                                ("sensor_gain", "tor-a", 72.0, 0.0, pytest.approx(0.06))]
    assert len(SimData.load(out).faults) == 2
    assert main(["fast", "--hours", "0.01", "--out", str(out), "--fault",
                 "disk_retries:srv01:0"]) == 2
    assert "disk_retries cannot hit 'srv01'" in caplog.text
    args = _parser().parse_args(["live", "--link", "/tmp/b", "--fault", "fan_wear:srv01:30"])
    assert args.fault == ["fan_wear:srv01:30"]
