"""Faults in the rack simulator's fast mode: each fault's signature, sensor faults only on the
board, the fault-free run unchanged, bad specs named, the ground truth saved beside the data."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from rackpower_nodes.sim.faults import FaultSpec, FaultSpecError
from rackpower_nodes.sim.rack_sim import DEFAULT_CONFIG, SimData, generate

HOURS, SEED, RATE = 0.5, 7, 10
ON = 600.0                               # onset, s
FULL = slice(int(900 * RATE), int(1800 * RATE))   # samples at full growth (after 900 s)
BEFORE = slice(0, int(ON * RATE))


@pytest.fixture(scope="module")
def clean():
    return generate(HOURS, seed=SEED)


def _run(*faults: FaultSpec) -> SimData:
    return generate(HOURS, seed=SEED, faults=list(faults))


def _col(data: SimData, name: str) -> int:
    return data.names.index(name)


def test_no_fault_run_is_bit_identical_and_records_no_faults(clean):
    again = _run(FaultSpec("sensor_offset", "srv01", ON, 0, 10.0))
    assert np.array_equal(again.power_w, clean.power_w)
    assert np.array_equal(again.util, clean.util)
    assert all(np.array_equal(again.telemetry[f], clean.telemetry[f]) for f in clean.telemetry)
    assert clean.faults == ()
    assert clean.board_power_w is clean.power_w


def test_psu_efficiency_raises_power_at_the_same_load(clean):
    data = _run(FaultSpec("psu_efficiency", "srv02", ON, 300, 0.06))
    i = _col(data, "srv02")
    ratio = data.power_w[FULL, i] / clean.power_w[FULL, i]
    assert np.allclose(ratio, 1.06, rtol=1e-4)
    assert np.array_equal(data.power_w[BEFORE, i], clean.power_w[BEFORE, i])
    assert np.array_equal(data.util, clean.util)
    assert np.array_equal(data.telemetry["cpu_util"], clean.telemetry["cpu_util"])
    others = [j for j in range(len(data.names)) if j != i]
    assert np.array_equal(data.power_w[:, others], clean.power_w[:, others])


def test_fan_wear_adds_watts_with_a_periodic_ripple(clean):
    data = _run(FaultSpec("fan_wear", "srv03", ON, 300, 20.0))
    i = _col(data, "srv03")
    extra = data.power_w[FULL, i].astype(float) - clean.power_w[FULL, i]
    assert extra.mean() == pytest.approx(20.0, abs=1.0)
    assert 0.3 * 20 * 0.9 <= extra.max() - 20.0 <= 0.6 * 20 * 1.01   # ripple amplitude
    spectrum = np.abs(np.fft.rfft(extra - extra.mean()))
    period_s = len(extra) / RATE / np.argmax(spectrum)
    assert 14.0 <= period_s <= 62.0


def test_disk_retries_are_short_bursts_on_storage_and_slow_its_disk(clean):
    data = _run(FaultSpec("disk_retries", "stor-1", ON, 0, 4.0))
    i = _col(data, "stor-1")
    extra = data.power_w[:, i].astype(float) - clean.power_w[:, i]
    assert np.all(extra[BEFORE] == 0)
    on = (extra > 1.0).astype(int)
    starts = np.flatnonzero(np.diff(on) == 1)
    ends = np.flatnonzero(np.diff(on) == -1)
    per_min = len(starts) / ((len(extra) / RATE - ON) / 60.0)
    assert 2.0 <= per_min <= 6.5                        # Poisson around 4 / min
    lengths = (ends[:len(starts)] - starts[:len(ends)]) / RATE
    assert np.median(lengths) == pytest.approx(0.9, abs=0.4)
    assert 2.5 <= extra[on == 1].mean() <= 10.0
    h = data.hosts.index("stor-1")
    disk = "disk_read_bytes_per_s"
    assert np.all(data.telemetry[disk][int(ON) + 1:, h] < clean.telemetry[disk][int(ON) + 1:, h])
    with pytest.raises(FaultSpecError, match="kind: disk_retries cannot hit 'srv01'"):
        _run(FaultSpec("disk_retries", "srv01", ON, 0, 4.0))


def test_runaway_process_raises_util_and_power_outside_any_job(clean):
    data = _run(FaultSpec("runaway_process", "srv04", ON, 0, 0.3))
    i, h = _col(data, "srv04"), data.hosts.index("srv04")
    assert data.util[FULL, i].mean() > clean.util[FULL, i].mean() + 0.2
    assert data.power_w[FULL, i].mean() > clean.power_w[FULL, i].mean() + 10.0
    cpu, cpu0 = data.telemetry["cpu_util"][900:, h], clean.telemetry["cpu_util"][900:, h]
    assert cpu.mean() > cpu0.mean() + 0.2
    with pytest.raises(FaultSpecError, match="runaway_process cannot hit 'tor-a'"):
        _run(FaultSpec("runaway_process", "tor-a", ON, 0, 0.3))


def test_outlet_dropout_drops_the_draw_while_telemetry_goes_on(clean):
    data = _run(FaultSpec("outlet_dropout", "srv05", ON, 0, 60.0))
    i, h = _col(data, "srv05"), data.hosts.index("srv05")
    low = data.power_w[:, i] < 1.0
    assert not low[BEFORE].any() and low.sum() >= 10
    assert np.array_equal(data.telemetry["cpu_util"][:, h], clean.telemetry["cpu_util"][:, h])
    assert np.array_equal(data.power_w[~low, i], clean.power_w[~low, i])


def test_sensor_faults_change_only_the_board(clean):
    data = _run(FaultSpec("sensor_stuck", "srv06", ON, 0, 0.0),
                FaultSpec("sensor_offset", "srv07", ON, 300, -15.0),
                FaultSpec("sensor_gain", "tor-b", ON, 0, 0.08))
    assert np.array_equal(data.power_w, clean.power_w)
    board = data.board_power_w
    s, o, g = _col(data, "srv06"), _col(data, "srv07"), _col(data, "tor-b")
    k = int(ON * RATE)
    assert np.all(board[k:, s] == clean.power_w[k, s])
    assert np.std(data.power_w[k:, s]) > 1.0
    assert np.allclose(board[FULL, o], clean.power_w[FULL, o] - 15.0, atol=1e-3)
    assert np.allclose(board[FULL, g], clean.power_w[FULL, g] * 1.08, rtol=1e-5)
    assert np.allclose(board[BEFORE], clean.power_w[BEFORE])


@pytest.mark.parametrize(("spec", "field"), [
    (FaultSpec("fan_wear", "srv99", 0, 0, 5.0), "component: 'srv99'"),
    (FaultSpec("psu_efficiency", "srv01", 0, 0, -0.1), "magnitude: -0.1"),
    (FaultSpec("sensor_gain", "srv01", 0, 0, -1.5), "magnitude: -1.5"),
])
def test_bad_faults_are_refused_naming_the_field(spec, field):
    with pytest.raises(FaultSpecError, match=field):
        generate(0.01, seed=1, faults=[spec])


def test_ground_truth_is_saved_beside_the_data(tmp_path):
    faults = [FaultSpec("fan_wear", "srv01", 60, 120, 10.0, failure_s=7200, growth="exponential",
                        seed=3),
              FaultSpec("sensor_stuck", "tor-a", 90, 0, 0.0)]
    data = generate(0.05, seed=2, faults=faults)
    folder = data.save(tmp_path / "run")
    saved = json.loads((folder / "rack_sim_faults.json").read_text())
    assert [d["kind"] for d in saved] == ["fan_wear", "sensor_stuck"]
    assert saved[1]["failure_s"] is None
    loaded = SimData.load(folder)
    assert loaded.faults == tuple(faults) and math.isinf(loaded.faults[1].failure_s)
    assert np.array_equal(loaded.board_power_w, data.board_power_w.astype(np.float32)
                          .astype(np.float64))
    (folder / "rack_sim_faults.json").unlink()           # a run saved before faults existed
    assert SimData.load(folder).faults == ()


def test_a_replayed_trace_takes_power_faults_but_not_a_runaway(tmp_path):
    csv_path = tmp_path / "trace.csv"
    csv_path.write_text("time_s,power_w,util\n0.0,100.0,0.1\n1.0,120.0,0.3\n2.0,150.0,0.5\n")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["components"][4]["trace"] = {"format": "csv", "path": str(csv_path)}
    name = raw["components"][4]["name"]
    clean = generate(0.01, seed=1, config=raw)
    data = generate(0.01, seed=1, config=raw,
                    faults=[FaultSpec("psu_efficiency", name, 0, 0, 0.05)])
    assert np.allclose(data.power_w[:, 4], clean.power_w[:, 4] * 1.05, rtol=1e-6)
    with pytest.raises(FaultSpecError, match="replays a recorded power trace"):
        generate(0.01, seed=1, config=raw, faults=[FaultSpec("runaway_process", name, 0, 0, 0.2)])
