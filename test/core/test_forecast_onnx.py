"""The LSTM served without torch: weights.onnx beside weights.pt, load_model's runtime, the
ONNX forecaster's predictions against torch's, its errors, and the predictor's
inference.runtime. On the simulated rack's windows (the features the predictor builds)."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rackpower_nodes.core.forecast.base import ModelLoadError
from rackpower_nodes.core.forecast.baselines import PersistenceForecaster
from rackpower_nodes.core.forecast.challengers import ServedForecaster, ServedParams
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows, split_by_time
from rackpower_nodes.core.forecast.forecaster import LstmForecaster, LstmParams
from rackpower_nodes.core.forecast.onnx_lstm import OnnxLstmForecaster
from rackpower_nodes.core.forecast.registry import load_model, save_model
from rackpower_nodes.core.forecast.serving import ForecastService
from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.predictor_config import predictor_config_from_params
from rackpower_nodes.sim.dataset import from_sim
from rackpower_nodes.sim.rack_sim import generate

SPEC = WindowSpec(step_s=0.1, history_steps=10, horizon_steps=10, coarse=(5,))
TINY = LstmParams(hidden_size=8, max_epochs=2, samples_per_epoch=2000, threads=1, seed=2)
REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5                    # normalised power: float32 rounding of two implementations


@pytest.fixture(scope="module")
def series():
    return from_sim(generate(0.05, seed=3), step_s=SPEC.step_s)


@pytest.fixture(scope="module")
def windows(series):
    train, val = split_by_time(build_windows(series, SPEC), 0.8)
    return train, val


@pytest.fixture(scope="module")
def lstm_dir(windows, tmp_path_factory) -> Path:
    train, val = windows
    model = LstmForecaster(TINY).fit(train, val)
    assert model.calibration.size and np.abs(model.calibration).max() > 0   # calibrated
    return save_model(model, tmp_path_factory.mktemp("models"))


@pytest.fixture
def copy_dir(lstm_dir, tmp_path) -> Path:
    return Path(shutil.copytree(lstm_dir, tmp_path / lstm_dir.name))


def _edit_json(path: Path, edit) -> None:
    doc = json.loads((path / "model.json").read_text())
    edit(doc)
    (path / "model.json").write_text(json.dumps(doc))


def _without_onnx(path: Path) -> Path:
    """``path`` as a model saved before weights.onnx existed."""
    (path / "weights.onnx").unlink()
    _edit_json(path, lambda doc: doc["files"].pop("weights.onnx"))
    return path


def test_the_onnx_export_is_saved_and_checksummed(lstm_dir):
    doc = json.loads((lstm_dir / "model.json").read_text())
    assert set(doc["files"]) == {"weights.pt", "weights.onnx"}
    digest = hashlib.sha256((lstm_dir / "weights.onnx").read_bytes()).hexdigest()
    assert doc["files"]["weights.onnx"] == digest


def test_onnx_predicts_what_torch_predicts(lstm_dir, windows):
    _, val = windows
    torch_model = load_model(lstm_dir, runtime="torch")
    onnx_model = load_model(lstm_dir, runtime="onnx")
    assert type(torch_model) is LstmForecaster and type(onnx_model) is OnnxLstmForecaster
    assert (onnx_model.name, onnx_model.version) == (torch_model.name, torch_model.version)
    assert onnx_model.feature_names == torch_model.feature_names
    assert onnx_model.spec == torch_model.spec
    np.testing.assert_array_equal(onnx_model.calibration, torch_model.calibration)
    want = torch_model.predict(val.x, val.last)
    got = onnx_model.predict(val.x, val.last)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    assert (got >= 0).all() and (np.diff(got, axis=2) >= 0).all()
    # the batch is dynamic: one window, odd chunks, none
    np.testing.assert_allclose(onnx_model.predict(val.x[:1], val.last[:1]), want[:1],
                               rtol=0, atol=TOL)
    np.testing.assert_allclose(onnx_model.predict(val.x[:50], val.last[:50], batch_size=7),
                               want[:50], rtol=0, atol=TOL)
    assert onnx_model.predict(val.x[:0], val.last[:0]).shape == (0, SPEC.horizon_steps, 3)


def test_auto_serves_the_export_where_there_is_one(lstm_dir, copy_dir):
    assert type(load_model(lstm_dir, runtime="auto")) is OnnxLstmForecaster
    old = _without_onnx(copy_dir)
    assert type(load_model(old, runtime="auto")) is LstmForecaster
    with pytest.raises(ModelLoadError, match=r"weights\.onnx: runtime 'onnx' needs") as err:
        load_model(old, runtime="onnx")
    assert err.value.path == old / "weights.onnx"
    with pytest.raises(ValueError, match="runtime = 'gpu'"):
        load_model(lstm_dir, runtime="gpu")


def test_other_forecasters_ignore_the_runtime(windows, tmp_path):
    path = save_model(PersistenceForecaster().fit(windows[0]), tmp_path)
    assert type(load_model(path, runtime="onnx")) is PersistenceForecaster


def test_a_corrupt_export_is_refused_naming_it(copy_dir):
    onnx_file = copy_dir / "weights.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:300])
    with pytest.raises(ModelLoadError, match=r"weights\.onnx: checksum mismatch") as err:
        load_model(copy_dir, runtime="onnx")
    assert err.value.path == onnx_file
    # with a matching checksum the truncation reaches onnxruntime, which must be reported too
    digest = hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    _edit_json(copy_dir, lambda doc: doc["files"].update({"weights.onnx": digest}))
    with pytest.raises(ModelLoadError, match=r"weights\.onnx: unreadable ONNX model"):
        load_model(copy_dir, runtime="onnx")


def test_an_export_of_another_shape_is_refused(copy_dir):
    def shorter_horizon(doc):
        doc["window_spec"]["horizon_steps"] -= 1
        doc["state"].pop("calibration")

    _edit_json(copy_dir, shorter_horizon)
    with pytest.raises(ModelLoadError, match=r"weights\.onnx: q is .* expected tensor\(float\) "
                                             r"\['batch', 9, 3\]"):
        load_model(copy_dir, runtime="onnx")


@pytest.mark.parametrize("threads", [1, 2])
def test_the_session_runs_on_the_threads_asked(lstm_dir, threads):
    model = load_model(lstm_dir, runtime="onnx", threads=threads)
    opts = model.session.get_session_options()
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (threads, threads)


def test_serving_onnx_never_imports_torch(lstm_dir, windows, tmp_path):
    _, val = windows
    np.savez(tmp_path / "in.npz", x=val.x[:64], last=val.last[:64])
    script = (
        "import sys, numpy as np\n"
        "from rackpower_nodes.core.forecast.registry import load_model\n"
        f"model = load_model({str(lstm_dir)!r}, runtime='onnx')\n"
        f"data = np.load({str(tmp_path / 'in.npz')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, model.predict(data['x'], data['last']))\n"
        "print(type(model).__name__, 'torch' in sys.modules, 'onnxruntime' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["OnnxLstmForecaster", "False", "True"]
    want = load_model(lstm_dir).predict(val.x[:64], val.last[:64])
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want, rtol=0, atol=TOL)


def test_a_served_forecasters_lstm_member_follows_the_runtime(windows, tmp_path):
    train, val = windows
    served = ServedForecaster(ServedParams(min_errors=5, window=20),
                              {"lstm": LstmForecaster(TINY)}).fit(train, val)
    path = save_model(served, tmp_path)
    assert "member_lstm/weights.onnx" in json.loads((path / "model.json").read_text())["files"]
    by_torch = load_model(path, runtime="torch")
    by_onnx = load_model(path, runtime="auto", threads=2)
    assert type(by_torch.members["lstm"]) is LstmForecaster
    member = by_onnx.members["lstm"]
    assert type(member) is OnnxLstmForecaster and member.threads == 2
    np.testing.assert_allclose(member.predict(val.x, val.last),
                               by_torch.members["lstm"].predict(val.x, val.last),
                               rtol=0, atol=TOL)


def test_the_service_loads_the_export(lstm_dir, series):
    service = ForecastService([s.component for s in series], [s.idle_w for s in series],
                              [s.max_w for s in series], stale_after_s=0.5, spec=SPEC)
    model = service.load(str(lstm_dir), runtime="onnx", threads=1)
    assert service.model is model and type(model) is OnnxLstmForecaster
    assert type(service.load(str(lstm_dir))) is LstmForecaster      # the default: torch


BASE = {"components.names": ["srv01"], "components.idle_w": [50.0],
        "components.max_w": [300.0]}


def test_the_predictor_reads_inference_runtime():
    assert predictor_config_from_params(BASE).inference_runtime == "auto"
    for runtime in ("onnx", "torch", "auto"):
        cfg = predictor_config_from_params({**BASE, "inference.runtime": runtime})
        assert cfg.inference_runtime == runtime
    with pytest.raises(ConfigError, match=r"inference\.runtime = 'gpu': expected one of "
                                          r"auto, onnx, torch"):
        predictor_config_from_params({**BASE, "inference.runtime": "gpu"})
