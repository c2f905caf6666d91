"""health_frame: a fast-mode run as per-second HealthFrame rows (board summaries with sensor
faults, an independent reference meter without them, telemetry, job knowledge)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rackpower_nodes.core.health import FRAME_FIELDS
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.sim.faults import FaultSpec
from rackpower_nodes.sim.faults.frames import health_frame
from rackpower_nodes.sim.rack_sim import generate


@pytest.fixture(scope="module")
def office():
    return generate(0.25, seed=11, faults=[FaultSpec("sensor_offset", "srv02", 300, 0, 30.0)])


def test_rows_are_seconds_and_board_summaries_match_the_samples(office):
    frame = health_frame(office)
    n, m = 900, len(office.names)
    assert len(frame) == n and frame.names == office.names and frame.kinds == office.kinds
    assert np.array_equal(frame.t_unix, office.start_unix + np.arange(n))
    assert all(getattr(frame, f).shape == (n, m) for f in FRAME_FIELDS)
    board = office.board_power_w.reshape(n, 10, m)
    assert np.allclose(frame.board_mean_w, board.mean(axis=1), rtol=1e-5)
    assert np.allclose(frame.board_min_w, board.min(axis=1))
    assert np.allclose(frame.board_max_w, board.max(axis=1))
    assert np.allclose(frame.board_std_w, board.std(axis=1), rtol=1e-4, atol=1e-4)


def test_reference_meter_sees_the_true_power_within_its_class(office):
    frame = health_frame(office, ref_noise=0.01, seed=4)
    true = office.power_w.reshape(900, 10, -1).mean(axis=1)
    rel = frame.ref_w / true - 1.0
    assert abs(rel.mean()) < 2e-3 and 0.008 < rel.std() < 0.012
    i = office.names.index("srv02")        # the offset shows on the board, not on the meter
    gap = frame.board_mean_w[300:, i] - frame.ref_w[300:, i]
    assert np.median(gap) == pytest.approx(30.0, abs=3.0)
    assert np.median(np.abs(frame.board_mean_w[:300, i] - frame.ref_w[:300, i])) < 3.0
    exact = health_frame(office, ref_noise=0.0)
    assert np.allclose(exact.ref_w, true, rtol=1e-5)
    with pytest.raises(ValueError, match="ref_noise"):
        health_frame(office, ref_noise=-1.0)


def test_host_fields_come_from_telemetry_and_switches_are_nan(office):
    frame = health_frame(office)
    h = office.hosts.index("stor-1")
    j = office.names.index("stor-1")
    tele = office.telemetry
    assert np.allclose(frame.util[:, j], tele["cpu_util"][:, h])
    assert np.allclose(frame.disk_bps[:, j], tele["disk_read_bytes_per_s"][:, h]
                       + tele["disk_write_bytes_per_s"][:, h], rtol=1e-6)
    assert np.allclose(frame.net_bps[:, j], tele["net_rx_bytes_per_s"][:, h]
                       + tele["net_tx_bytes_per_s"][:, h], rtol=1e-6)
    for switch in ("tor-a", "tor-b"):
        k = office.names.index(switch)
        for f in ("util", "disk_bps", "net_bps", "app_rate", "job_running"):
            assert np.isnan(getattr(frame, f)[:, k]).all()
    assert np.isnan(frame.app_rate).all()          # the office day has no inference service


def test_office_jobs_come_from_the_configured_schedule():
    data = generate(24, seed=1, rate_hz=1)
    frame = health_frame(data)
    hosts = [data.names.index(h) for h in data.hosts]
    assert set(np.unique(frame.job_running[:, hosts])) <= {0.0, 1.0}
    assert frame.job_running[:, hosts].max() == 1.0
    t0 = data.start_unix
    log = WorkloadSchedule.from_config(data.meta["config"]).job_log(t0, t0 + 86400)
    rec = log.records[0]
    row = math.ceil(rec.start_unix - t0) + 1
    for host in rec.hosts:
        assert frame.job_running[row, data.names.index(host)] == 1.0


def test_scheduler_jobs_and_app_rate_on_the_ai_rack():
    data = generate(1.0, seed=100, preset="ai")
    frame = health_frame(data)
    assert data.events is not None and len(data.events) > 0
    for rec in data.events.records:
        if math.isfinite(rec.start_unix) and rec.start_unix + 2 < data.start_unix + 3600:
            row = max(0, math.ceil(rec.start_unix - data.start_unix))
            for host in rec.hosts:
                assert frame.job_running[row, data.names.index(host)] == 1.0
    assert np.nanmax(frame.app_rate) > 0
    scheduled = [data.names.index(h) for h in data.events.hosts]
    assert not np.isnan(frame.job_running[:, scheduled]).any()


def test_psu_meters_see_a_psu_losing_efficiency_and_not_a_fan():
    faults = [FaultSpec("psu_efficiency", "srv03", 600, 0, 0.06, growth="step"),
              FaultSpec("fan_wear", "srv05", 600, 0, 20.0, growth="step")]
    data = generate(0.5, seed=12, faults=faults)
    frame = health_frame(data)
    polled = np.isfinite(frame.psu_in_w[:, 0])
    assert np.flatnonzero(polled)[:3].tolist() == [0, 10, 20]      # polled every 10 s
    assert np.isnan(frame.psu_out_w[~polled]).all()
    ratio = frame.psu_in_w / frame.psu_out_w

    def change(name):
        j = data.names.index(name)
        return np.nanmedian(ratio[600:, j]) / np.nanmedian(ratio[:600, j]) - 1.0

    assert change("srv03") == pytest.approx(0.06, abs=0.015)      # 6 % more in, same out
    assert abs(change("srv05")) < 0.015                            # a fan is a DC load
    j = data.names.index("srv05")                     # ... whose draw comes out of the PSU
    no_fan = health_frame(generate(0.5, seed=12, faults=faults[:1]))
    extra = np.nanmean(frame.psu_out_w[600:, j] - no_fan.psu_out_w[600:, j])
    assert extra == pytest.approx(20.0 * 0.9, abs=2.5)
    # the meters' fixed errors are the hardware's: the same on another day
    other = health_frame(generate(0.5, seed=13))
    k = data.names.index("tor-a")
    assert np.nanmedian(ratio[:, k]) == pytest.approx(
        np.nanmedian(other.psu_in_w[:, k] / other.psu_out_w[:, k]), abs=0.01)
