"""Rack simulator: SPECpower steady state, dynamics, workloads, replay, config errors, files."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import yaml
from helpers import REPO

from rackpower_nodes.sim.cli import main
from rackpower_nodes.sim.rack_model import (
    LOAD_POINTS,
    Dynamics,
    PowerStream,
    PulseTrain,
    SimConfigError,
    ar1_filter,
)
from rackpower_nodes.sim.rack_sim import RackSimulator, SimData, generate, load_config
from rackpower_nodes.sim.workload import TELEMETRY_FIELDS, load_bsc_trace, load_plain_trace

HOUR = 3600.0


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((REPO / "config" / "rack_sim.yaml").read_text())


@pytest.fixture(scope="module")
def day(raw) -> SimData:
    """One simulated Monday at 1 Hz (the 10 Hz day is in benchmarks/bench_rack_sim.py)."""
    return generate(24, seed=1, rate_hz=1, config=raw)


def _hours(data: SimData, start_h: float, end_h: float) -> np.ndarray:
    t_h = data.t_s / HOUR
    return (t_h >= start_h) & (t_h < end_h)


def _flat_levels(raw: dict, levels: dict[str, float], quiet: bool) -> dict:
    """The default rack with each server at a constant utilisation and no batch jobs."""
    cfg = copy.deepcopy(raw)
    cfg["schedule"] = {"jobs": []}
    cfg["workloads"] = dict(cfg["workloads"], **{f"flat-{n}": {"constant": u}
                                                 for n, u in levels.items()})
    for comp in cfg["components"]:
        if comp["name"] in levels:
            comp["workload"] = f"flat-{comp['name']}"
    if quiet:
        cfg["dynamics"] = {"server": {"turbo_frac": 0.0, "noise_w": 0.0, "white_w": 0.0,
                                      "spike_rate_per_h": 0.0}}
    return cfg


@pytest.mark.parametrize("quiet", [True, False], ids=["noise-off", "noise-averaged"])
def test_steady_power_follows_specpower_curve(raw, quiet):
    """Every server, at the 11 SPECpower points and the midpoints between them, within 2 %."""
    cfg = load_config(raw)
    servers = [c for c in cfg.components if c.kind == "server"]
    levels = np.linspace(0.0, 1.0, 21)               # 11 points and 10 midpoints
    per_run = 3
    for first in range(0, len(levels), per_run):
        chosen = {}
        for k, comp in enumerate(servers):
            chosen[comp.name] = float(levels[min(first + k % per_run, len(levels) - 1)])
        data = generate(1200 / HOUR, seed=7, rate_hz=10, config=_flat_levels(raw, chosen, quiet))
        settled = data.power_w[100:]                  # skip the first 10 s
        for comp in servers:
            expected = float(np.interp(chosen[comp.name], LOAD_POINTS,
                                       comp.model.curve.points_w))
            got = float(settled[:, comp.index].mean())
            assert got == pytest.approx(expected, rel=0.02), (comp.name, chosen[comp.name])
            if quiet:
                assert got == pytest.approx(expected, rel=1e-4)


def test_psu_swap_scales_wall_power_by_efficiency(raw):
    cfg = copy.deepcopy(raw)
    model = cfg["server_models"]["sr650-8176"]
    model["psu"] = {"curve": "titanium", "rating_w": 750}
    swapped = load_config(cfg).components[6].model
    reference = load_config(raw).components[6].model
    util = np.linspace(0, 1, 11)
    dc = swapped.reference_psu.dc_from_wall(reference.steady_power_w(util))
    ratio = swapped.reference_psu.efficiency(dc) / swapped.psu.efficiency(dc)
    np.testing.assert_allclose(swapped.steady_power_w(util),
                               reference.steady_power_w(util) * ratio, rtol=1e-6)
    assert (swapped.steady_power_w(util) < reference.steady_power_w(util)).all()


def test_power_lags_a_utilisation_step_and_overshoots_briefly():
    dt = 0.01
    steady = lambda u: 100.0 + 200.0 * u
    dyn = Dynamics(lag_tau_s=0.2, turbo_frac=0.25, turbo_tau_s=3.0, noise_w=0.0, white_w=0.0,
                   spike_rate_per_h=0.0)
    rng = np.random.default_rng(0)
    stream = PowerStream(steady, 200.0, dyn, dt, rng, rng)
    stream.block(np.full(100, 0.2))
    power = stream.block(np.full(6000, 0.8))              # 60 s after a step 0.2 -> 0.8
    low, high = steady(0.2), steady(0.8)
    assert power[4] < low + 0.3 * (high - low)            # 0.05 s in: still rising
    assert power[100] > high                              # 1 s in: turbo overshoot
    assert power[100] < high + 0.25 * 200.0 * 0.6
    assert power[-1] == pytest.approx(high, abs=0.01)     # settled


def test_ar1_filter_matches_recursion_and_pulses_span_blocks():
    rng = np.random.default_rng(3)
    for a in (0.0, 0.5, 0.999, 0.99999):
        x = rng.standard_normal(4000)
        expected, y = np.empty_like(x), 2.0
        for i, v in enumerate(x):
            y = a * y + v
            expected[i] = y
        np.testing.assert_allclose(ar1_filter(x, a, 2.0), expected, rtol=1e-9, atol=1e-9)
    pulses = PulseTrain()
    first = pulses.block(10, np.array([8]), np.array([5]), np.array([2.0]))
    second = pulses.block(10, np.array([]), np.array([]), np.array([]))
    assert first.tolist()[-2:] == [2.0, 2.0] and second.tolist()[:4] == [2.0, 2.0, 2.0, 0.0]


def test_same_seed_same_data_different_seed_different(raw):
    a = generate(0.1, seed=5, config=raw)
    b = generate(0.1, seed=5, config=raw)
    c = generate(0.1, seed=6, config=raw)
    assert np.array_equal(a.power_w, b.power_w) and np.array_equal(a.util, b.util)
    assert all(np.array_equal(a.telemetry[f], b.telemetry[f]) for f in TELEMETRY_FIELDS)
    assert not np.array_equal(a.power_w, c.power_w)
    assert not np.allclose(a.power_w[:, :12], c.power_w[:, :12], atol=1.0)


def test_live_simulator_matches_fast_mode(raw):
    data = generate(0.05, seed=4, config=raw)
    sim = RackSimulator(raw, seed=4)
    np.testing.assert_allclose(sim.power_at(data.t_s), data.power_w, atol=1e-3)
    state = sim.step(0.5)
    state = sim.step(0.5)
    assert state.t_s == 1.0 and sim.now_s == 1.0
    np.testing.assert_allclose(state.power_w, data.power_w[10], atol=1e-3)
    np.testing.assert_allclose(state.current_a, state.power_w / 230.0)
    host = sim.host_state("srv03", 12.7)
    ref = data.host_state("srv03", 12.0)
    assert host.t_s == 12.0 and host.cpu_util == pytest.approx(ref.cpu_util, abs=1e-6)


def test_live_history_is_bounded(raw):
    sim = RackSimulator(raw, history_s=60.0, block_s=10)
    sim.state_at(300.0)
    sim.state_at(250.0)
    with pytest.raises(ValueError, match="history"):
        sim.state_at(100.0)


def test_diurnal_day_peak_above_night_trough(day):
    total = day.total_w
    business, night = total[_hours(day, 10, 16)].mean(), total[_hours(day, 2, 5)].mean()
    assert business > 1.2 * night
    assert business - night > 500.0


def test_default_rack_stays_under_derated_budget(day):
    total = day.total_w
    assert (total <= day.meta["budget_w"]).mean() > 0.99
    assert total.max() > 0.8 * day.meta["budget_w"]      # sized close to the budget


def test_batch_job_raises_its_hosts_utilisation(day):
    srv07 = day.names.index("srv07")                      # etl-nightly, 01:00 for 90 min
    during = day.util[_hours(day, 1.05, 2.45), srv07]
    before = day.util[_hours(day, 0.0, 0.95), srv07]
    assert during.mean() >= 0.84 and during.min() >= 0.7
    assert during.mean() > before.mean() + 0.4


def test_host_telemetry_is_plausible_and_follows_utilisation(day):
    h = day.hosts.index("srv01")
    tele = {f: day.telemetry[f][:, h].astype(np.float64) for f in TELEMETRY_FIELDS}
    assert len(tele["cpu_util"]) == 24 * 3600
    assert 0.0 <= tele["cpu_util"].min() and tele["cpu_util"].max() <= 1.0
    state = day.host_state("srv01", 13 * HOUR)
    assert 0 < state.mem_used_bytes < state.mem_total_bytes
    for f in TELEMETRY_FIELDS[2:]:
        assert (tele[f] >= 0).all()
        assert np.corrcoef(tele["cpu_util"], tele[f])[0, 1] > 0.5, f


def test_bsc_trace_replay_reproduces_the_file(raw, shared_data):
    path = shared_data / "bsc-power" / "INTEL_Xeon_X5650" / "web_search.csv"
    trace = load_bsc_trace(path)
    rows = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1,))
    assert len(trace.power_w) == len(rows)               # no row lost, runs kept in order
    np.testing.assert_array_equal(trace.power_w, rows)
    cfg = copy.deepcopy(raw)
    cfg["components"][0]["trace"] = {"format": "bsc", "path": str(path)}
    data = generate(2 * trace.period_s / HOUR, seed=1, config=cfg)
    for loop in range(2):
        idx = np.rint((trace.t_s + loop * trace.period_s) * data.rate_hz).astype(int)
        np.testing.assert_allclose(data.power_w[idx, 0], rows, atol=1e-3)
        np.testing.assert_allclose(data.util[idx, 0], trace.util, atol=1e-6)


def test_plain_csv_trace_replay(raw, tmp_path):
    csv_path = tmp_path / "trace.csv"
    csv_path.write_text("time_s,power_w,util\n2.0,150.0,0.5\n0.0,100.0,0.1\n"
                        "1.0,120.0,0.3\n3.0,130.0,0.4\n")
    cfg = copy.deepcopy(raw)
    cfg["components"][4]["trace"] = {"format": "csv", "path": str(csv_path)}
    data = generate(10 / HOUR, seed=1, config=cfg)
    power, util = data.power_w[:, 4], data.util[:, 4]
    np.testing.assert_allclose(power[[0, 10, 20, 30, 40, 50]], [100, 120, 150, 130, 100, 120])
    assert power[5] == pytest.approx(110.0)
    np.testing.assert_allclose(util[[0, 10, 20, 30]], [0.1, 0.3, 0.5, 0.4], atol=1e-6)


def _write_power_bag(path, watts_per_batch, component="srv05", voltage=230.0) -> None:
    """A rosbag2 (MCAP) of PowerSamples: batches of 100 samples at 1 kHz, one level each."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from rackpower_nodes.sources.bags import message_typestore

    store = message_typestore()
    T = store.types
    t0_ns = 1_700_000_000 * 10**9
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/rack_07/power_samples", "rackpower/msg/PowerSamples",
                                     typestore=store)
        for b, watts in enumerate(watts_per_batch):
            t_ns = t0_ns + b * 100_000_000
            stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
            current = np.full(100, watts / voltage, np.float32)
            msg = T["rackpower/msg/PowerSamples"](
                header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="rack_07"),
                sample_period_s=0.001, sample_count=100, first_sequence=b * 100,
                first_board_time_us=b * 100_000, channel_ids=[component], current_a=current,
                voltage_v=np.full(1, voltage, np.float32),
                mean_power_w=np.full(1, watts, np.float32),
                peak_power_w=np.full(1, watts, np.float32), total_power_w=float(watts),
                frames_lost=0)
            writer.write(conn, t_ns, store.serialize_cdr(msg, msg.__msgtype__))


def test_bag_trace_replay(raw, tmp_path):
    levels = [100.0, 120.0, 150.0, 130.0, 110.0]
    _write_power_bag(tmp_path / "bag", levels)
    cfg = copy.deepcopy(raw)
    cfg["components"][4]["trace"] = {"format": "bag", "path": str(tmp_path / "bag"),
                                     "component": "srv05"}
    data = generate(2 / HOUR, seed=1, config=cfg)          # 2 s at the config's 10 Hz
    np.testing.assert_allclose(data.power_w[:10, 4], levels * 2, rtol=1e-5)   # looped
    util = data.util[:5, 4]                                 # no telemetry: scaled power
    np.testing.assert_allclose(util, [0.0, 0.4, 1.0, 0.6, 0.2], atol=1e-5)
    missing = copy.deepcopy(cfg)
    missing["components"][4]["trace"]["component"] = "srv99"
    with pytest.raises(SimConfigError, match="no power_samples channel 'srv99'"):
        generate(1 / HOUR, seed=1, config=missing)
    no_id = copy.deepcopy(cfg)
    del no_id["components"][4]["trace"]["component"]
    with pytest.raises(SimConfigError, match="component"):
        generate(1 / HOUR, seed=1, config=no_id)


def test_plain_csv_without_util_and_with_a_bad_header(tmp_path):
    good = tmp_path / "p.csv"
    good.write_text("time_s,power_w\n0,100\n0.5,300\n1.0,200\n")
    trace = load_plain_trace(good)
    np.testing.assert_allclose(trace.util, [0.0, 1.0, 0.5])
    assert trace.period_s == 1.5
    np.testing.assert_allclose(trace.power_at(np.array([0.25, 1.25, 1.5 + 0.5])),
                               [200.0, 150.0, 300.0])
    bad = tmp_path / "b.csv"
    bad.write_text("t,watts\n0,100\n1,120\n")
    with pytest.raises(SimConfigError, match="time_s,power_w"):
        load_plain_trace(bad)


def test_current_source_gives_amperes_per_board_channel(raw):
    sim = RackSimulator(raw, seed=2)
    source = sim.current_source([3, None, 0, 15], channels=20, t0_s=30.0)
    t = np.arange(0, 2.0, 0.001)
    amps = source(t)
    assert amps.shape == (2000, 20) and amps.dtype == np.float64
    power = sim.power_at(30.0 + t)
    np.testing.assert_allclose(amps[:, 0], power[:, 3] / 230.0)
    np.testing.assert_allclose(amps[:, 2], power[:, 0] / 230.0)
    np.testing.assert_allclose(amps[:, 3], power[:, 15] / 230.0)
    assert not amps[:, [1] + list(range(4, 20))].any()
    assert 0.1 < amps[:, 0].min() and amps[:, 0].max() < 3.0
    with pytest.raises(ValueError, match="channel_map"):
        sim.current_source([16], channels=4)


def _broken(raw, edit):
    cfg = copy.deepcopy(raw)
    edit(cfg)
    return cfg


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["components"][2].update(model="no-such-model"), "components[2].model"),
    (lambda c: c["rack"].update(breaker_a=-16.0), "rack.breaker_a"),
    (lambda c: c["server_models"]["r710-x5670"]["power_w"].pop(),
     "server_models.r710-x5670.power_w"),
    (lambda c: c["server_models"]["sr650-8176"]["power_w"].__setitem__(5, 100.0),
     "server_models.sr650-8176.power_w"),
    (lambda c: c["components"][0].update(workload="nope"), "components[0].workload"),
    (lambda c: c["components"][1].update(outlet=1, pdu="pdu-a"), "components[1].outlet"),
    (lambda c: c["components"][3].update(kind="ups"), "components[3].kind"),
    (lambda c: c["schedule"]["jobs"][0].update(hosts=["srv99"]), "schedule.jobs[0].hosts"),
    (lambda c: c["schedule"]["jobs"][0].update(expected_util=2), "schedule.jobs[0].expected_util"),
    (lambda c: c.update(rate_hz=2.5), "rate_hz"),
    (lambda c: c["server_models"]["r710-x5670"].update(psu={"curve": "x", "rating_w": 500}),
     "server_models.r710-x5670.psu.curve"),
    (lambda c: c["workloads"]["web"]["diurnal"].update(hourly=[0.5] * 23),
     "workloads.web.diurnal.hourly"),
])
def test_malformed_config_names_the_key(raw, edit, key):
    with pytest.raises(SimConfigError) as err:
        load_config(_broken(raw, edit))
    assert str(err.value).startswith(key + ":"), err.value


def test_save_load_round_trip_and_shapes(raw, tmp_path):
    data = generate(1.0, seed=3, config=raw)
    assert data.power_w.shape == (36000, 16) and data.power_w.dtype == np.float32
    assert data.util.shape == (36000, 16)
    assert all(data.telemetry[f].shape == (3600, 14) for f in TELEMETRY_FIELDS)
    loaded = SimData.load(data.save(tmp_path / "run"))
    assert loaded.names == data.names and loaded.hosts == data.hosts
    assert (loaded.rate_hz, loaded.start_unix, loaded.seed) == (10.0, data.start_unix, 3)
    assert np.array_equal(loaded.power_w, data.power_w)
    assert np.array_equal(loaded.util, data.util)
    assert all(np.array_equal(loaded.telemetry[f], data.telemetry[f]) for f in TELEMETRY_FIELDS)
    assert loaded.meta["budget_w"] == pytest.approx(0.8 * 20 * 230)
    assert loaded.meta["config"]["seed"] == raw["seed"]
    assert loaded.host_state("stor-1", 99.5) == data.host_state("stor-1", 99.5)


def test_cli_fast_and_plot(tmp_path):
    out = tmp_path / "sim"
    assert main(["fast", "--hours", "0.02", "--seed", "2", "--out", str(out),
                 "--png", str(tmp_path / "a.png")]) == 0
    assert (out / "rack_sim.npz").is_file() and (out / "rack_sim.json").is_file()
    assert main(["plot", "--data", str(out), "--out", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").stat().st_size > 10_000
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.yaml"
    bad.write_text("rack: {breaker_a: 16}\ncomponents: []\n")
    assert main(["fast", "--hours", "0.01", "--out", str(out), "--config", str(bad)]) == 2
    assert math.isclose(SimData.load(out).meta["hours"], 0.02)
