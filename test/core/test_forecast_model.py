"""Forecasting models: quantile LSTM, baselines, registry and metrics on small synthetic windows.

The windows are built here with the WindowSet layout of features.py (x, y, scale_w, last,
component, t_unix, feature_names, spec); the forecasters only read those attributes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rackpower_nodes.core.forecast.base import ForecastInputError, Forecaster, ModelLoadError
from rackpower_nodes.core.forecast.baselines import (
    EwmaForecaster, EwmaParams, LightGbmForecaster, LightGbmParams, PersistenceForecaster,
    PersistenceParams, ewma)
from rackpower_nodes.core.forecast.forecaster import LstmForecaster, LstmParams
from rackpower_nodes.core.forecast.metrics import (
    comparison_report, coverage, metric_rows, pinball_loss, point_metrics)
from rackpower_nodes.core.forecast.features import WindowSet, WindowSpec
from rackpower_nodes.core.forecast.model import QuantileLSTM
from rackpower_nodes.core.forecast.registry import load_model, save_model

FEATURES = ["power", "phase_sin", "phase_cos", "util"]
HISTORY, HORIZON, PERIOD = 16, 8, 48
SPEC = WindowSpec(step_s=2.0, history_steps=HISTORY, horizon_steps=HORIZON, coarse=())




def schedule_windows(steps: int, seed: int, n_components: int = 3) -> WindowSet:
    """Each component alternates 0.3 / 0.8 of max_w on a fixed schedule (period 48 steps,
    per-component phase) plus noise; the schedule phase is a known (calendar-like) feature."""
    rng = np.random.default_rng(seed)
    xs, ys, lasts, comps = [], [], [], []
    t = np.arange(steps)
    for c in range(n_components):
        phase = 2 * np.pi * ((t + 11 * c) % PERIOD) / PERIOD
        power = np.where(np.sin(phase) > 0, 0.8, 0.3) + rng.normal(0, 0.02, steps)
        feats = np.stack([power, np.sin(phase), np.cos(phase),
                          power + rng.normal(0, 0.05, steps)], axis=1).astype(np.float32)
        for i in range(HISTORY, steps - HORIZON):
            xs.append(feats[i - HISTORY:i])
            ys.append(power[i:i + HORIZON])
            lasts.append(power[i - 1])
            comps.append(f"srv{c:02d}")
    n = len(xs)
    return WindowSet(np.stack(xs), np.asarray(ys, np.float32), np.full(n, 400.0),
                   np.asarray(lasts, np.float32), np.asarray(comps), np.arange(n) * 2.0,
                   list(FEATURES), SPEC)


@pytest.fixture(scope="module")
def data() -> tuple[WindowSet, WindowSet, WindowSet]:
    return schedule_windows(1200, 1), schedule_windows(300, 2), schedule_windows(600, 3)


SMALL_LSTM = LstmParams(hidden_size=32, max_epochs=12, patience=3, batch_size=128, lr=5e-3,
                        threads=2, seed=7)


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, Forecaster]:
    train, val, _ = data
    models = [LstmForecaster(SMALL_LSTM), PersistenceForecaster(), EwmaForecaster(),
              LightGbmForecaster(LightGbmParams(n_estimators=40, threads=2))]
    return {m.name: m.fit(train, val) for m in models}


def assert_valid_quantiles(pred: np.ndarray) -> None:
    assert np.isfinite(pred).all()
    assert (pred >= 0).all(), f"negative forecast {pred.min()}"
    assert (np.diff(pred, axis=-1) >= 0).all(), "quantiles cross"


# --- shape and ordering guarantees -------------------------------------------------------------
@pytest.mark.parametrize("scale", [0.0, 1e-3, 1.0, 1e3, 1e6])
@pytest.mark.parametrize("base_scale", [0.0, 1.0, -50.0, 1e5])
def test_network_outputs_ordered_and_non_negative(scale, base_scale):
    torch.manual_seed(0)
    net = QuantileLSTM(5, 6, hidden_size=16, num_layers=2, dropout=0.2).eval()
    x = torch.randn(33, 10, 5) * scale
    out = net(x, torch.randn(33) * base_scale)
    assert out.shape == (33, 6, 3) and out.dtype == torch.float32
    assert_valid_quantiles(out.detach().numpy())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), scale=st.floats(0, 1e7), shift=st.floats(-1e4, 1e4))
def test_every_forecaster_keeps_quantiles_ordered(fitted, seed, scale, shift):
    rng = np.random.default_rng(seed)
    x = (rng.normal(shift, 1.0, (7, HISTORY, len(FEATURES))) * scale).astype(np.float32)
    last = np.abs(rng.normal(0, scale, 7)).astype(np.float32)
    for model in fitted.values():
        pred = model.predict(x, last)
        assert pred.shape == (7, HORIZON, 3)
        assert_valid_quantiles(pred)


def test_predict_rejects_bad_inputs(fitted):
    model = fitted["lstm"]
    x = np.zeros((2, HISTORY, len(FEATURES)), np.float32)
    with pytest.raises(ForecastInputError, match="x shape"):
        model.predict(x[:, :-1], np.zeros(2))
    with pytest.raises(ForecastInputError, match="last shape"):
        model.predict(x, np.zeros(3))
    x[0, 3, 1] = np.nan
    with pytest.raises(ForecastInputError, match="1 non-finite"):
        model.predict(x, np.zeros(2))


# --- baselines ---------------------------------------------------------------------------------
def test_persistence_median_is_last_exactly(data):
    train, _, test = data
    for params in (PersistenceParams(margin=True), PersistenceParams(margin=False)):
        pred = PersistenceForecaster(params).fit(train).predict(test.x, test.last)
        assert np.array_equal(pred[:, :, 0], np.repeat(test.last[:, None], HORIZON, axis=1))
        if not params.margin:
            assert np.array_equal(pred[:, :, 2], pred[:, :, 0])
        else:   # margins from train residuals: p90 covers about 90 % on similar data
            cov = coverage(test.y, pred)
            assert 0.8 < cov[1] < 0.97 and cov[2] > cov[1]


def test_ewma_matches_hand_computation():
    series = np.array([[1.0, 2.0, 4.0]])
    # s1 = 1, s2 = 0.5*2 + 0.5*1 = 1.5, s3 = 0.5*4 + 0.5*1.5 = 2.75
    assert ewma(series, 0.5) == pytest.approx([2.75])
    assert ewma(series, 1.0) == pytest.approx([4.0])


def test_lightgbm_anchor_steps_and_interpolation(fitted):
    model = fitted["lightgbm"]
    assert model.anchors == [1, 3, 6, 8]
    assert sorted(model.boosters) == sorted((q, a) for q in range(3) for a in [1, 3, 6, 8])


# --- the LSTM learns ----------------------------------------------------------------------------
def test_lstm_beats_persistence_on_a_schedule(fitted, data):
    _, _, test = data
    lstm = fitted["lstm"].predict(test.x, test.last)
    pers = fitted["persistence"].predict(test.x, test.last)
    mae_lstm = point_metrics(test.y[:, -1], lstm[:, -1, 0])["mae"]
    mae_pers = point_metrics(test.y[:, -1], pers[:, -1, 0])["mae"]
    assert mae_lstm < 0.5 * mae_pers, (mae_lstm, mae_pers)
    assert fitted["lstm"].training["epochs"] >= 2


def test_fit_is_deterministic_for_a_seed(data):
    train, val, test = data
    params = LstmParams(hidden_size=16, max_epochs=2, batch_size=256, threads=2, seed=3)
    a = LstmForecaster(params).fit(train, val).predict(test.x, test.last)
    b = LstmForecaster(params).fit(train, val).predict(test.x, test.last)
    other = LstmParams(**{**params.__dict__, "seed": 4})
    c = LstmForecaster(other).fit(train, val).predict(test.x, test.last)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# --- storage -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lstm", "persistence", "ewma", "lightgbm"])
def test_save_load_round_trip_is_exact(fitted, data, tmp_path, name):
    _, _, test = data
    model = fitted[name]
    path = save_model(model, tmp_path, metrics={"val_mae_w": np.float32(3.5)},
                      data_info={"source": "synthetic"})
    assert path.name == f"{name}-{model.version}"
    loaded = load_model(path, expected_features=FEATURES)
    assert type(loaded) is type(model)
    assert np.array_equal(loaded.predict(test.x, test.last), model.predict(test.x, test.last))
    doc = json.loads((path / "model.json").read_text())
    assert doc["metrics"] == {"val_mae_w": 3.5} and doc["feature_names"] == FEATURES
    assert doc["window_spec"]["horizon_steps"] == HORIZON
    if name == "lstm":
        assert len(doc["state"]["scaler"]["mean"]) == len(FEATURES)
        assert all(torch.equal(loaded.module.state_dict()[k], v)
                   for k, v in model.module.state_dict().items())


def test_lstm_reads_a_feature_subset(data, tmp_path):
    train, val, test = data
    params = LstmParams(hidden_size=8, max_epochs=1, features=("phase_cos", "power"))
    model = LstmForecaster(params).fit(train, val)
    assert model.module.n_features == 2 and model.columns == [2, 0]
    loaded = load_model(save_model(model, tmp_path))
    assert loaded.params.features == ("phase_cos", "power")
    assert np.array_equal(loaded.predict(test.x, test.last), model.predict(test.x, test.last))
    with pytest.raises(ForecastInputError, match=r"\['watts'\] are not among"):
        LstmForecaster(LstmParams(features=("watts",))).fit(train, val)


def test_lstm_calibration_covers_its_levels_on_validation(fitted, data):
    _, val, _ = data
    model = fitted["lstm"]
    assert model.calibration.shape == (HORIZON, 3) and not model.calibration[:, 0].any()
    assert model.training["calibrated"] is True
    cov = (val.y[..., None] <= model.predict(val.x, val.last)).mean(axis=0)   # (horizon, Q)
    slack = 3.0 / len(val.y)                        # conformal rank rounding and ties
    assert (cov[:, 1] >= 0.9).all() and (cov[:, 1] <= 0.9 + slack).all(), cov[:, 1]
    assert (cov[:, 2] >= 0.99).all() and (cov[:, 2] <= 0.99 + slack).all(), cov[:, 2]


def test_lstm_without_calibration_or_validation_keeps_raw_quantiles(data):
    train, val, test = data
    params = LstmParams(hidden_size=8, max_epochs=1, seed=1, calibrate=False)
    raw = LstmForecaster(params).fit(train, val)
    assert raw.calibration.size == 0 and raw.training["calibrated"] is False
    no_val = LstmForecaster(LstmParams(hidden_size=8, max_epochs=1, seed=1)).fit(train)
    assert no_val.calibration.size == 0
    with torch.inference_mode():
        direct = raw.module(raw._scale(test.x), torch.from_numpy(test.last)).numpy()
    assert np.array_equal(raw.predict(test.x, test.last), direct)


def test_calibration_in_model_json(lstm_dir, fitted, data):
    _, _, test = data
    doc = json.loads((lstm_dir / "model.json").read_text())
    state = doc["state"]
    _edit_json(lstm_dir, state={**state, "calibration": [[0.0, 0.1, 0.2]] * (HORIZON - 1)})
    with pytest.raises(ModelLoadError, match=r"calibration has shape \(7, 3\), expected \(8, 3\)"):
        load_model(lstm_dir)
    # a model saved before calibration existed has no such key and predicts the raw quantiles
    _edit_json(lstm_dir, state={k: v for k, v in state.items() if k != "calibration"})
    old = load_model(lstm_dir)
    assert old.calibration.size == 0
    model = fitted["lstm"]
    with torch.inference_mode():
        direct = model.module(model._scale(test.x), torch.from_numpy(test.last)).numpy()
    assert np.array_equal(old.predict(test.x, test.last), direct)


def test_saving_twice_makes_a_new_version(fitted, tmp_path):
    model = fitted["persistence"]
    first = save_model(model, tmp_path)
    second = save_model(model, tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert load_model(second).version == second.name.removeprefix("persistence-")


@pytest.fixture
def lstm_dir(fitted, tmp_path) -> Path:
    return save_model(fitted["lstm"], tmp_path)


def _edit_json(path: Path, **changes) -> None:
    doc = json.loads((path / "model.json").read_text())
    for key, value in changes.items():
        doc[key] = value
    (path / "model.json").write_text(json.dumps(doc))


def test_missing_directory_and_model_json(lstm_dir, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    (lstm_dir / "model.json").unlink()
    with pytest.raises(ModelLoadError, match=r"model\.json.*missing") as err:
        load_model(lstm_dir)
    assert err.value.path == lstm_dir / "model.json"


def test_bad_json_names_the_file_and_position(lstm_dir):
    (lstm_dir / "model.json").write_text('{"format_version": 1,\n "class": ')
    with pytest.raises(ModelLoadError, match=r"model\.json: invalid JSON at line 2"):
        load_model(lstm_dir)


def test_unknown_format_version(lstm_dir):
    _edit_json(lstm_dir, format_version=99)
    with pytest.raises(ModelLoadError, match=r"model\.json: unknown format_version 99"):
        load_model(lstm_dir)


def test_feature_mismatch(lstm_dir):
    with pytest.raises(ModelLoadError, match=r"model\.json: feature list mismatch.*\['util'\]"):
        load_model(lstm_dir, expected_features=FEATURES[:3] + ["cpu_util"])
    with pytest.raises(ModelLoadError, match="feature order"):
        load_model(lstm_dir, expected_features=FEATURES[::-1])


def test_truncated_weights(lstm_dir):
    weights = lstm_dir / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match=r"weights\.pt: checksum mismatch"):
        load_model(lstm_dir)
    # with a matching checksum the corruption reaches torch.load, which must be reported too
    import hashlib
    doc = json.loads((lstm_dir / "model.json").read_text())
    _edit_json(lstm_dir, files={"weights.pt": hashlib.sha256(weights.read_bytes()).hexdigest()})
    with pytest.raises(ModelLoadError, match=r"weights\.pt: unreadable weights"):
        load_model(lstm_dir)
    assert doc["files"]["weights.pt"] != "x"


def test_weights_of_another_shape(lstm_dir):
    doc = json.loads((lstm_dir / "model.json").read_text())
    _edit_json(lstm_dir, hyperparameters={**doc["hyperparameters"], "hidden_size": 48})
    with pytest.raises(ModelLoadError, match=r"weights\.pt: weights do not fit the model"):
        load_model(lstm_dir)


def test_corrupt_lightgbm_file(fitted, tmp_path):
    path = save_model(fitted["lightgbm"], tmp_path)
    (path / "lgbm_q90_s3.txt").write_text("tree\nnot a model\n")
    with pytest.raises(ModelLoadError, match=r"lgbm_q90_s3\.txt: checksum mismatch"):
        load_model(path)
    (path / "lgbm_q90_s3.txt").unlink()
    with pytest.raises(ModelLoadError, match=r"lgbm_q90_s3\.txt: weight file is missing"):
        load_model(path)


def test_load_checks_the_class(lstm_dir):
    with pytest.raises(ModelLoadError, match="not a PersistenceForecaster"):
        load_model(lstm_dir, kind=PersistenceForecaster)
    assert isinstance(load_model(lstm_dir, kind=LstmForecaster), LstmForecaster)


def test_bad_hyperparameter_is_named():
    with pytest.raises(ValueError, match=r"LstmParams\.dropout = 1\.5"):
        LstmParams(dropout=1.5)
    with pytest.raises(ValueError, match=r"EwmaParams\.alpha = 0"):
        EwmaParams(alpha=0)


# --- metrics -----------------------------------------------------------------------------------
def test_pinball_loss_by_hand():
    y = np.array([1.0, 3.0])
    pred = np.array([[2.0, 2.0], [2.0, 4.0]])      # (n=2, Q=2)
    # q=0.5: |1-2|*0.5 = 0.5, |3-2|*0.5 = 0.5 -> 0.5
    # q=0.9: y<p: (1-0.9)*1 = 0.1 ; y<p: 0.1*1 = 0.1 -> 0.1
    assert pinball_loss(y, pred, [0.5, 0.9]) == pytest.approx([0.5, 0.1])
    # under-forecast at q=0.9: y=3, p=2 -> 0.9
    assert pinball_loss(np.array([3.0]), np.array([[2.0]]), [0.9]) == pytest.approx([0.9])


def test_coverage_and_point_metrics_by_hand():
    y = np.array([[1.0, 2.0], [3.0, 0.0]])
    pred = np.stack([y - 1, y, y + 1], axis=-1)
    assert coverage(y, pred) == pytest.approx([0.0, 1.0, 1.0])
    m = point_metrics(np.array([2.0, 4.0, 0.0]), np.array([1.0, 4.0, 1.0]))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert m["mape"] == pytest.approx(25.0)          # the zero actual is left out
    assert m["p95_ae"] == pytest.approx(1.0)


def test_metric_rows_per_step_and_component():
    y = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    pred = np.repeat(y[..., None], 3, axis=-1) + np.array([0.0, 1.0, 2.0])
    pred[2, 1, 0] = 4.0                                 # one under-forecast by 2: step 2, b
    pred[2, 1, 1:] = 9.0
    rows = metric_rows(y, pred, np.array(["a", "a", "b"]), [0.5, 0.9, 0.99], step_s=2.0)
    by = {(r["scope"], r["key"]): r for r in rows}
    assert by[("step", "1")]["mae"] == 0 and by[("step", "1")]["lead_s"] == 2.0
    assert by[("step", "2")]["mae"] == pytest.approx(2 / 3)
    assert by[("component", "b")]["mae"] == pytest.approx(1.0)
    assert by[("component", "a")]["cov_p50"] == 1.0
    assert by[("all", "all")]["cov_p50"] == pytest.approx(5 / 6)


def test_comparison_report_ratios_by_hand():
    y = np.array([[10.0, 12.0], [20.0, 20.0], [30.0, 33.0]])
    last = np.array([9.0, 22.0, 30.0])      # persistence errors: step 2: 3, 2, 3 -> MAE 8/3
    perfect = np.repeat(y[..., None], 3, axis=-1)
    half = perfect.copy()
    half[:, 1, 0] = y[:, 1] - np.array([1.5, 1.0, 1.5])   # half the persistence error
    text = comparison_report(y, {"perfect": perfect, "half": half}, last,
                             np.array(["s1/a", "s1/b", "s2/a"]), [2], step_s=2.0)
    assert "| half | 2 | 4 | 1.333 |" in text and text.count("| 0.5 |") >= 2
    assert "| s2 | half | 1.5 | 0.5 | 0.5 |" in text
    assert "- perfect: mean over servers of MAE / persistence MAE = 0.000" in text
    assert "- half: mean over servers of MAE / persistence MAE = 0.500" in text
