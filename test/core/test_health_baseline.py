"""The health model's learned baseline: expected draw and utilisation from a component's own
clean history, its out-of-sample scale, minute summaries, and the JSON round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.health_sim import sim_frame

from rackpower_nodes.core.health import (
    HealthConfig, HealthConfigError, HealthFrame, HealthModel, HealthModelError)
from rackpower_nodes.core.health.learning import CAP_MIN_RATIO
from rackpower_nodes.core.health.minutes import burst_score, job_moved, to_minutes


@pytest.fixture(scope="module")
def fitted():
    return HealthModel.fit(sim_frame(12, 120, "mixed"), HealthConfig())


def test_clean_held_out_half_day_has_small_residuals(fitted):
    """On another clean tuning-seed half day the expected draw is within a few % of the
    board's minute mean for every non-GPU component, and the residuals are unbiased."""
    test = sim_frame(12, 121, "mixed")
    mi = fitted.minutes(test)
    expected, util = fitted.expected(mi)
    res = mi.board - expected
    for j, name in enumerate(test.names):
        level = np.nanmean(mi.board[:, j])
        mae = np.nanmean(np.abs(res[:, j]))
        limit = 0.10 if name.startswith("gpu") else 0.03
        assert mae < limit * level, f"{name}: MAE {mae:.1f} W on {level:.0f} W"
        assert abs(np.nanmean(res[:, j])) < 0.02 * level, name
        # the out-of-sample scale learned in training is the right order of magnitude
        assert 0.3 < np.nanstd(res[:, j]) / fitted.power_sd_w[j] < 3.0, name
    hosts = [j for j, k in enumerate(test.kinds) if k != "switch"]
    assert np.all(np.isfinite(util[:, hosts]))
    assert np.all(np.isnan(util[:, [test.names.index("tor-a")]]))


def test_save_load_round_trip_gives_the_same_expectations(fitted, tmp_path):
    path = fitted.save(tmp_path / "health.json")
    text = path.read_text()
    assert "pickle" not in text and text.startswith("{")
    back = HealthModel.load(path)
    mi = back.minutes(sim_frame(12, 121, "mixed").rows(0, 3600))
    for a, b in zip(fitted.expected(mi), back.expected(mi)):
        np.testing.assert_allclose(a, b, rtol=1e-9)
    for k in ("mu", "phi", "sigma", "h", "burst_thr_w", "burst_coef", "burst_cap_w"):
        np.testing.assert_array_equal(getattr(fitted, k), getattr(back, k))
    assert np.isfinite(back.burst_cap_w[list(back.kinds).index("storage")])
    doc = json.loads(text)                 # saved before the burst cap existed: no cap
    del doc["burst_cap_w"]
    path.write_text(json.dumps(doc))
    assert np.all(np.isinf(HealthModel.load(path).burst_cap_w))


def test_load_rejects_a_foreign_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"format": "something-else"}')
    with pytest.raises(HealthModelError, match="format"):
        HealthModel.load(p)


def test_two_second_rows_give_the_same_minutes():
    """BSC-like rows 2 s apart: the minute means and coverage do not depend on the spacing."""
    f = sim_frame(12, 121, "mixed").rows(0, 1200)
    every2 = f.rows(0, len(f))
    keep = np.arange(0, len(f), 2)
    half = HealthFrame(f.t_unix[keep], f.names, f.kinds,
                       *(getattr(every2, k)[keep] for k in
                         ("board_mean_w", "board_min_w", "board_max_w", "board_std_w", "ref_w",
                          "util", "disk_bps", "net_bps", "app_rate", "job_running")))
    a, b = to_minutes(f), to_minutes(half)
    assert len(a) == len(b) == 20
    np.testing.assert_allclose(b.coverage, 1.0)
    np.testing.assert_allclose(a.board, b.board, rtol=0.02)


def test_fit_needs_enough_minutes():
    with pytest.raises(HealthModelError, match="minutes"):
        HealthModel.fit(sim_frame(12, 121, "mixed").rows(0, 300))


def test_bad_config_key_is_named():
    with pytest.raises(HealthConfigError, match="'arl0_wekes'"):
        HealthConfig.from_mapping({"arl0_wekes": 16})
    with pytest.raises(HealthConfigError, match="trees"):
        HealthConfig.from_mapping({"trees": "many"})
    with pytest.raises(ValueError, match="checks.bogus"):
        HealthConfig.from_mapping({"checks": {"bogus": 1}})
    cfg = HealthConfig.from_mapping({"arl0_weeks": 20, "checks": {"stuck_s": 20.0}})
    assert cfg.arl0_weeks == 20.0 and cfg.checks.stuck_s == 20.0


def test_ripple_leaves_out_what_the_request_rate_explains():
    """An inference server whose draw follows its request rate second by second (a 30 s
    swing): no ripple once the rate is known; the same draw without it is all ripple."""
    n = 600
    t = 1.7e9 + np.arange(n, dtype=np.float64)
    rate = 100.0 + 40.0 * np.sin(2 * np.pi * np.arange(n) / 30.0)
    board = (300.0 + 0.5 * rate)[:, None]
    col = {"board_mean_w": board, "board_min_w": board - 1, "board_max_w": board + 1,
           "board_std_w": np.ones((n, 1)), "ref_w": board, "util": np.full((n, 1), 0.4),
           "disk_bps": np.zeros((n, 1)), "net_bps": np.zeros((n, 1)),
           "app_rate": rate[:, None], "job_running": np.ones((n, 1))}
    told = HealthFrame(t, ("gpu",), ("server",), **col)
    blind = HealthFrame(t, ("gpu",), ("server",), **{**col, "app_rate": np.full((n, 1),
                                                                                  np.nan)})
    assert np.nanmax(to_minutes(told).ripple) < 0.01
    assert np.nanmin(to_minutes(blind).ripple) > 50.0      # (20 W)^2 / 2 = 200 W^2 in band


def test_the_ripple_is_read_in_quiet_minutes_against_what_the_workload_explains(fitted):
    """A GPU server's training jobs fill the ripple band with hundreds of W² (checkpoints,
    job changes): there a fan cannot be seen, so its ripple figure is NaN in those minutes
    and read in its idle ones, as the residual of its expected log ripple (near 0 on a
    held-out day). 1-2U servers, switches and storage are read in every covered minute but
    those in which a job started or ended, or the minute after (a step of the draw, not a
    fan): NaN there on every component."""
    test = sim_frame(12, 121, "mixed")
    mi = fitted.minutes(test)
    fig, _ = fitted.figures(mi, 0.5)
    rip = fig[:, :, 4]                                       # DETECTORS[4]: ripple
    covered = mi.coverage >= 0.5
    moved = job_moved(mi.job, mi.t_min)
    assert moved.sum() > 20 and np.all(np.isnan(rip[moved]))
    for j, name in enumerate(test.names):
        if not name.startswith("gpu"):
            assert np.all(np.isfinite(rip[covered[:, j] & ~moved[:, j], j])), name
            assert abs(np.nanmean(rip[:, j])) < 0.3, name
    g = test.names.index("gpu01")
    training = covered[:, g] & (mi.job[:, g] > 0.5) & (mi.ripple[:, g] > 100.0)
    idle = covered[:, g] & (mi.job[:, g] == 0) & (mi.util_std[:, g] < 0.01)
    assert training.sum() > 60 and idle.sum() > 30
    assert np.all(np.isnan(rip[training, g]))
    assert np.isfinite(rip[idle, g]).mean() > 0.9
    assert abs(np.nanmean(rip[idle, g])) < 0.5

def _storage_frame(seed: int, hours: float, step_p: float, pulses_per_min: float = 0.0,
                   spike_p: float = 0.007) -> HealthFrame:
    """A storage node, 1 s rows: its load steps (probability ``step_p`` a second) move its
    draw inside the second (in-row standard deviation +20 W per unit step, either way); its
    fans and turbo spike in ``spike_p`` of its seconds (+12 to +40 W); retry pulses
    (``pulses_per_min``, in the second half only) lift it by 3 W in seconds without a step."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    levels = rng.uniform(0.1, 0.9, n)                  # a new level at each step
    util = levels[np.maximum.accumulate(np.where(rng.random(n) < step_p, np.arange(n), 0))]
    du = np.abs(np.diff(util, prepend=util[0]))
    std = 1.0 + rng.gamma(4.0, 0.1, n) + 20.0 * du
    std = std + np.where(rng.random(n) < spike_p, rng.uniform(12.0, 40.0, n), 0.0)
    pulse = (rng.random(n) < pulses_per_min / 60.0) & (du == 0) & (np.arange(n) >= n // 2)
    std = std + 3.0 * pulse
    mean = 200.0 + 100.0 * util + rng.normal(0.0, 1.0, n)
    col = lambda a: np.asarray(a, np.float64)[:, None]    # noqa: E731
    return HealthFrame(1.7e9 + np.arange(n, dtype=np.float64), ("stor-1",), ("storage",),
                       col(mean), col(mean - 2 * std), col(mean + 2 * std), col(std),
                       col(mean), col(util), col(np.full(n, 1e8)), col(np.full(n, 1e6)),
                       col(np.full(n, np.nan)), col(np.zeros(n)))


def test_bursts_are_counted_beyond_what_the_load_steps_explain():
    """The burst score is the in-row standard deviation less what the row's utilisation
    rise or fall explains (learned: ~20 W per unit here). So a busier load, 3x the steps
    of the training day, counts about as many burst seconds as training (~2 % of seconds,
    the threshold's quantile), while 2 retry pulses a minute without a step add their own;
    read without the load term, the busier load alone would count many more."""
    train = _storage_frame(1, 6.0, 0.05)
    model = HealthModel.fit(train, HealthConfig())
    assert np.allclose(model.burst_coef[0], 20.0, rtol=0.2), model.burst_coef
    test = _storage_frame(2, 6.0, 0.15, pulses_per_min=2.0)
    half = len(test.t_unix) // 2
    calm, retrying = (model.minutes(test.rows(a, b)).bursts[:, 0]
                      for a, b in ((0, half), (half, len(test.t_unix))))
    assert 0.6 < calm.mean() < 2.4, calm.mean()
    assert retrying.mean() > calm.mean() + 1.2, (calm.mean(), retrying.mean())
    raw_thr = np.quantile(train.board_std_w[:, 0], 0.98)
    raw = to_minutes(test.rows(0, half), np.array([raw_thr]), 1.0).bursts[:, 0]
    assert raw.mean() > 2.0 * calm.mean(), (raw.mean(), calm.mean())


def test_seconds_beyond_the_burst_cap_are_load_spikes_not_bursts():
    """A row counts as a burst only up to the cap (the training's ``burst_cap_quantile`` of
    the score): most of a clean node's fan and turbo spikes (+12 to +40 W, 0.7 % of its
    seconds here) lie above it and are not counted, while 3 W retry pulses lie inside the
    band. Without the cap the spikes add ~0.3 burst seconds a minute to the clean count; a
    cap quantile of 1 is none."""
    train = _storage_frame(1, 6.0, 0.05)
    model = HealthModel.fit(train, HealthConfig())
    thr, cap = model.burst_thr_w[0], model.burst_cap_w[0]
    assert thr < 4.0 < 12.0 < cap < 30.0, (thr, cap)
    test = _storage_frame(2, 6.0, 0.05, pulses_per_min=2.0)
    half = len(test.t_unix) // 2
    calm, retrying = (model.minutes(test.rows(a, b)).bursts[:, 0]
                      for a, b in ((0, half), (half, len(test.t_unix))))
    uncapped = to_minutes(test.rows(0, half), model.burst_thr_w, 1.0,
                          model.burst_coef).bursts[:, 0]
    assert uncapped.mean() - calm.mean() > 0.2, (uncapped.mean(), calm.mean())
    assert retrying.mean() - calm.mean() > 1.2, (calm.mean(), retrying.mean())
    none = HealthModel.fit(train, HealthConfig(burst_cap_quantile=1.0))
    assert np.isinf(none.burst_cap_w[0])
    assert np.allclose(none.minutes(test.rows(0, half)).bursts[:, 0], uncapped)
    with pytest.raises(HealthConfigError, match="burst_cap_quantile"):
        HealthConfig(burst_cap_quantile=0.97)


def test_no_burst_cap_where_the_clean_rows_have_no_tail_of_spikes():
    """Without spikes the score's 99.5th percentile lies just above its 98th: a cap there
    would keep out a retrying drive's larger bursts, so there is none, and 6 W pulses count
    as fully as 3 W ones."""
    train = _storage_frame(1, 6.0, 0.05, spike_p=0.0)
    model = HealthModel.fit(train, HealthConfig())
    score = burst_score(train, model.burst_coef)[:, 0]
    assert np.quantile(score, 0.995) < CAP_MIN_RATIO * model.burst_thr_w[0]
    assert np.isinf(model.burst_cap_w[0])
    test = _storage_frame(2, 6.0, 0.05, pulses_per_min=2.0, spike_p=0.0)
    half = len(test.t_unix) // 2
    calm, retrying = (model.minutes(test.rows(a, b)).bursts[:, 0]
                      for a, b in ((0, half), (half, len(test.t_unix))))
    assert retrying.mean() - calm.mean() > 1.2, (calm.mean(), retrying.mean())


def test_job_moved_marks_the_minute_of_a_start_or_end_and_the_one_after():
    """Job shares per minute (two components): a minute whose share is strictly between 0
    and 1, or whose share differs from the adjacent minute before, is marked; the minute
    before the first comes from ``before`` when it is the minute just before; minutes after a
    gap know nothing before."""
    t = 60.0 * np.array([0, 1, 2, 3, 4, 6, 7])
    job = np.array([[0, 1], [0, 1], [0.5, 1], [1, 1], [1, 0], [0, 0], [0, np.nan]])
    moved = job_moved(job, t, before=(-60.0, np.array([0.0, 0.0])))
    assert moved[:, 0].tolist() == [False, False, True, True, False, False, False]
    assert moved[:, 1].tolist() == [True, False, False, False, True, False, False]
    assert job_moved(job, t)[0].tolist() == [False, False]
    assert job_moved(job, t, before=(-120.0, np.array([0.0, 0.0])))[0].tolist() == [
        False, False]
    assert job_moved(job[:0], t[:0], before=(-60.0, np.array([0.0, 0.0]))).shape == (0, 2)
