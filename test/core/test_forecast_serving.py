"""The predictor's serving core: fallback, atomic model swaps, broken models, units."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rackpower_nodes.core.forecast.base import ModelLoadError
from rackpower_nodes.core.forecast.baselines import EwmaForecaster, PersistenceForecaster
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows
from rackpower_nodes.core.forecast.online import OnlineWindows
from rackpower_nodes.core.forecast.registry import save_model
from rackpower_nodes.core.forecast.serving import ForecastService
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sim.rack_sim import generate

SPEC = WindowSpec(step_s=0.1, history_steps=10, horizon_steps=10, coarse=(5,))


@pytest.fixture(scope="module")
def sim_series():
    return from_sim(generate(0.05, seed=3), step_s=SPEC.step_s)


@pytest.fixture(scope="module")
def models(sim_series, tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    ws = build_windows(sim_series, SPEC)
    return {"persistence": save_model(PersistenceForecaster().fit(ws), root),
            "ewma": save_model(EwmaForecaster().fit(ws), root)}


def _service(series):
    return ForecastService([s.component for s in series], [s.idle_w for s in series],
                           [s.max_w for s in series], stale_after_s=0.5, spec=SPEC)


def _feed(service, series, t_end):
    """Push every component's steps up to t_end as one-sample blocks per step."""
    for s in series:
        steps = s.t_unix < t_end
        service._windows.push_power_block(float(s.t_unix[0]), s.step_s, [s.component],
                                          s.power_w[steps][None, :])


def test_no_model_gives_the_wide_persistence_fallback(sim_series):
    service = _service(sim_series)
    t_end = sim_series[0].t_unix[40]
    _feed(service, sim_series, t_end)
    fc = service.forecast(float(t_end))
    assert fc.fallback.all() and fc.model_name == "persistence"
    assert "no model" in fc.reason
    last = fc.last_w
    assert np.isfinite(last).all()
    np.testing.assert_allclose(fc.p50_w, np.repeat(last[:, None], SPEC.horizon_steps, 1),
                               rtol=1e-6)
    margin = np.maximum(0.25 * last, 20.0)
    np.testing.assert_allclose(fc.p90_w[:, 0], last + margin, rtol=1e-5)
    np.testing.assert_allclose(fc.p99_w[:, 0], last + 2 * margin, rtol=1e-5)
    assert service.served_summary() == {}          # no served forecaster, nothing to show


def test_model_serves_ready_components_and_falls_back_for_stale_ones(sim_series, models):
    service = _service(sim_series)
    service.load(str(models["persistence"]))
    t_end = float(sim_series[0].t_unix[60])
    _feed(service, sim_series, t_end)
    fc = service.forecast(t_end)
    assert not fc.fallback.any(), fc.reason
    assert fc.model_name == "persistence" and fc.reason == ""
    assert (fc.p50_w <= fc.p90_w).all() and (fc.p90_w <= fc.p99_w).all()
    assert (fc.p50_w >= 0).all()
    np.testing.assert_allclose(fc.p50_w[:, 0], fc.last_w, rtol=1e-5)   # p50 of persistence
    stale = service.forecast(t_end + 5.0)                                # no new input for 5 s
    assert stale.fallback.all() and "stale" in stale.reason
    _feed(service, sim_series, float(sim_series[0].t_unix[-1]))          # inputs resume
    back = service.forecast(float(sim_series[0].t_unix[-1]))
    assert not back.fallback.any()


def test_swap_is_atomic_and_a_broken_model_keeps_the_one_in_service(sim_series, models,
                                                                    tmp_path):
    service = _service(sim_series)
    service.load(str(models["persistence"]))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match="model.json"):
        service.load(str(broken))
    assert service.model.name == "persistence"
    service.load(str(models["ewma"]))
    assert service.model.name == "ewma"
    with pytest.raises(ModelLoadError, match="does not exist"):
        service.load(str(tmp_path / "missing"))
    assert service.model.name == "ewma"


def test_corrupt_weights_or_metadata_are_named(models, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(models["ewma"], copy)
    doc = json.loads((copy / "model.json").read_text())
    doc["format_version"] = 999
    (copy / "model.json").write_text(json.dumps(doc))
    service = ForecastService(["a"], [10.0], [100.0], spec=SPEC)
    with pytest.raises(ModelLoadError, match="format_version"):
        service.load(str(copy))
    fc = service.forecast(0.0)
    assert fc.fallback.all() and not math.isnan(float(fc.p99_w.max()))
    np.testing.assert_allclose(fc.p50_w, 100.0)       # never measured: its max power


def test_a_model_saved_with_the_old_schedule_features_is_refused(models, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(models["ewma"], old)
    doc = json.loads((old / "model.json").read_text())
    names = doc["feature_names"]
    at = names.index("ev_run_util")
    doc["feature_names"] = names[:at] + ["job_active", "job_util", "job_next_in_h",
                                         "job_next_util"] + names[at + 6:]
    (old / "model.json").write_text(json.dumps(doc))
    service = ForecastService(["a"], [10.0], [100.0], spec=SPEC)
    with pytest.raises(ModelLoadError, match="features are not the ones"):
        service.load(str(old))
    assert service.model is None


# -- online: the served forecaster's choice and the peak calibration --------------------------

def _fit_served(series, tmp_path, params):
    from rackpower_nodes.core.forecast.baselines import EwmaParams, PersistenceParams
    from rackpower_nodes.core.forecast.challengers import ServedForecaster

    ws = build_windows(series, SPEC)
    train, val = ws.subset(np.arange(len(ws)) < len(ws) // 2), ws.subset(
        np.arange(len(ws)) >= len(ws) // 2)
    members = {"persistence": PersistenceForecaster(PersistenceParams(margin=False)).fit(ws),
               "ewma": EwmaForecaster(EwmaParams(alpha=0.2)).fit(ws)}
    return save_model(ServedForecaster(params, members).fit(train, val), tmp_path)


def _run(service, power_w: np.ndarray, t0: float, every=None):
    """One sample per 0.1 s step at the step's middle, a forecast at each step's end; yields
    (step, forecast)."""
    for k, value in enumerate(power_w):
        service.push_power_block(t0 + k * 0.1 + 0.05, 0.1, ["srv01"], [[value]])
        fc = service.forecast(t0 + (k + 1) * 0.1)
        if every is None or k % every == 0:
            yield k, fc


def test_the_service_feeds_the_served_forecaster_what_matured(sim_series, tmp_path):
    """Served through the service, a ServedForecaster gives what the same model gives when
    its live calls get the same windows and every measured step; its errors mature."""
    from rackpower_nodes.core.forecast.adaptive import CalibrationSettings
    from rackpower_nodes.core.forecast.challengers import ServedParams
    from rackpower_nodes.core.forecast.peak import class_of
    from rackpower_nodes.core.forecast.registry import load_model

    series = [s for s in sim_series if s.component == "srv01"]
    path = _fit_served(series, tmp_path, ServedParams(window=20, min_errors=5))
    idle, top = series[0].idle_w, series[0].max_w
    service = ForecastService(["srv01"], [idle], [top], stale_after_s=0.5, spec=SPEC,
                              calibration=CalibrationSettings(enabled=False))
    service.load(str(path))
    assert service.model.name == "served"
    twin, windows = load_model(path), OnlineWindows(SPEC, ["srv01"], [idle], [top])
    t0 = 1_700_000_000.0
    power = np.where(np.arange(400) % 100 < 50, 80.0, 200.0) + np.arange(400) % 7
    fed = None
    for k, fc in _run(service, power, t0):
        windows.push_power_block(t0 + k * 0.1 + 0.05, 0.1, ["srv01"], [[power[k]]])
        x, last, ready, _ = windows.window(t0 + (k + 1) * 0.1)
        steps, means = windows.closed_steps(fed, 100)
        for step, row in zip(steps, means, strict=True):
            twin.observe(step * 0.1, ["srv01"], row, [class_of("srv01")])
            fed = int(step)
        if not ready[0]:
            assert fc.fallback[0]
            continue
        want = twin.forecast(windows.last_steps()[0] * 0.1, ["srv01"], x, last,
                             [class_of("srv01")]) * np.float32(top)
        np.testing.assert_allclose(fc.p50_w[0], want[0, :, 0], rtol=1e-6, err_msg=f"{k}")
        np.testing.assert_allclose(fc.p99_w[0], want[0, :, 2], rtol=1e-6, err_msg=f"{k}")
    assert max(_error_counts(service.online_state()["served"])) >= 20   # errors matured
    summary = service.served_summary()[class_of("srv01")]
    assert summary == twin.summary()[class_of("srv01")] and summary["matured"] >= 20
    assert 0 < summary["error_ratio"] <= summary["bound"]


def _error_counts(doc) -> list[int]:
    """Every count under an "errors" key of the served forecaster's diagnostics."""
    if not isinstance(doc, dict):
        return []
    out = []
    for key, value in doc.items():
        if key == "errors":
            out += [int(n) for v in value.values() for n in np.ravel(v)]
        else:
            out += _error_counts(value)
    return out


def test_published_quantiles_are_calibrated_on_the_actuation_window(sim_series, tmp_path):
    from rackpower_nodes.core.forecast.adaptive import CalibrationSettings
    from rackpower_nodes.core.forecast.baselines import PersistenceParams
    from rackpower_nodes.core.forecast.peak import window_steps

    rng = np.random.default_rng(11)
    power = 150.0 + rng.normal(0.0, 10.0, 2400)
    ws = build_windows([s for s in sim_series if s.component == "srv01"], SPEC)
    path = save_model(PersistenceForecaster(PersistenceParams(margin=False)).fit(ws), tmp_path)
    first, last = window_steps(0.2, 0.3, SPEC.step_s)
    coverage, offsets = {}, {}
    for unit, enabled in (("scale", True), ("spread", True), ("scale", False)):
        service = ForecastService(["srv01"], [60.0], [300.0], stale_after_s=0.5, spec=SPEC,
                                  calibration=CalibrationSettings(enabled, 0.2, 0.3, unit))
        service.load(str(path))
        hits, origins = np.zeros(3), 0
        for k, fc in _run(service, power, 1_700_000_000.0):
            q = np.stack([fc.p50_w[0], fc.p90_w[0], fc.p99_w[0]])
            assert (q[0] <= q[1]).all() and (q[1] <= q[2]).all() and (q >= 0).all()
            origin = k - 1                                        # the newest closed step
            if k < 1200 or origin + last >= len(power):
                continue
            realised = power[origin + first:origin + last + 1].max()
            hits += realised <= q[:, first - 1:last].max(axis=1)
            origins += 1
        key = unit if enabled else "off"
        coverage[key] = hits / origins
        offsets[key] = service.online_state().get("offsets_w")
    for unit in ("scale", "spread"):
        assert 0.8 <= coverage[unit][1] <= 0.97, coverage
        assert coverage[unit][2] >= 0.95, coverage
        assert 0 < offsets[unit]["srv01"][1] < offsets[unit]["srv01"][2], offsets
    assert coverage["off"][1] < 0.3, coverage                     # raw: the last value only
    assert offsets["off"] is None
