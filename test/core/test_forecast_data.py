"""Forecast data: gap splitting, the simulator's reader, window layout and the live twin of
training. The file and bag readers: test/sources/."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers.series import SMALL, T0, component_series

from rackpower_nodes.core.forecast.features import (
    FEATURES,
    WindowSpec,
    build_windows,
    feature_names,
    split_by_group,
    split_by_time,
)
from rackpower_nodes.core.forecast.online import OnlineWindows
from rackpower_nodes.core.forecast.series import TELEMETRY, DatasetError, split_on_gaps
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sim.rack_sim import generate

COL = {name: i for i, name in enumerate(feature_names(SMALL))}


@pytest.fixture(scope="module")
def sim():
    return generate(1, seed=1)


# -- gaps -----------------------------------------------------------------------------------

def test_split_on_gaps_cuts_at_a_gap_and_a_back_jump():
    t = np.concatenate([T0 + np.arange(300) * 0.01,            # 3 s at 100 Hz
                        T0 + 4.0 + np.arange(200) * 0.01,      # after a 1 s gap
                        T0 + 1.0 + np.arange(100) * 0.01])     # back in time
    p = np.concatenate([np.full(300, 100.0), np.full(200, 200.0), np.full(100, 300.0)])
    runs = split_on_gaps(t, p, step_s=0.1)
    assert [r[0] for r in runs] == pytest.approx([T0, T0 + 4.0, T0 + 1.0])
    assert [len(r[1]) for r in runs] == [30, 20, 10]
    for run, level in zip(runs, (100.0, 200.0, 300.0), strict=True):
        assert np.all(run[1] == level)


def test_split_on_gaps_means_and_holds_empty_steps():
    # dt = 0.14 s stays within 1.5 steps, so some steps get no sample and hold the previous
    t = T0 + np.array([0.0, 0.05, 0.14, 0.28, 0.42])
    p = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
    tel = np.array([[np.nan, 1.0], [np.nan, 3.0], [2.0, np.nan], [4.0, 4.0], [6.0, 6.0]])
    [(t0, mean, tmean)] = split_on_gaps(t, p, tel, step_s=0.1)
    assert t0 == pytest.approx(T0)
    np.testing.assert_allclose(mean, [2.0, 5.0, 7.0, 7.0, 9.0])   # step 3 is empty: held
    np.testing.assert_allclose(tmean[:, 0], [np.nan, 2.0, 4.0, 4.0, 6.0])
    np.testing.assert_allclose(tmean[:, 1], [2.0, np.nan, 4.0, 4.0, 6.0])


def test_no_window_crosses_a_gap_or_a_back_jump():
    levels = (60.0, 120.0, 180.0)
    t = np.concatenate([T0 + np.arange(60) * 0.1, T0 + 7.0 + np.arange(40) * 0.1,
                        T0 + 2.0 + np.arange(30) * 0.1])
    p = np.repeat(levels, [60, 40, 30])
    series = [component_series(r[1], t0=r[0]) for r in split_on_gaps(t, p, step_s=0.1)]
    ws = build_windows(series, SMALL)
    per_segment = [n - SMALL.warmup_steps - SMALL.horizon_steps + 1 for n in (60, 40, 30)]
    assert len(ws) == sum(per_segment)
    window_power = np.concatenate([ws.x[:, :, COL["power"]], ws.y], axis=1) * 200.0
    assert np.allclose(window_power, window_power[:, :1])          # one level per window
    assert sorted(set(np.round(window_power[:, 0]))) == list(levels)


# -- the simulator's reader -----------------------------------------------------------------

def test_from_sim_one_hour(sim):
    series = from_sim(sim)
    assert [s.component for s in series] == list(sim.names)
    srv01, tor_a = series[0], series[sim.names.index("tor-a")]
    assert len(srv01) == 36000 and srv01.step_s == 0.1 and srv01.t0_unix == sim.start_unix
    np.testing.assert_array_equal(srv01.power_w, sim.power_w[:, 0])
    assert (srv01.idle_w, srv01.max_w) == (64.0, 232.0)      # r710 SPECpower curve ends
    assert (tor_a.idle_w, tor_a.max_w) == pytest.approx((222.0, 318.0))
    assert np.isnan(tor_a.telemetry).all()
    # the row for second s (its mean) is known at s + 1 and held for that second
    h = sim.hosts.index("srv01")
    np.testing.assert_array_equal(srv01.telemetry[:10], np.nan)
    np.testing.assert_allclose(srv01.telemetry[25, 0], sim.telemetry["cpu_util"][1, h])
    mem = sim.telemetry["mem_used_bytes"][1, h] / sim.meta["mem_total_bytes"][h]
    assert srv01.telemetry[25, 1] == pytest.approx(mem, rel=1e-6)
    assert srv01.schedule is not None and "srv04" in srv01.schedule.hosts


def test_from_sim_reads_a_saved_folder(tmp_path):
    short = generate(60 / 3600, seed=2)
    series = from_sim(short.save(tmp_path / "run"), step_s=0.5)
    assert len(series) == 16 and len(series[0]) == 120
    np.testing.assert_allclose(series[0].power_w[:3],
                               short.power_w[:15, 0].reshape(3, 5).mean(axis=1), rtol=1e-6)


# -- features -------------------------------------------------------------------------------

def test_feature_names_follow_the_spec():
    assert FEATURES == feature_names(WindowSpec())
    assert feature_names(SMALL)[:7] == ["power", "power_mean_3", "power_max_3", "power_slope_3",
                                        "power_mean_10", "power_max_10", "power_slope_10"]


def test_power_scaling_and_coarse_statistics():
    ramp = 40.0 + 2.0 * np.arange(30)                 # W, +2 W per step
    ws = build_windows([component_series(ramp, max_w=200.0)], SMALL)
    first = ws.x[0]                                   # steps 9 .. 18 of the ramp
    np.testing.assert_allclose(first[:, COL["power"]], ramp[9:19] / 200.0, rtol=1e-6)
    np.testing.assert_allclose(first[:, COL["power_mean_3"]], (ramp[9:19] - 2.0) / 200.0,
                               rtol=1e-6)
    np.testing.assert_allclose(first[:, COL["power_max_10"]], ramp[9:19] / 200.0, rtol=1e-6)
    np.testing.assert_allclose(first[:, COL["power_slope_10"]], 10 * 2.0 / 200.0, rtol=1e-5)
    np.testing.assert_allclose(ws.y[0], ramp[19:24] / 200.0, rtol=1e-6)
    assert ws.last[0] == pytest.approx(ramp[18] / 200.0)
    assert ws.scale_w[0] == 200.0 and ws.t_unix[0] == pytest.approx(T0 + 1.8)
    assert first[0, COL["idle_frac"]] == 0.25 and first[0, COL["max_kw"]] == 0.2
    assert ws.x.dtype == ws.y.dtype == np.float32


def test_nan_telemetry_becomes_zero_with_telemetry_known():
    tel = np.tile([0.5, 0.25, 1e6, 0.0, np.nan, 3e9], (30, 1))
    tel[12:, :] = np.nan
    ws = build_windows([component_series(np.full(30, 100.0), telemetry=tel)], SMALL)
    x = ws.x[0]                                       # steps 9 .. 18
    names = ["cpu_util", "mem_used_fraction", "net_rx", "net_tx", "disk_read", "disk_write"]
    cols = [COL[n] for n in names]
    np.testing.assert_allclose(x[0, cols], [0.5, 0.25, math.log1p(1e6) / math.log1p(1e10), 0.0,
                                            0.0, math.log1p(3e9) / math.log1p(1e10)], rtol=1e-6)
    assert x[0, COL["telemetry_known"]] == pytest.approx(5 / 6)
    assert np.all(x[3:, cols] == 0.0) and np.all(x[3:, COL["telemetry_known"]] == 0.0)
    assert np.isfinite(ws.x).all()


def test_calendar_and_schedule_event_features():
    schedule = WorkloadSchedule.from_config({"schedule": {"jobs": [
        {"name": "idx", "hosts": ["srv01"], "expected_util": 0.7, "duration_s": 1.0,
         "every": {"period_s": 3600, "phase_s": 2.0}}]}})
    monday = 1709510400.0                             # 2024-03-04 00:00 UTC
    spec = WindowSpec(0.1, 40, 5, (3,))
    ws = build_windows([component_series(np.full(60, 90.0), t0=monday, schedule=schedule)], spec)
    col = {name: i for i, name in enumerate(ws.feature_names)}
    x = ws.x[0]
    t = ws.t_unix[0] - monday + (np.arange(40) - 39) * 0.1     # step start times (s)
    active = (t >= 2.0 - 1e-4) & (t < 3.0 - 1e-4)
    np.testing.assert_allclose(x[:, col["ev_run_util"]], 0.7 * active)
    np.testing.assert_allclose(x[active, col["ev_run_age"]], (t[active] - 2.0) / 60, atol=1e-6)
    np.testing.assert_allclose(x[active, col["ev_run_left"]], (3.0 - t[active]) / 60, atol=1e-6)
    wait = np.where(t < 2.0 - 1e-4, (2.0 - t) / 60, 1.0)       # the next run is 1 h away
    np.testing.assert_allclose(x[:, col["ev_next_in"]], wait, atol=1e-6)
    np.testing.assert_allclose(x[:, col["ev_next_util"]], np.where(wait < 1.0, 0.7, 0.0))
    assert not x[:, col["ev_next_gpu"]].any()
    assert x[0, col["tod_sin"]] == pytest.approx(2 * np.pi * t[0] / 86400, abs=1e-6)
    assert x[0, col["dow_cos"]] == pytest.approx(1.0)          # Monday 00:00


def test_stride_and_max_windows():
    series = [component_series(np.full(200, 100.0)),
              component_series(np.full(100, 120.0), name="srv02")]
    full = build_windows(series, SMALL)
    strided = build_windows(series, WindowSpec(0.1, 10, 5, (3, 10), stride=4))
    assert len(full) == (200 - 18 - 5) + (100 - 18 - 5)
    assert len(strided) == math.ceil(177 / 4) + math.ceil(77 / 4)
    a = build_windows(series, SMALL, max_windows=50, seed=5)
    b = build_windows(series, SMALL, max_windows=50, seed=5)
    assert len(a) == 50 and np.array_equal(a.t_unix, b.t_unix)
    assert set(a.component) == {"srv01", "srv02"}


def test_splits_keep_train_and_test_apart():
    series = [component_series(np.full(400, 100.0), name=f"AMD/{w}") for w in ("web", "db")]
    ws = build_windows(series, SMALL)
    train, test = split_by_time(ws, 0.7)
    for name in ("AMD/web", "AMD/db"):
        tr, te = train.t_unix[train.component == name], test.t_unix[test.component == name]
        assert len(tr) and len(te)
        assert tr.max() + (SMALL.horizon_steps + 1) * 0.1 <= te.min() - 18 * 0.1 + 1e-6
    train, test = split_by_group(ws, ["db"])
    assert set(test.component) == {"AMD/db"} and set(train.component) == {"AMD/web"}


@pytest.mark.parametrize("kwargs, match", [
    ({"power": [1.0, np.nan]}, "non-finite"),
    ({"power": [1.0, 2.0], "telemetry": np.zeros((2, 5))}, "telemetry shape"),
    ({"power": [1.0], "max_w": 0.0}, "max_w"),
    ({"power": [1.0], "t0": T0 + 0.05}, "grid"),
])
def test_component_series_rejects_bad_input(kwargs, match):
    with pytest.raises(DatasetError, match=match):
        component_series(**kwargs)


# -- live twin ------------------------------------------------------------------------------

def test_online_windows_match_build_windows_on_sim_data(sim):
    names = ["srv04", "srv07", "tor-a", "stor-1"]     # job at 00:30, job next at 01:00
    seconds = 2400
    series = [s for s in from_sim(sim) if s.component in names]
    for s in series:                                 # first 40 minutes
        s.power_w, s.telemetry = s.power_w[:seconds * 10], s.telemetry[:seconds * 10]
    spec = WindowSpec(stride=10)
    ws = build_windows(series, spec)
    online = OnlineWindows(spec, names, [s.idle_w for s in series], [s.max_w for s in series],
                           series[0].schedule)
    rows = {(c, round(t, 1)): i for i, (c, t) in enumerate(zip(ws.component, ws.t_unix - T0))}
    checked = 0
    for sec in range(seconds):
        t0 = sim.start_unix + sec
        online.push_power_block(t0, 0.1, list(sim.names), sim.power_w[sec * 10:(sec + 1) * 10].T)
        for h, host in enumerate(sim.hosts):
            online.push_telemetry(t0 + 1.0, host, _sim_row(sim, sec, h))
        x, last, ready, age = online.window(t0 + 1.0)
        if sec < 14:
            assert not ready.any()                    # 149 steps of warm-up
            continue
        assert ready.all() and np.allclose(age, 0.1)
        if sec % 20 and not 1795 <= sec <= 1805:
            continue
        for i, name in enumerate(names):
            row = rows[(name, round(t0 + 0.8 - T0, 1))]
            np.testing.assert_allclose(x[i], ws.x[row], atol=1e-5, err_msg=f"{name} at {sec}")
            assert last[i] == ws.last[row]
            checked += 1
    assert checked > 400


def _sim_row(sim, sec: int, h: int) -> list[float]:
    tele = sim.telemetry
    return [tele["cpu_util"][sec, h],
            tele["mem_used_bytes"][sec, h] / sim.meta["mem_total_bytes"][h],
            tele["net_rx_bytes_per_s"][sec, h], tele["net_tx_bytes_per_s"][sec, h],
            tele["disk_read_bytes_per_s"][sec, h], tele["disk_write_bytes_per_s"][sec, h]]


def test_online_windows_go_stale_and_restart_after_a_gap():
    online = OnlineWindows(SMALL, ["a"], [10.0], [100.0], stale_s=0.5)
    t = T0 + np.arange(300) * 0.01
    online.push_power_block(T0, 0.01, ["a", "unknown"], np.full((2, 300), 50.0))
    x, last, ready, age = online.window(t[-1] + 0.01)
    assert ready[0] and last[0] == np.float32(0.5) and age[0] == pytest.approx(0.1)
    assert not online.window(t[-1] + 1.0)[2][0]                  # stale
    online.push_power(t[-1] + 0.5, "a", 60.0)                     # after a gap: history restarts
    x, last, ready, age = online.window(t[-1] + 0.5)
    assert not ready[0] and np.all(x == 0.0)
    with pytest.raises(DatasetError, match="6"):
        online.push_telemetry(T0, "a", [1.0, 2.0])
    assert len(TELEMETRY) == 6


def test_a_few_lost_frames_inside_a_step_are_no_break():
    from rackpower_nodes.core.forecast.messages import SequenceCheck, lost_frames_tolerance_s

    check = SequenceCheck(lost_frames_tolerance_s(0.1))           # 50 ms at a 0.1 s step
    assert not check.is_break(0, 50, 0, 0.001)
    assert not check.is_break(51, 50, 1, 0.001)                    # 1 ms lost (a CRC error)
    assert check.is_break(161, 50, 60, 0.001)                      # 60 ms lost
    assert not check.is_break(211, 50, 0, 0.001)
    assert check.is_break(0, 50, 0, 0.001)                         # sequence went back


def test_online_windows_hand_out_each_closed_step_once_per_reader():
    online = OnlineWindows(SMALL, ["a", "b"], [10.0, 10.0], [100.0, 200.0])
    for k in range(6):                                # a: steps 0..5, b: steps 2..5
        online.push_power(T0 + k * 0.1 + 0.05, "a", 10.0 * k)
        if k >= 2:
            online.push_power(T0 + k * 0.1 + 0.05, "b", 20.0 * k)
    first = round(T0 / 0.1)
    np.testing.assert_array_equal(online.last_steps(), [first + 4, first + 4])   # 5 is open
    steps, means = online.closed_steps(None, 10)
    np.testing.assert_array_equal(steps, first + np.arange(5))
    np.testing.assert_allclose(means[:, 0], [0.0, 0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(means[:, 1], [np.nan, np.nan, 0.2, 0.3, 0.4])
    steps, means = online.closed_steps(first + 3, 10)
    np.testing.assert_array_equal(steps, [first + 4])
    assert online.closed_steps(None, 2)[0].tolist() == [first + 3, first + 4]
    assert online.closed_steps(first + 4, 10)[0].size == 0


@pytest.mark.parametrize("hole", [False, True])
def test_a_block_of_components_is_fed_as_each_row_alone(hole):
    """One batch of every component (cut into steps once for all when every sample is
    finite) holds exactly what feeding each component's row on its own holds, gaps, a
    back-jump and a missing sample included."""
    names = ["a", "b", "c"]
    rng = np.random.default_rng(7)
    together, alone = (OnlineWindows(SMALL, names, [10.0] * 3, [300.0] * 3) for _ in "12")
    t0 = T0 + 0.0007
    for k, jump in enumerate([0.0, 0.0, 0.4, 0.0, -0.2, 0.0, 0.0]):
        t0 += jump
        power = 100.0 + 50.0 * rng.random((3, 37))
        if hole and k == 3:
            power[1, 5] = np.nan
        together.push_power_block(t0, 0.01, names, power)
        for name, row in zip(names, power):
            alone.push_power_block(t0, 0.01, [name], row[None, :])
        t0 += 37 * 0.01
    for name in names:
        a, b = together._tracks[name], alone._tracks[name]
        assert list(a.steps) == list(b.steps) and len(a.steps) > 0
        assert (a.cur, a.total, a.count, a.last_t) == (b.cur, b.total, b.count, b.last_t)
    for got, want in zip(together.window(t0), alone.window(t0)):
        np.testing.assert_array_equal(got, want)
