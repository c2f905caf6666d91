"""Versioned model directories: one forecaster, its scaling, weights and validation metrics.

Layout of ``root/<name>-<version>/``::

    model.json      format_version, class, name, version, created time, hyperparameters,
                    feature_names, window_spec, quantiles, state (scaler / margins / training
                    summary), metrics, data_info, files {name: sha256}
    weights.pt      LSTM: torch.save of the module's state_dict (training, serving with torch)
    weights.onnx    LSTM: the module's ONNX export, dynamic batch (serving without torch,
                    onnx_lstm.py; absent from models saved before it existed)
    member_<name>/  ServedForecaster: each member's weight files (challengers/served.py)
    lgbm_*.txt      LightGBM: one text model per quantile and anchor step

A directory is written under a temporary name and renamed into place, so a reader never sees
half a model. :func:`load_model` raises :class:`ModelLoadError` naming the file and the problem
for a missing folder or file, bad JSON, an unknown format version or class, a feature list other
than the expected one, a weight file whose checksum, content or shapes are wrong.

An LSTM directory is served by the torch network (weights.pt, :class:`~.forecaster.
LstmForecaster`) or, without importing torch, by its ONNX export (weights.onnx,
:class:`~.onnx_lstm.OnnxLstmForecaster`): ``load_model``'s ``runtime`` picks one (also for the
LSTM member of a served forecaster); the other classes ignore it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rackpower_nodes.core.forecast.base import Forecaster, ModelLoadError
from rackpower_nodes.core.forecast.baselines import (
    EwmaForecaster, LightGbmForecaster, PersistenceForecaster)
from rackpower_nodes.core.forecast.challengers import ServedForecaster
from rackpower_nodes.core.forecast.lazy_classes import ONNX_LSTM, ForecasterClasses, import_class
from rackpower_nodes.core.forecast.lstm_base import ONNX_FILE

__all__ = ["FORMAT_VERSION", "MODEL_FILE", "RUNTIMES", "ModelLoadError", "load_model",
           "save_model", "write_model_dir"]

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
# LstmForecaster (torch) is imported when a model directory names it
CLASSES = ForecasterClasses(PersistenceForecaster, EwmaForecaster, LightGbmForecaster,
                            ServedForecaster)
# how an LSTM is served: its torch network, its ONNX export, or the export where it has one
RUNTIMES = ("torch", "onnx", "auto")
_REQUIRED = ("class", "version", "hyperparameters", "feature_names", "window_spec", "state",
             "files")


def save_model(forecaster: Forecaster, root: str | Path, metrics: Mapping | None = None,
               data_info: Mapping | None = None) -> Path:
    """Write ``forecaster`` to a new ``root/<name>-<version>/`` and return that path.

    When the folder exists, the version gets a suffix ``.1``, ``.2``, ... (also set on the
    forecaster). Nothing is ever overwritten.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base, k = forecaster.version, 0
    while (root / f"{forecaster.name}-{forecaster.version}").exists():
        k += 1
        forecaster.version = f"{base}.{k}"
    final = root / f"{forecaster.name}-{forecaster.version}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_model_dir(forecaster, tmp, metrics, data_info)
    os.rename(tmp, final)
    return final


def write_model_dir(forecaster: Forecaster, directory: Path, metrics: Mapping | None = None,
                    data_info: Mapping | None = None) -> Path:
    """Write model.json and the weight files into ``directory`` (created if needed)."""
    if not forecaster.feature_names:
        raise ValueError(f"{forecaster.name}: cannot save a forecaster that was never fitted")
    directory.mkdir(parents=True, exist_ok=True)
    files = forecaster.save_weights(directory)
    now = time.time()
    doc = {
        "format_version": FORMAT_VERSION, "class": type(forecaster).__name__,
        "name": forecaster.name, "version": forecaster.version, "created_unix": now,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "hyperparameters": forecaster.hyperparameters(),
        "feature_names": forecaster.feature_names, "window_spec": forecaster.spec,
        "quantiles": list(forecaster.quantiles), "state": forecaster.state(),
        "metrics": dict(metrics or {}), "data_info": dict(data_info or {}),
        "files": {name: _sha256(directory / name) for name in files},
    }
    text = json.dumps(_jsonable(doc), indent=1, allow_nan=False)
    (directory / MODEL_FILE).write_text(text + "\n", encoding="utf-8")
    return directory


def load_model(path: str | Path, expected_features: list[str] | None = None,
               kind: type[Forecaster] | None = None, runtime: str = "torch",
               threads: int = 1) -> Forecaster:
    """Load the forecaster stored in a model directory.

    Args:
        path: the ``<name>-<version>`` folder (or its model.json).
        expected_features: when given, the stored feature list must equal it (same order).
        kind: when given, the stored forecaster must be one of this class.
        runtime: how an LSTM (also a served forecaster's LSTM member) is served: "torch"
            (an ``LstmForecaster``, weights.pt), "onnx" (an ``OnnxLstmForecaster`` on
            weights.onnx, torch not imported) or "auto" (onnx where model.json lists a
            weights.onnx, else torch). Other classes ignore it.
        threads: onnxruntime threads of an ONNX session (torch's are set by the caller on
            the thread that predicts).

    Raises:
        ModelLoadError: naming the file and what is wrong with it (under "onnx": a
            weights.onnx the directory lacks, e.g. a model saved before it existed).
        ValueError: ``runtime`` not one of RUNTIMES.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime = {runtime!r}, expected one of {', '.join(RUNTIMES)}")
    path = Path(path)
    directory = path.parent if path.name == MODEL_FILE else path
    meta = directory / MODEL_FILE
    if not directory.is_dir():
        raise ModelLoadError(directory, "model directory does not exist")
    doc = _read_json(meta)
    if doc.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(meta, f"unknown format_version {doc.get('format_version')!r} "
                             f"(this code reads {FORMAT_VERSION})")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise ModelLoadError(meta, f"missing keys {missing}")
    files = dict(doc["files"])

    def resolve(name: str, prefix: str = "") -> type[Forecaster] | None:
        return _runtime_class(name, runtime, files, directory, prefix)

    cls = resolve(doc["class"])
    if cls is None:
        raise ModelLoadError(meta, f"unknown forecaster class {doc['class']!r} "
                             f"(known: {sorted(CLASSES)})")
    features = list(doc["feature_names"])
    if expected_features is not None and features != list(expected_features):
        raise ModelLoadError(meta, _feature_diff(features, list(expected_features)))
    for name, digest in files.items():
        if not (directory / name).is_file():
            raise ModelLoadError(directory / name, "weight file is missing")
        if _sha256(directory / name) != digest:
            raise ModelLoadError(directory / name, "checksum mismatch: file is corrupt or was "
                                 "changed after saving")
    extra = ({"member_class": lambda name, member: resolve(name, f"member_{member}/")}
             if cls is ServedForecaster else {})
    try:
        model = cls.from_config(dict(doc["hyperparameters"]), dict(doc["state"]), **extra)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(meta, f"bad hyperparameters or state ({exc})") from exc
    model.feature_names, model.spec = features, dict(doc["window_spec"])
    model.version = str(doc["version"])
    if "history_steps" not in model.spec or "horizon_steps" not in model.spec:
        raise ModelLoadError(meta, "window_spec lacks history_steps / horizon_steps")
    for m in (model, *getattr(model, "members", {}).values()):
        if getattr(m, "runtime", "torch") == "onnx":
            m.threads = threads                   # fixed when load_weights opens the session
    model.load_weights(directory)
    if kind is not None and not isinstance(model, kind):
        raise ModelLoadError(meta, f"holds a {type(model).__name__}, not a {kind.__name__}")
    return model


def _runtime_class(name: str, runtime: str, files: Mapping[str, str], directory: Path,
                   prefix: str = "") -> type[Forecaster] | None:
    """The class that serves a stored ``name`` under ``runtime`` (None: unknown class).
    ``prefix`` is a member's folder in a served forecaster's directory ("member_lstm/")."""
    if name != "LstmForecaster" or runtime == "torch":
        return CLASSES.get(name)
    listed = f"{prefix}{ONNX_FILE}" in files
    if runtime == "auto" and not listed:
        return CLASSES.get(name)                  # saved before weights.onnx existed
    if not listed:
        raise ModelLoadError(directory / f"{prefix}{ONNX_FILE}", "runtime 'onnx' needs the "
                             "LSTM's ONNX export, which model.json's files do not list (saved "
                             "before it existed? re-save it, or serve it with runtime 'torch')")
    return import_class(ONNX_LSTM)


def _read_json(meta: Path) -> dict[str, Any]:
    try:
        text = meta.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ModelLoadError(meta, "model.json is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(meta, f"unreadable ({exc})") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(meta, f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                             f"{exc.msg}") from exc
    if not isinstance(doc, dict):
        raise ModelLoadError(meta, f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _feature_diff(stored: list[str], expected: list[str]) -> str:
    extra = [f for f in stored if f not in expected]
    lacking = [f for f in expected if f not in stored]
    if not extra and not lacking:
        return "feature order differs from the expected one"
    return (f"feature list mismatch: model has {len(stored)} features, expected "
            f"{len(expected)}; only in model {extra[:8]}, missing from model {lacking[:8]}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays -> Python, tuples -> lists, Paths -> str, NaN/inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
