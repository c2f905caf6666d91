"""What the LSTM's two forecasters share, without torch.

:class:`LstmParams` (the hyperparameters) and :class:`LstmBase`: the fitted state stored in
model.json (feature scaling, calibration offsets, training summary), the input scaling and
the calibration of the output. :class:`~.forecaster.LstmForecaster` fits and serves the
network with torch (weights.pt); :class:`~.onnx_lstm.OnnxLstmForecaster` serves its ONNX
export (weights.onnx) with onnxruntime. This module imports neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rackpower_nodes.core.forecast.base import (
    ForecastInputError, Forecaster, ModelLoadError, check_params)

__all__ = ["ONNX_FILE", "LstmBase", "LstmParams"]

ONNX_FILE = "weights.onnx"   # an LSTM directory's ONNX export (written by forecaster.py)


@dataclass
class LstmParams:
    """LSTM forecaster hyperparameters. ``threads`` caps torch's CPU threads during fit;
    ``max_train_s`` (0 = none) stops after the epoch that crosses it; ``samples_per_epoch``
    (0 = all) draws that many training windows per epoch; ``min_delta``: relative drop of the
    validation loss below the best so far that counts as progress for ``patience`` (the best
    weights are kept whatever the drop); ``lr_decay``: factor applied to the learning rate
    after each epoch without such progress (1 = constant rate); ``features`` names the input
    features the network reads (empty = all; ``predict`` still takes every feature of the
    WindowSet, so the model stays a drop-in for the same windows); ``calibrate``: after fit,
    shift p90 and p99 per horizon step so that they cover 90 % and 99 % of the validation
    windows (split conformal offsets; needs a validation set)."""

    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 40
    patience: int = 5
    seed: int = 0
    threads: int = 2
    max_train_s: float = 0.0
    samples_per_epoch: int = 0
    input_clip: float = 10.0
    min_delta: float = 0.002
    features: tuple[str, ...] = ()
    lr_decay: float = 0.5
    calibrate: bool = True

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        check_params(self, {
            "hidden_size": (1, 4096), "num_layers": (1, 8), "dropout": (0.0, 0.9),
            "lr": (1e-7, 1.0), "weight_decay": (0.0, 1.0), "batch_size": (1, 1 << 20),
            "max_epochs": (1, 100000), "patience": (1, 100000), "threads": (1, 1024),
            "max_train_s": (0.0, 1e7), "samples_per_epoch": (0, 1 << 40),
            "input_clip": (0.1, 1e6), "min_delta": (0.0, 0.5), "lr_decay": (0.01, 1.0)})


class LstmBase(Forecaster):
    """The LSTM's stored state and its scaling, shared by the torch and ONNX forecasters.

    ``mean`` and ``std`` (F,) standardise the features the network reads (``columns``);
    ``calibration`` (horizon, Q) holds the offsets (normalised power) added to the network's
    quantiles, or is empty.
    """

    name: ClassVar[str] = "lstm"

    def __init__(self, params: LstmParams | None = None) -> None:
        super().__init__()
        self.params = params or LstmParams()
        self.mean: np.ndarray = np.zeros(0, np.float32)      # (F,) feature means
        self.std: np.ndarray = np.ones(0, np.float32)        # (F,) feature std devs
        self.calibration: np.ndarray = np.zeros((0, 0), np.float32)  # (horizon, Q) or empty

    def hyperparameters(self) -> dict[str, Any]:
        return asdict(self.params)

    def state(self) -> dict[str, Any]:
        return {"scaler": {"mean": self.mean.tolist(), "std": self.std.tolist()},
                "calibration": self.calibration.tolist(), "training": self.training}

    @classmethod
    def from_config(cls, hyperparameters: dict, state: dict) -> LstmBase:
        model = cls(LstmParams(**hyperparameters))
        model.mean = np.asarray(state["scaler"]["mean"], np.float32)
        model.std = np.asarray(state["scaler"]["std"], np.float32)
        model.training = dict(state.get("training", {}))
        model.calibration = np.asarray(state.get("calibration", []), np.float32).reshape(
            (-1, len(model.quantiles)) if state.get("calibration") else (0, 0))
        return model

    @property
    def columns(self) -> list[int]:
        """Indices of the features the network reads, in ``feature_names``."""
        if not self.params.features:
            return list(range(len(self.feature_names)))
        unknown = [f for f in self.params.features if f not in self.feature_names]
        if unknown:
            raise ForecastInputError(f"lstm: LstmParams.features {unknown} are not among the "
                                     f"window features {self.feature_names}")
        return [self.feature_names.index(f) for f in self.params.features]

    def _check_state(self, meta: Path) -> int:
        """Check the loaded scaler and calibration against the features and horizon; returns
        the network's input width. Raises ModelLoadError naming ``meta`` (model.json)."""
        try:
            width = len(self.columns)
        except ForecastInputError as exc:
            raise ModelLoadError(meta, str(exc)) from exc
        if len(self.mean) != width or len(self.std) != width:
            raise ModelLoadError(meta, f"scaler has {len(self.mean)} means and {len(self.std)} "
                                 f"stds for {width} input features")
        want = (self.horizon_steps, len(self.quantiles))
        if self.calibration.size and self.calibration.shape != want:
            raise ModelLoadError(meta, f"calibration has shape {self.calibration.shape}, "
                                 f"expected {want} (horizon steps, quantiles)")
        return width

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        """(n, history, all features) -> (n, history, read features) standardised float32,
        clipped to +-``input_clip``."""
        z = ((x[:, :, self.columns] if self.params.features else x) - self.mean) / self.std
        clip = self.params.input_clip
        return np.clip(z, -clip, clip, out=z).astype(np.float32, copy=False)

    def _calibrated(self, pred: np.ndarray) -> np.ndarray:
        """Add the calibration offsets to (n, horizon, Q) network output, in place, keeping
        the quantiles non-decreasing (p90 >= p50 after a shift down)."""
        if self.calibration.size:
            pred += self.calibration[None]
            np.maximum.accumulate(pred, axis=2, out=pred)
        return pred
