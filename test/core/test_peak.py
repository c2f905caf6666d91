"""Window peaks, the no-training peak baseline and the conformal peak calibrator."""

import numpy as np
import pytest

from rackpower_nodes.core.allocation.forecast import ForecastView, forecast_peak
from rackpower_nodes.core.allocation.policy import PolicyConfig
from rackpower_nodes.core.forecast.peak import (
    PeakCalibrator, PeakTracker, baseline_peaks, class_of, forecast_peaks,
    headroom_for_coverage, peak_changes, realised_peaks, replay, window_steps)


@pytest.mark.parametrize("first,last", [(1, 1), (2, 3), (11, 20), (1, 7)])
def test_realised_peaks_match_a_loop(first, last):
    power = np.random.default_rng(first * 10 + last).normal(100, 20, 60)
    got = realised_peaks(power, first, last)
    for j in range(len(power)):
        if j + last < len(power):
            assert got[j] == pytest.approx(max(power[j + first:j + last + 1]))
        else:
            assert np.isnan(got[j])
    assert np.allclose(peak_changes(power, first, last), got - power, equal_nan=True)


def test_forecast_peaks_match_a_loop_and_the_policy():
    q = np.random.default_rng(1).uniform(50, 300, (4, 50, 3))
    first, last = window_steps(1.0, 1.0, 0.1)
    assert (first, last) == (11, 20)
    got = forecast_peaks(q, first, last)
    for i in range(4):
        for k in range(3):
            assert got[i, k] == max(q[i, s - 1, k] for s in range(first, last + 1))
    view = ForecastView(1000.0, 0.1, q[..., 0], q[..., 1], q[..., 2])
    policy = PolicyConfig(breaker_w=5000.0, lead_s=1.0, window_s=1.0)
    assert np.array_equal(forecast_peak(view, 1000.0, policy, "p90"), got[:, 1])
    assert np.array_equal(forecast_peaks(q[..., 1], first, last), got[:, 1])


@pytest.mark.parametrize("bad", [(0, 1), (3, 2)])
def test_bad_window_names_it(bad):
    with pytest.raises(ValueError, match="first"):
        realised_peaks(np.zeros(10), *bad)


def test_baseline_is_last_plus_recent_change_quantiles_and_causal():
    rng = np.random.default_rng(3)
    power = 100 + rng.normal(0, 5, 400)
    first, last = 2, 3
    d = peak_changes(power, first, last)
    base = baseline_peaks(power, d, mature_after=last, trailing=50, min_history=10,
                          prior=[1.0, 2.0, 3.0])
    j = 200                                     # knows changes of origins 148..197
    want = power[j] + np.quantile(d[j - last - 49:j - last + 1], [0.5, 0.9, 0.99])
    assert np.allclose(base[j], want)
    assert np.allclose(base[5], power[5] + np.array([1.0, 2.0, 3.0]))   # too young: the prior
    assert np.all(np.diff(base, axis=1) >= 0)
    spiked = power.copy()
    spiked[300] += 500                          # a spike at step 300 ...
    base2 = baseline_peaks(spiked, peak_changes(spiked, first, last), last, 50, 10)
    base1 = baseline_peaks(power, d, last, 50, 10)
    # ... is unknown to every origin before it has matured in a window (origin 297 + 3 = 300)
    assert np.array_equal(base1[:300], base2[:300])
    assert not np.array_equal(base1[300:], base2[300:])


def test_headroom_scales_the_margin_to_the_target():
    last = np.full(1000, 100.0)
    realised = 100.0 + np.arange(1000) / 100.0      # rises 0 .. 9.99 W
    peak = last + 5.0                                # 5 W margin everywhere
    head, c = headroom_for_coverage(last, peak, realised, 0.99)
    assert head == pytest.approx(9.89, abs=0.01) and c == pytest.approx(9.89 / 5, abs=1e-3)
    assert headroom_for_coverage(last, last, realised)[0] == np.inf   # no margin to scale


def test_class_of():
    assert [class_of(i) for i in ("srv07", "tor-a", "stor-1", "AMD_6140/wl")] == [
        "srv", "tor", "stor", "AMD_6140"]


def _stream(rng, n, bias):
    """Exchangeable origins: forecast peaks and realised peaks with noise, W."""
    level = rng.uniform(100, 400, n)
    raw = level[:, None] + np.array([0.0, 10.0, 20.0])[None] - bias
    realised = level + rng.normal(0, 12, n)
    return raw, realised


def test_split_conformal_covers_exchangeable_data():
    rng = np.random.default_rng(7)
    raw_c, real_c = _stream(rng, 3000, bias=15.0)         # badly miscalibrated forecaster
    raw_t, real_t = _stream(rng, 20000, bias=15.0)
    cal = PeakCalibrator(["srv"], 2, 3, gamma=0.0)
    cal.calibrate(np.zeros(3000, int), raw_c, real_c)
    served = cal.adjust_peaks(np.zeros(20000, int), raw_t)
    cover = (real_t[:, None] <= served).mean(axis=0)
    assert (real_t[:, None] <= raw_t).mean(axis=0)[2] < 0.9
    assert np.all(cover >= np.array([0.5, 0.9, 0.99]) - 0.01)   # >= target up to sampling
    assert np.all(cover <= np.array([0.5, 0.9, 0.99]) + 0.02)
    assert np.all(np.diff(served, axis=1) >= 0)


def test_online_recalibration_pulls_coverage_to_target():
    rng = np.random.default_rng(11)
    raw_c, real_c = _stream(rng, 2000, bias=0.0)           # calibrated on unbiased data
    raw_t, real_t = _stream(rng, 12000, bias=25.0)          # then the forecaster drifts low
    cal = PeakCalibrator(["srv", "tor"], 2, 3, gamma=0.01, buffer=1000)
    comp = np.zeros(12000, int)
    cal.calibrate(np.zeros(2000, int), raw_c, real_c)
    frozen = PeakCalibrator(["srv", "tor"], 2, 3, gamma=0.0)
    frozen.calibrate(np.zeros(2000, int), raw_c, real_c)
    steps = np.arange(12000)
    served = replay(cal, comp, steps, raw_t, real_t)
    still = replay(frozen, comp, steps, raw_t, real_t, online=False)
    late = slice(3000, None)                               # within N = 3000 origins
    cover = (real_t[late, None] <= served[late]).mean(axis=0)
    assert (real_t[late, None] <= still[late]).mean(axis=0)[1] < 0.6
    assert np.allclose(cover, [0.5, 0.9, 0.99], atol=[0.04, 0.02, 0.01])
    assert np.all(cal.offsets_w(1) == 0)                   # the other class has no scores


def test_adjust_keeps_order_and_shifts_each_window_peak():
    cal = PeakCalibrator(["srv"], 1, 3, scale_w=[500.0], gamma=0.0, min_scores=1)
    cal.calibrate([0, 0], [[0.0, 0.0, 0.0]] * 2, [50.0, 50.0])    # offsets 0.1 x 500 W
    p50 = np.array([100.0, 120.0, 90.0, 80.0])
    p90 = np.array([90.0, 130.0, 95.0, 80.0])                        # crosses p50 at step 1
    p99 = np.array([100.0, 150.0, 100.0, 81.0])
    a50, a90, a99 = cal.adjust(0, p50, p90, p99)
    assert np.allclose(a50, p50 + 50) and np.all(a50 <= a90) and np.all(a90 <= a99)
    peaks = forecast_peaks(np.stack([a50, a90, a99], axis=-1)[None], 1, 3)[0]
    raw = forecast_peaks(np.stack([p50, p90, p99], axis=-1)[None], 1, 3)[0]
    assert np.allclose(peaks, cal.adjust_peaks(0, raw))
    b50, _, _ = cal.adjust([0, 0], np.stack([p50, p50]), np.stack([p90, p90]),
                           np.stack([p99, p99]))
    assert np.allclose(b50, p50 + 50)


def test_tracker_observes_matured_origins_from_step_means():
    cal = PeakCalibrator(["srv", "srv"], 2, 3, gamma=0.1, min_scores=1)
    tracker = PeakTracker(cal)
    raw = np.array([[100.0, 110.0, 120.0], [100.0, 110.0, 120.0]])
    tracker.issue(10, raw, raw)
    assert tracker.feed(11, [100.0, 100.0]) == 0
    assert tracker.feed(12, [130.0, 100.0]) == 0
    assert tracker.feed(13, [100.0, 105.0]) == 1                    # window steps 12..13
    st = cal._state["srv"]
    assert st.count == 2
    assert np.allclose(np.sort(st.scores[:2, 0]), [5.0, 30.0])      # 105 - 100, 130 - 100
    assert np.all(cal.offsets_w(0) > 0)


@pytest.mark.parametrize("kwargs,match", [
    ({"classes": []}, "classes"), ({"scale_w": [0.0]}, "scale_w"),
    ({"quantiles": (0.9, 0.5, 0.99)}, "quantiles"), ({"gamma": 2.0}, "gamma")])
def test_calibrator_rejects_bad_arguments(kwargs, match):
    args = {"classes": ["srv"], "first": 1, "last": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        PeakCalibrator(**args)


def test_spread_unit_widens_where_the_forecaster_is_unsure():
    rng = np.random.default_rng(5)
    n = 20000
    sigma = rng.choice([2.0, 20.0], n)                     # calm and volatile origins
    level = rng.uniform(100, 400, n)
    raw = level[:, None] + np.array([0.0, 1.28, 2.33])[None] * sigma[:, None] * 0.5
    realised = level + rng.normal(0, 1, n) * sigma
    half = n // 2
    cals = {u: PeakCalibrator(["srv"], 1, 2, scale_w=[500.0], gamma=0.0, unit=u)
            for u in ("scale", "spread")}
    width = {}
    for unit, cal in cals.items():
        cal.calibrate(np.zeros(half, int), raw[:half], realised[:half])
        served = cal.adjust_peaks(np.zeros(n - half, int), raw[half:])
        cover = (realised[half:, None] <= served).mean(axis=0)
        assert np.allclose(cover, [0.5, 0.9, 0.99], atol=[0.02, 0.01, 0.005])
        width[unit] = np.mean(served[:, 2] - level[half:])
    assert width["spread"] < 0.8 * width["scale"]
    p = np.stack([raw[half:half + 2, k, None] + np.zeros((2, 3)) for k in range(3)])
    a50, a90, a99 = cals["spread"].adjust([0, 0], *p)          # per-step arrays, same peaks
    assert np.allclose(np.stack([a50, a90, a99], -1).max(axis=1),
                       cals["spread"].adjust_peaks([0, 0], raw[half:half + 2]))
