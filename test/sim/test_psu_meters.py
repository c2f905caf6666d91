"""The PSUs' own meters: one model (sim/psu_meters.py) for the fast-mode health frames and the
live simulated BMCs. The fast-mode values are pinned to what they were before the model was
shared (the health evaluation's results depend on them); the live BMC serves
`Power.PowerSupplies[]` from it, and a `psu_efficiency` fault raises input over output."""
from __future__ import annotations

import base64
import json
import time
import urllib.request

import numpy as np
import pytest

from rackpower_nodes.sim.faults import FaultSpec
from rackpower_nodes.sim.faults.frames import health_frame, psu_meters
from rackpower_nodes.sim.live import LiveRack
from rackpower_nodes.sim.psu_meters import (
    PSU_POLL_S, LivePsuMeters, meter_errors, psu_output_w)
from rackpower_nodes.sim.rack_sim import generate

#: (second, component): (input W, output W) of `psu_meters` on the office run below, as the
#: frames computed them before the meter model was shared (commit 8c60912)
PINNED = {(0, "srv01"): (95.8554782194454, 92.55455855145793),
          (600, "srv03"): (99.13881555638496, 89.73370920747473),
          (1200, "srv03"): (109.4316227633081, 93.36312219657148),
          (1790, "tor-a"): (222.7215734171516, 212.5091016655324),
          (100, "srv05"): (104.65747279252307, 93.3669641036016)}


def test_fast_mode_readings_are_the_ones_the_evaluation_was_run_on():
    data = generate(0.5, seed=12, faults=[
        FaultSpec("psu_efficiency", "srv03", 600, 300, 0.06, growth="linear"),
        FaultSpec("psu_efficiency", "srv03", 900, 0, 0.02, growth="step"),
        FaultSpec("outlet_dropout", "srv05", 100, 0, 30.0, growth="step")])
    n = len(data.power_w) // 10
    wall = np.asarray(data.power_w[:n * 10], dtype=np.float64).reshape(n, 10, -1).mean(axis=1)
    p_in, p_out = psu_meters(data, wall, 0)
    for (sec, name), (w_in, w_out) in PINNED.items():
        j = data.names.index(name)
        assert (p_in[sec, j], p_out[sec, j]) == (w_in, w_out), (sec, name)
    frame = health_frame(data)
    assert np.array_equal(frame.psu_in_w, p_in.astype(np.float32), equal_nan=True)
    assert np.isfinite(p_in[::PSU_POLL_S]).all() and np.isnan(p_in[1::PSU_POLL_S]).all()


def test_live_meters_have_the_fast_modes_hardware_errors_and_efficiency():
    names = ("srv01", "tor-a")
    rating = np.array([290.0, 400.0])
    live = LivePsuMeters(names, rating, seed=3, sim_seed=4)
    gain, offset = meter_errors(names)
    assert np.array_equal(live.gain, gain) and np.array_equal(live.offset, offset)
    wall = np.array([150.0, 250.0])
    reads = [live.read(10.0 * i, wall, np.ones(2)) for i in range(400)]
    p_in = np.array([r[0] for r in reads])
    p_out = np.array([r[1] for r in reads])
    true_out = psu_output_w(wall, np.ones(2), rating, np.zeros(2))
    # the readings scatter ~1 % around the true values with the fixed errors
    assert p_in.mean(axis=0) == pytest.approx(wall * (1 + gain[0]) + offset[0], rel=3e-3)
    assert p_out.mean(axis=0) == pytest.approx(true_out * (1 + gain[1]) + offset[1], rel=5e-3)
    assert 0.007 < np.std(p_in[:, 0] / wall[0]) < 0.013
    # a PSU losing 20 % efficiency takes 20 % more in for the same output
    worse = np.array([live.read(4000 + 10.0 * i, wall * 1.2, np.array([1.2, 1.0]))
                      for i in range(400)])
    ratio_before = (p_in / p_out).mean(axis=0)
    ratio_after = (worse[:, 0] / worse[:, 1]).mean(axis=0)
    assert ratio_after[0] / ratio_before[0] == pytest.approx(1.2, abs=0.01)


def _get(url: str) -> dict:
    auth = base64.b64encode(b"admin:rackpower").decode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"}),
                     timeout=10) as resp:
        return json.load(resp)


def _wait(condition, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)


def test_the_live_bmc_serves_its_psus_meters_and_a_psu_fault_shows(tmp_path):
    rack = LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=100.0,
                    pdu_base_port=0, bmc_port=0, seed=7).start()
    try:
        urls = rack.manifest()["bmcs"]
        assert set(urls) == {f"srv{i:02d}" for i in range(1, 13)}
        for name in ("srv01", "srv02"):     # EnvironmentMetrics and legacy Power limits alike
            doc = _get(urls[name] + "/Power")
            psus = doc["PowerSupplies"]
            assert doc["@odata.type"] == "#Power.v1_7_1.Power" and len(psus) == 2
            assert doc["PowerSupplies@odata.count"] == 2
            assert [p["MemberId"] for p in psus] == ["0", "1"]
            for p in psus:
                assert p["Status"] == {"State": "Enabled", "Health": "OK"}
                assert p["PowerCapacityWatts"] == 570.0
                assert 0 < p["PowerOutputWatts"] < p["PowerInputWatts"] < 400
                assert p["LastPowerOutputWatts"] == p["PowerOutputWatts"]
        assert "PowerLimit" not in _get(urls["srv01"] + "/Power")["PowerControl"][0]
        # readings refresh every PSU_POLL_S s, held in between
        first = _get(urls["srv03"] + "/Power")["PowerSupplies"][0]["PowerInputWatts"]
        assert _get(urls["srv03"] + "/Power")["PowerSupplies"][0]["PowerInputWatts"] == first
        _wait(lambda: _get(urls["srv03"] + "/Power")["PowerSupplies"][0]["PowerInputWatts"]
              != first, "a new reading", 3 * PSU_POLL_S)

        def ratio(name: str) -> float:
            psus = _get(urls[name] + "/Power")["PowerSupplies"]
            return sum(p["PowerInputWatts"] for p in psus) / sum(
                p["PowerOutputWatts"] for p in psus)

        before = ratio("srv03")
        rack.inject_fault(FaultSpec("psu_efficiency", "srv03", rack.sim_time(), 0, 0.5,
                                    growth="step"))
        after = _wait(lambda: (r := ratio("srv03")) > before * 1.3 and r, "input up", 40)
        assert after == pytest.approx(before * 1.5, rel=0.08)
    finally:
        rack.stop()


def test_only_chassis_whose_model_has_a_psu_serve_psu_readings(tmp_path):
    from pathlib import Path

    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "rack_sim.yaml")
                         .read_text())
    del raw["server_models"]["r710-x5670"]["reference_psu"]       # srv01..srv03's model
    rack = LiveRack(str(tmp_path / "board"), config=raw, board_channels=16,
                    board_rate_hz=100.0, pdu_base_port=0, bmc_port=0).start()
    try:
        urls = rack.manifest()["bmcs"]
        assert "PowerSupplies" not in _get(urls["srv02"] + "/Power")     # legacy limit only
        assert "Power" not in _get(urls["srv01"])                       # EnvironmentMetrics
        assert len(_get(urls["srv04"] + "/Power")["PowerSupplies"]) == 2
    finally:
        rack.stop()
