"""The forecaster interface every model implements, and the errors they share.

Every forecaster (the LSTM in forecaster.py, the baselines in baselines.py) is fitted on a
``WindowSet`` (features.py) and predicts, for n windows at once, the quantiles p50/p90/p99 of
each component's mean power for every horizon step, normalised by the component's ``max_w``::

    pred = forecaster.predict(x, last)   # x (n, history, F), last (n,) -> (n, horizon, 3)
    watts = pred * scale_w[:, None, None]

Predictions are >= 0 and non-decreasing along the quantile axis for every forecaster. A
forecaster hands what it needs to predict (hyperparameters, fitted state, weight files) to
registry.py, which stores it in one versioned model directory (``save_model``) and rebuilds
it from there (``load_model``). This module imports no forecaster and no storage, so the
models, the registry and the service all build on it without import cycles.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

# the quantiles every model predicts (model.py's network takes them from here: this module,
# imported by the predictor node with no model in service, must not load torch)
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)

__all__ = ["ForecastInputError", "Forecaster", "ModelLoadError", "check_params"]


class ModelLoadError(Exception):
    """A model directory cannot be loaded. ``path`` is the offending file or folder."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


class ForecastInputError(ValueError):
    """Inputs to fit/predict have the wrong shape, features or non-finite values."""


def check_params(params: Any, rules: Mapping[str, tuple[float, float]]) -> None:
    """Raise ValueError naming the first hyperparameter outside its [low, high] range."""
    for key, (low, high) in rules.items():
        value = getattr(params, key)
        if not low <= value <= high:
            raise ValueError(f"{type(params).__name__}.{key} = {value!r}, expected a value in "
                             f"[{low}, {high}]")


class Forecaster(ABC):
    """Interface of every forecaster (LSTM and baselines).

    After ``fit`` (or registry.py's ``load_model``): ``feature_names`` (the WindowSet's, in
    order), ``spec`` (its WindowSpec as a dict), ``version`` (UTC fit time
    ``YYYYmmddTHHMMSSZ``, possibly suffixed by the registry) and ``quantiles`` are set.
    """

    name: ClassVar[str] = "forecaster"
    quantiles: tuple[float, ...] = QUANTILES

    def __init__(self) -> None:
        self.feature_names: list[str] = []
        self.spec: dict[str, Any] = {}
        self.version: str = "unfitted"
        self.training: dict[str, Any] = {}

    # --- the interface -------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: Any, val: Any | None = None) -> Forecaster:
        """Fit on ``train`` (a WindowSet); ``val`` (a WindowSet) drives early stopping."""

    @abstractmethod
    def predict(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        """(n, history, F) features and (n,) last normalised power -> (n, horizon, 3) float32
        normalised quantile forecasts, >= 0 and non-decreasing along the last axis."""

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """JSON-able hyperparameters (what the constructor takes)."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-able fitted state other than weights (scaling, margins, training summary)."""

    @classmethod
    @abstractmethod
    def from_config(cls, hyperparameters: dict, state: dict) -> Forecaster:
        """Rebuild an unweighted forecaster from ``hyperparameters()`` and ``state()``."""

    def save_weights(self, directory: Path) -> list[str]:
        """Write weight files into ``directory``; return their names (none by default)."""
        return []

    def load_weights(self, directory: Path) -> None:
        """Read the weight files written by ``save_weights`` (raise ModelLoadError)."""

    # --- helpers for subclasses ------------------------------------------------------------
    @property
    def horizon_steps(self) -> int:
        return int(self.spec["horizon_steps"])

    @property
    def history_steps(self) -> int:
        return int(self.spec["history_steps"])

    @property
    def power_index(self) -> int:
        """Index of the normalised current power feature ("power", else feature 0)."""
        return self.feature_names.index("power") if "power" in self.feature_names else 0

    def _adopt(self, train: Any) -> None:
        """Take feature names, window spec and a fresh version from a training WindowSet."""
        if train.x.ndim != 3 or train.y.ndim != 2 or len(train.x) != len(train.y):
            raise ForecastInputError(f"WindowSet shapes x {train.x.shape}, y {train.y.shape}: "
                                     "expected x (n, history, F) and y (n, horizon)")
        if len(train.x) == 0:
            raise ForecastInputError("training WindowSet is empty")
        self.feature_names = [str(f) for f in train.feature_names]
        spec = train.spec
        spec = asdict(spec) if dataclasses.is_dataclass(spec) else dict(spec)
        spec["history_steps"], spec["horizon_steps"] = train.x.shape[1], train.y.shape[1]
        self.spec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()}
        self.version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if train.x.shape[2] != len(self.feature_names):
            raise ForecastInputError(f"x has {train.x.shape[2]} features but feature_names "
                                     f"lists {len(self.feature_names)}")

    def _check_input(self, x: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validate predict inputs; returns float32 copies-if-needed."""
        x, last = np.asarray(x, np.float32), np.asarray(last, np.float32)
        want = (self.history_steps, len(self.feature_names))
        if x.ndim != 3 or x.shape[1:] != want:
            raise ForecastInputError(f"{self.name}: x shape {x.shape}, expected (n, {want[0]}, "
                                     f"{want[1]})")
        if last.shape != x.shape[:1]:
            raise ForecastInputError(f"{self.name}: last shape {last.shape}, expected "
                                     f"({x.shape[0]},)")
        bad = int(np.count_nonzero(~np.isfinite(x))) + int(np.count_nonzero(~np.isfinite(last)))
        if bad:
            raise ForecastInputError(f"{self.name}: {bad} non-finite input values")
        return x, last

