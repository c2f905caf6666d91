"""The served forecaster: permanent challengers chosen on matured errors, bias correction,
hysteresis, ordered quantiles and the registry round trip, on synthetic series."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rackpower_nodes.core.forecast.base import ForecastInputError
from rackpower_nodes.core.forecast.baselines import (
    EwmaForecaster, LightGbmForecaster, LightGbmParams, PersistenceForecaster)
from rackpower_nodes.core.forecast.challengers import ServedForecaster, ServedParams
from rackpower_nodes.core.forecast.challengers.online import ClassState, guard_lags
from rackpower_nodes.core.forecast.features import build_windows, split_by_time
from rackpower_nodes.core.forecast.registry import load_model, save_model
from helpers.series import SMALL, T0, component_series

MAX_W = 200.0
H = SMALL.horizon_steps


@pytest.fixture(scope="module")
def windows():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    power = 100 + 40 * np.sin(t / 15.0) + rng.normal(0, 3, len(t))
    return build_windows([component_series(power, max_w=MAX_W)], SMALL)


@pytest.fixture(scope="module")
def members(windows):
    return {"persistence": PersistenceForecaster().fit(windows),
            "ewma": EwmaForecaster().fit(windows)}


def _served(members, start: int | None = None, **params) -> ServedForecaster:
    """Served over ``members``; ``start``: the variant every class, context and step starts
    from, as if the held-out slice had chosen it (None: persistence, from no slice)."""
    served = ServedForecaster(ServedParams(**params), members)
    served.adopt_members()
    served.select_start(None)
    if start is not None:
        served.start = {"*": [[start] * H, [start] * H]}
        served.reset_online()
    return served


def _replay(served, truth_w, challenger, steps=None, key="srv01", used=None):
    """Serve every step of ``truth_w`` (W); ``challenger(s, future_w)`` gives the second
    member's p50 (W, (H,)) at origin s. Returns served p50 (W) per origin, (steps, H); the
    variant served per step at each origin is appended to ``used`` when given."""
    out = []
    for s in range(steps or len(truth_w) - H):
        future = truth_w[s + 1:s + 1 + H]
        p50 = np.stack([np.full(H, truth_w[s]), challenger(s, future)]) / MAX_W    # (C, H)
        raw = np.stack([p50, p50 + 0.02, p50 + 0.04], axis=-1)[None]            # (1, C, H, 3)
        q = served.serve(T0 + s * SMALL.step_s, [key], np.array([truth_w[s] / MAX_W]), raw)
        out.append(q[0, :, 0] * MAX_W)
        if used is not None:
            used.append(served.last_served[0].copy())
    return np.array(out)


def _truth(n, seed=1):
    """A component that swings (persistence errs by several W) and stays > 0 W."""
    s = np.arange(n)
    return 150 + 40 * np.sin(s / 9.0) + np.random.default_rng(seed).normal(0, 2.0, n)


def test_a_constant_10_w_bias_is_corrected_to_within_a_watt(members):
    served = _served(members, jump_z=1e9)                        # one context: calm
    truth = _truth(400)
    p50 = _replay(served, truth, lambda s, future: future + 10.0)   # right shape, 10 W high
    assert served.diagnostics()["classes"]["*"]["calm"]["served"] == ["ewma+bias"] * H
    bias_w = np.array(served.diagnostics()["keys"]["srv01"]["bias"]) * MAX_W
    assert np.all(np.abs(bias_w - 10.0) < 1.0)
    actual = np.stack([truth[s + 1:s + 1 + H] for s in range(len(p50))])
    assert np.abs(p50[-100:] - actual[-100:]).max() < 1.0


def test_a_challenger_3x_worse_than_persistence_is_not_served(members):
    truth = _truth(1000)

    def bad(s, future):          # error exactly 3x persistence's
        return truth[s] - 2.0 * (future - truth[s])

    served, used = _served(members), []
    _replay(served, truth, bad, used=used)
    assert not (np.array(used) >= 2).any()        # variants 2, 3: the challenger, raw or +bias
    started_bad = _served(members, start=2)
    used = []
    p50 = _replay(started_bad, truth, bad, used=used)
    assert not (np.array(used[100:]) >= 2).any()
    actual = np.stack([truth[s + 1:s + 1 + H] for s in range(len(p50))])
    persistence = np.abs(truth[:len(p50), None] - actual).mean()
    assert np.abs(p50 - actual).mean() < 1.1 * persistence     # only the first errors at 3x


def test_only_matured_errors_count(members):
    served = _served(members, window=1000, min_errors=1000, jump_z=1e9)
    truth = _truth(60)
    n = 40
    _replay(served, truth, lambda s, future: future, steps=n)
    counts = served.diagnostics()["classes"]["*"]["calm"]["errors"]["ewma"]
    # origins 0..n-1, measured steps 0..n-1: the forecast h steps ahead from origin o has
    # matured when o + h <= n - 1, n - h times
    assert counts == [n - h for h in range(1, H + 1)]
    # the same forecasts observed once more (a repeat) and a step seen out of order count once
    served.observe(T0 + (n - 1) * SMALL.step_s, ["srv01"], np.array([truth[n - 1] / MAX_W]))
    served.observe(T0 + (n - 3) * SMALL.step_s, ["srv01"], np.array([truth[n - 3] / MAX_W]))
    assert served.diagnostics()["classes"]["*"]["calm"]["errors"]["ewma"] == counts


def test_the_served_forecast_depends_only_on_what_was_measured(members):
    truth_a = _truth(300, seed=2)
    truth_b = truth_a.copy()
    truth_b[150:] = truth_b[149]                   # the two futures part after step 149

    def near_oracle(s, future):                    # 1 W off the future it is given
        return future + np.where(s % 2, 1.0, -1.0)

    choices = []
    for truth in (truth_a, truth_b):
        choices.append([])
        _replay(_served(members, window=40, min_errors=20, jump_z=1e9), truth, near_oracle,
                steps=250,
                used=choices[-1])
    a, b = np.array(choices[0]), np.array(choices[1])
    # choices up to origin 149 rest on the same measurements: identical, whatever follows
    np.testing.assert_array_equal(a[:150], b[:150])
    assert (a[150:] != b[150:]).any()              # and the futures do tell them apart later
    # the challenger (variant 2 or 3) serves step h only once 20 of its h-step errors have
    # matured: by origin s those of origins 0 .. s - h, so not before origin 19 + h
    first = [int(np.argmax(a[:, h - 1] >= 2)) for h in range(1, H + 1)]
    assert all(f >= 19 + h for f, h in zip(first, range(1, H + 1), strict=True)), first
    assert (a[-1] >= 2).all()


def test_near_equal_errors_do_not_make_it_flap(members):
    truth = _truth(1500, seed=3)
    rng = np.random.default_rng(4)
    signs = rng.choice([-1.0, 1.0], size=(len(truth), H))
    wobble = np.where((np.arange(len(truth)) // 60) % 2 == 0, 0.99, 1.01)

    def near(s, future):           # |error| 0.99x or 1.01x persistence's, sign at random
        return future + signs[s] * wobble[s] * np.abs(future - truth[s])

    served = _served(members, correct_bias=False, jump_z=1e9)
    _replay(served, truth, near)
    assert served._class("*").switches == 0
    flappy = _served(members, correct_bias=False, margin=0.0, window=30, min_errors=10,
                     jump_z=1e9)
    _replay(flappy, truth, near)
    assert flappy._class("*").switches > 4            # the test would see flapping


def _level_shifts(n=3000, seed=6):
    """Flat levels with 2 W noise, shifting by 80 W every 100 steps."""
    rng = np.random.default_rng(seed)
    level = 150 + 40 * np.where((np.arange(n) // 100) % 2 == 0, -1.0, 1.0)
    return level + rng.normal(0, 2.0, n)


def _smoother(truth):
    """A real lagging challenger: the EWMA (0.3) of the measured past, for every step."""
    level = np.empty(len(truth))
    level[0] = truth[0]
    for s in range(1, len(truth)):
        level[s] = 0.3 * truth[s] + 0.7 * level[s - 1]
    return lambda s, future: np.full(H, level[s])


def _ratio(served, truth, challenger):
    """Served MAE / persistence MAE and the challenger's, over a replay of ``truth``."""
    p50 = _replay(served, truth, challenger)
    actual = np.stack([truth[s + 1:s + 1 + H] for s in range(len(p50))])
    persistence = np.abs(truth[:len(p50), None] - actual).mean()
    alone = np.stack([challenger(s, None) for s in range(len(p50))])
    return (np.abs(p50 - actual).mean() / persistence,
            np.abs(alone - actual).mean() / persistence)


def test_after_level_shifts_persistence_serves_and_the_smoother_when_calm(members):
    truth = _level_shifts()
    one, smoother = _ratio(_served(members, jump_z=1e9, correct_bias=False), truth,
                           _smoother(truth))
    two, _ = _ratio(_served(members, correct_bias=False), truth, _smoother(truth))
    assert smoother > 1.2                      # the challenger alone: lags every shift
    assert one < 1.02                          # one context: about persistence
    assert two < 0.95 and two < one - 0.05     # calm and moving apart: better than both


@pytest.mark.parametrize("guard_memory, bound", [(0.0, None), (2000.0, 1.02)])
def test_the_guard_serves_persistence_while_the_choice_does_worse(members, guard_memory,
                                                                   bound):
    truth = _level_shifts()
    served = _served(members, jump_z=1e9, correct_bias=False, window=3000, min_errors=3000,
                     guard_memory=guard_memory, loss_bound=False, start=2)   # no evidence
    ratio, smoother = _ratio(served, truth, _smoother(truth))
    if bound is None:
        assert ratio == pytest.approx(smoother)  # without the guard: the smoother throughout
    else:
        assert ratio < bound


def test_a_few_lucky_errors_are_not_evidence(members):
    """A challenger no better than persistence: its absolute error is 0.5x or 1.5x
    persistence's at random, so early on its sum is often ahead by the margin. The guard
    serves it only once the lead is two standard errors of the paired difference."""
    truth = _truth(1500, seed=14)
    rng = np.random.default_rng(4)
    sign = rng.choice([-1.0, 1.0], size=(len(truth), H))
    factor = rng.choice([0.5, 1.5], size=(len(truth), H))

    def coin(s, future):
        return future + sign[s] * factor[s] * np.abs(future - truth[s])

    share = {}
    for z in (0.0, 2.0):
        used = []
        served = _served(members, jump_z=1e9, correct_bias=False, loss_bound=False,
                         guard_z=z, start=2)
        _replay(served, truth, coin, used=used)
        share[z] = float((np.array(used) != 0).mean())
        evidence = served.diagnostics()["classes"]["*"]["calm"]["evidence"]
        assert len(evidence) == H and all(e <= 0 for e in evidence)    # not ahead at the end
    assert share[0.0] > 0.05                  # the lead alone: served on luck
    assert share[2.0] < 0.005


def test_a_run_of_lucky_errors_is_not_evidence(members):
    """A challenger no better than persistence whose luck comes in runs: its absolute error
    is 0.5x or 1.5x persistence's for 10 steps at a time. Its paired differences are
    correlated, so the plain standard error is too small and a run of luck passes for
    evidence (``guard_lags`` 0); the long-run (Newey-West) spread does not let it."""
    truth = _truth(1500, seed=14)
    share = {}
    for lags in (0, None):
        used = []
        for seed in (1, 2, 3, 5):
            rng = np.random.default_rng(seed)
            factor = np.repeat(rng.choice([0.5, 1.5], size=len(truth) // 10 + 1), 10)
            sign = rng.choice([-1.0, 1.0], size=(len(truth), H))

            def runs(s, future, factor=factor, sign=sign):
                return future + sign[s] * factor[s] * np.abs(future - truth[s])

            served = _served(members, jump_z=1e9, correct_bias=False, loss_bound=False,
                             guard_lags=lags, start=2)
            _replay(served, truth, runs, used=used)
            if lags is None:
                evidence = served.diagnostics()["classes"]["*"]["calm"]["evidence"]
                assert all(e <= 0 for e in evidence)            # not ahead at the end
        share[lags] = float((np.array(used) != 0).mean())
    assert share[0] > 0.02                     # the plain spread: served on a run of luck
    assert share[None] < 0.002


def test_the_long_run_spread_counts_keys_that_move_together():
    """Two keys of one class with the same paired differences at every step: their sum's
    variance is twice the sum of their squares, and the guard's spread says so."""
    params = ServedParams(guard_lags=0)
    cs = ClassState(np.zeros((2, 1), np.int64), 2, params, np.ones(2, bool))
    for step in range(50):
        for _key in range(2):
            cs.add(np.array([[1.0], [0.6]]), np.array([0]))     # persistence 1.0, v1 0.6
        cs.close_step(step)
    assert cs.guard_lr[0, 1, 0] == pytest.approx(2.0 * cs.guard_sq[0, 1, 0], rel=1e-3)
    assert guard_lags(ServedParams(), 3) == 7                   # Newey-West for 2000
    assert guard_lags(ServedParams(), 12) == 11                 # h - 1 when longer
    for wrong in (-1, "7", 2.5):
        with pytest.raises(ValueError, match="guard_lags"):
            ServedParams(guard_lags=wrong)


def _spread_after(steps, lags=2, keys_per_call=None):
    """guard_lr (persistence 1.0, variant 1 0.0: a paired difference of 1 per add) after one
    add at each of ``steps``, closed with its step; ``keys_per_call``: adds per close_step
    call (two calls for one step when (1, 1))."""
    cs = ClassState(np.zeros((2, 1), np.int64), 2, ServedParams(guard_lags=lags),
                    np.ones(2, bool))
    for step in steps:
        for adds in keys_per_call or (1,):
            for _ in range(adds):
                cs.add(np.array([[1.0], [0.0]]), np.array([0]))
            cs.close_step(step)
    return cs.guard_lr[0, 1, 0]


def test_the_long_run_spread_pairs_steps_by_time_not_by_call():
    """Lag k of the long-run spread is k steps of time: the two sides of a gap longer than
    the lags are never paired, a shorter gap pairs them at its length, and a second call for
    one step folds its errors in with that step's (as one call with all its keys would)."""
    fade = np.exp(-1.0 / ServedParams().guard_memory)
    alone = 1.0 + fade                            # D_t = 1 twice, no cross term
    assert _spread_after([0, 1]) == pytest.approx(alone + 2.0 * (2.0 / 3.0))    # lag 1
    assert _spread_after([0, 2]) == pytest.approx(alone + 2.0 * (1.0 / 3.0))    # lag 2
    assert _spread_after([0, 3]) == pytest.approx(alone)                        # beyond
    assert _spread_after([0, 500]) == pytest.approx(alone)
    assert _spread_after([0, 1, 5, 6]) == pytest.approx(_spread_after([0, 1, 50, 51]))
    assert _spread_after([4, 5], keys_per_call=(1, 1)) == pytest.approx(
        _spread_after([4, 5], keys_per_call=(2,)))
    assert _spread_after([7, 7]) == pytest.approx(_spread_after([7], keys_per_call=(2,)))
    assert _spread_after([0, 9], lags=0) == pytest.approx(alone)


def test_the_served_forecaster_closes_each_measured_step_with_its_step(members, monkeypatch):
    """observe hands the guard the step it measured, so a gap in the data is a gap in the
    long-run spread's lags."""
    closed = []
    real = ClassState.close_step
    monkeypatch.setattr(ClassState, "close_step",
                        lambda self, step=None: (closed.append(step), real(self, step)))
    served = _served(members)
    truth = _truth(80)
    kept = [s for s in range(len(truth) - H) if not 30 <= s < 60]     # 30 steps missing
    for s in kept:
        raw = np.stack([np.full(H, truth[s]), np.full(H, truth[s])]) / MAX_W
        raw = np.stack([raw, raw + 0.02, raw + 0.04], axis=-1)[None]
        served.serve(T0 + s * SMALL.step_s, ["k"], np.array([truth[s] / MAX_W]), raw)
    first = served._step(T0)
    assert [c - first for c in closed] == kept


def _prefix_ratios(p50, truth):
    """(origins, H) served / persistence absolute error sums over every prefix of a replay's
    served ``p50`` (W, (origins, H)), per horizon step."""
    actual = np.stack([truth[s + 1:s + 1 + H] for s in range(len(p50))])
    served_sum = np.cumsum(np.abs(p50 - actual), axis=0)
    persistence_sum = np.cumsum(np.abs(truth[:len(p50), None] - actual), axis=0)
    return served_sum / persistence_sum


@pytest.mark.parametrize("risk", [0.0, 0.01, 0.05])
def test_the_loss_bound_holds_at_every_moment_whatever_is_chosen(members, risk):
    """A smoother chosen offline, neither guard nor evidence in the way: the served error sum
    stays within (1 + risk) x persistence's on every prefix and horizon step, by construction
    (without the bound the same replay is the smoother's 1.24x)."""
    truth = _level_shifts()
    served = _served(members, jump_z=1e9, correct_bias=False, window=3000, min_errors=3000,
                     guard_memory=0.0, risk=risk, start=2)
    p50 = _replay(served, truth, _smoother(truth))
    ratios = _prefix_ratios(p50, truth)
    assert (ratios <= 1.0 + risk + 1e-5).all(), ratios.max(axis=0)     # float32 output
    if risk == 0.0:       # nothing saved, nothing at stake: persistence itself throughout
        np.testing.assert_allclose(ratios, 1.0, rtol=1e-5)
    else:
        assert (ratios[-1] > 1.0).all()       # the bound, not the smoother, stopped the loss
    assert (np.array(served.diagnostics()["classes"]["*"]["loss_bound"]["mixed"]) > 0).all()
    summary = served.summary()["*"]              # what the predictor's diagnostics show
    n = len(truth) - H                           # origins served; matured: s + h <= n - 1
    actual = np.stack([truth[s + 1:s + 1 + H] for s in range(n)])
    done = np.arange(n)[:, None] + np.arange(1, H + 1)[None] <= n - 1
    want = (np.abs(p50 - actual)[done].sum() / np.abs(truth[:n, None] - actual)[done].sum())
    assert summary["error_ratio"] == pytest.approx(want, rel=1e-5)
    assert summary["bound"] == pytest.approx(1.0 + risk) and summary["matured"] == n - H
    assert summary["serving"] == "ewma"


def test_a_challenger_that_saves_is_served_in_full_once_it_has(members):
    """An oracle 1 W off: mixed with persistence while it has saved little, then served as
    it is; beyond the first forecasts the bound costs nothing."""
    truth = _truth(600, seed=5)
    served = _served(members, jump_z=1e9, correct_bias=False, guard_memory=0.0, start=2)
    p50 = _replay(served, truth, lambda s, future: future + 1.0)
    actual = np.stack([truth[s + 1:s + 1 + H] for s in range(len(p50))])
    np.testing.assert_allclose(p50[100:], actual[100:] + 1.0, atol=1e-4)
    mixed = served.diagnostics()["classes"]["*"]["loss_bound"]["mixed"]
    assert 0 < max(mixed) < 100
    assert (_prefix_ratios(_replay(_served(members), truth, lambda s, f: f + 1.0),
                           truth)[-1] < 0.5).all()


def test_stakes_of_forecasts_that_never_mature_are_released(members):
    """A gap in the measured steps and a forecast issued twice from one step: what they held
    comes back, so once everything issued has matured or lapsed nothing is held."""
    served = _served(members, jump_z=1e9, guard_memory=0.0, risk=1.0, correct_bias=False,
                     window=1000, min_errors=1000, start=2)
    truth = _truth(200, seed=7)

    def serve(s):
        p50 = np.stack([np.full(H, truth[s]), np.full(H, truth[s] + 5.0)]) / MAX_W
        raw = np.stack([p50, p50 + 0.02, p50 + 0.04], axis=-1)[None]
        served.serve(T0 + s * SMALL.step_s, ["k"], np.array([truth[s] / MAX_W]), raw)

    for s in [*range(0, 60), 59, 59, *range(70, 120)]:      # twice from 59; 60-69 missing
        serve(s)
        if s >= 10:                                         # after the first maturities
            assert served._class("*").held.max() > 0       # a 5 W departure is at stake
    for s in range(120, 120 + H):                           # measured, nothing issued
        served.observe(T0 + s * SMALL.step_s, ["k"], np.array([truth[s] / MAX_W]))
    doc = served.diagnostics()["classes"]["*"]["loss_bound"]
    np.testing.assert_allclose(doc["held"], 0.0, atol=1e-12)
    assert min(doc["saved"]) < 0 < min(doc["persistence"])   # 5 W high: it lost, within risk


@pytest.mark.parametrize("loss_bound", [True, False])
def test_a_member_that_returns_nan_is_replaced_by_persistence(members, loss_bound):
    served = _served(members, jump_z=1e9, guard_memory=0.0, risk=1.0, loss_bound=loss_bound,
                     start=2)
    truth = _truth(80, seed=8)
    p50 = _replay(served, truth, lambda s, future: np.where(s % 3 == 0, np.nan, future + 1.0))
    assert np.isfinite(p50).all()
    np.testing.assert_allclose(p50[::3], np.repeat(truth[:len(p50):3, None], H, axis=1),
                               rtol=1e-6)
    doc = served.diagnostics()["classes"]["*"]["loss_bound"]
    assert np.isfinite(doc["held"]).all() and np.isfinite(doc["saved"]).all()
    json.dumps(served.diagnostics(), allow_nan=False)        # strict JSON, bound or not


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quantiles_stay_ordered_and_non_negative(members, seed):
    rng = np.random.default_rng(seed)
    served = _served(members, min_errors=5, window=20)
    for s in range(80):
        raw = rng.normal(0.2, 0.3, (3, 2, H, 3))        # crossing and negative on purpose
        q = served.serve(T0 + s * SMALL.step_s, ["a", "b", "c"], rng.uniform(0, 1, 3), raw,
                         classes=["srv", "srv", "switch"])
        assert q.shape == (3, H, 3) and q.dtype == np.float32
        assert (q >= 0).all() and (np.diff(q, axis=2) >= 0).all()


def test_save_load_round_trip(windows, tmp_path):
    train, val = split_by_time(windows, 0.8)
    members = {"ewma": EwmaForecaster(), "lightgbm": LightGbmForecaster(
        LightGbmParams(n_estimators=10, threads=1, early_stopping=0))}
    served = ServedForecaster(ServedParams(min_errors=5, window=20), members).fit(train, val)
    assert list(served.members) == ["persistence", "ewma", "lightgbm"]
    assert set(served.offline["*"]["calm"]) == {"windows", "persistence", "ewma", "lightgbm"}
    loaded = load_model(save_model(served, tmp_path))
    assert isinstance(loaded, ServedForecaster) and loaded.start == served.start
    np.testing.assert_array_equal(loaded.predict(val.x, val.last),
                                  served.predict(val.x, val.last))
    served.reset_online()
    for model in (served, loaded):
        model.outs = [model.forecast(t, ["srv01"], val.x[i:i + 1], val.last[i:i + 1])
                      for i, t in enumerate(val.t_unix[:60])]
    np.testing.assert_array_equal(np.array(served.outs), np.array(loaded.outs))
    assert served.diagnostics() == loaded.diagnostics()


def test_bad_inputs_name_what_is_wrong(members):
    with pytest.raises(ForecastInputError, match="persistence"):
        ServedForecaster(members={"ewma": members["ewma"]}).adopt_members()
    with pytest.raises(ForecastInputError, match="never fitted"):
        ServedForecaster(members={**members, "x": EwmaForecaster()}).adopt_members()
    with pytest.raises(ValueError, match="min_errors"):
        ServedParams(window=10, min_errors=20)
    served = _served(members)
    with pytest.raises(ForecastInputError, match="member predictions of shape"):
        served.serve(T0, ["a"], np.array([0.5]), np.zeros((1, 3, H, 3)))
    with pytest.raises(ForecastInputError, match="classes"):
        served.serve(T0, ["a"], np.array([0.5]), np.zeros((1, 2, H, 3)), classes=["x", "y"])
    with pytest.raises(ForecastInputError, match="before fit"):
        ServedForecaster(members=members).observe(T0, ["a"], np.array([0.5]))


# --- replay: the served forecaster over recorded windows, as in service ---------------------
def _two_components(stride: int):
    from dataclasses import replace
    rng = np.random.default_rng(4)
    t = np.arange(300)
    series = [component_series(120 + 30 * np.sin(t / 7.0 + k) + rng.normal(0, 2, len(t)),
                               name=name, max_w=MAX_W) for k, name in enumerate(["srv01",
                                                                                  "tor1"])]
    return series, build_windows(series, replace(SMALL, stride=stride))


def test_replay_is_the_live_calls_in_time_order(members):
    """On windows one step apart, replay serves exactly what calling ``serve`` for each step
    (every key of the step together) serves, from a fresh state, and leaves none behind."""
    from rackpower_nodes.core.forecast.challengers.replay import replay
    _, ws = _two_components(stride=1)
    served = _served(members, start=2, min_errors=5, window=20, guard_memory=0)
    got, used = replay(served, ws, lambda c: c[:3])
    assert served.diagnostics()["classes"] == {}                   # reset after
    raw = np.stack([m.predict(ws.x, ws.last) for m in members.values()], axis=1)
    want, variants = np.empty_like(got), np.empty_like(used)
    for t in np.unique(ws.t_unix):
        rows = np.flatnonzero(ws.t_unix == t)
        want[rows] = served.serve(t, list(ws.component[rows]), ws.last[rows], raw[rows],
                                  [str(c)[:3] for c in ws.component[rows]])
        variants[rows] = served.last_served
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(used, variants)
    assert (used != 0).any() and (used == 0).any()       # both served: not trivial


def test_replay_observes_every_step_between_strided_windows(members, monkeypatch):
    """Windows 3 steps apart: before the forecasts of each window, the steps since the one
    before are observed with their measured values, in time order, so every horizon step
    matures (else only step 3 would, and the others would serve persistence forever)."""
    from rackpower_nodes.core.forecast.challengers.replay import replay
    series, ws = _two_components(stride=3)
    served = _served(members)
    seen: dict[str, list[tuple[int, float]]] = {"srv01": [], "tor1": []}
    observe = served.observe

    def record(step_t, keys, realised, classes=None):
        for k, v in zip(keys, realised, strict=True):
            seen[k].append((round(step_t / SMALL.step_s), float(v)))
        observe(step_t, keys, realised, classes)

    monkeypatch.setattr(served, "observe", record)
    replay(served, ws)
    for s in series:
        steps = [st for st, _ in seen[s.component]]
        first = round(ws.t_unix[ws.component == s.component].min() / SMALL.step_s)
        last = round(ws.t_unix[ws.component == s.component].max() / SMALL.step_s)
        assert sorted(set(steps)) == list(range(first, last + 1))
        assert steps == sorted(steps)
        for st, v in seen[s.component]:
            assert v == pytest.approx(s.power_w[st - s.first_step] / MAX_W, rel=1e-5)
