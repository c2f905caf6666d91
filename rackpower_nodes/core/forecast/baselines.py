"""Baseline forecasters, kept forever beside the LSTM behind the same interface.

- :class:`PersistenceForecaster`: every step's p50 = the last observed power; p90/p99 add the
  empirical 0.9/0.99 quantiles of the training residuals ``y - last`` per horizon step
  (``margin=False``: every quantile = last).
- :class:`EwmaForecaster`: p50 = an exponentially weighted mean of the history's power feature;
  p90/p99 add residual quantiles per step as above.
- :class:`LightGbmForecaster`: LightGBM quantile regressors of ``y - last`` on summary features
  of the window, one per quantile and per anchor horizon step (intermediate steps are
  interpolated linearly between anchors).

All work in normalised power (fraction of max_w) and return (n, horizon, 3) float32, >= 0 and
non-decreasing along the quantile axis.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rackpower_nodes.core.forecast.base import (
    ForecastInputError, Forecaster, ModelLoadError, check_params)

__all__ = ["EwmaForecaster", "EwmaParams", "LightGbmForecaster", "LightGbmParams",
           "PersistenceForecaster", "PersistenceParams", "summary_features"]

_log = logging.getLogger(__name__)


class _MarginForecaster(Forecaster):
    """p50 = a point forecast; higher quantiles add per-step train residual quantiles."""

    def __init__(self) -> None:
        super().__init__()
        self.offsets = np.zeros((0, len(self.quantiles)))   # (horizon, Q) normalised power

    def _point(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        """(n,) point forecast in normalised power, used for every horizon step."""
        raise NotImplementedError

    def fit(self, train: Any, val: Any | None = None) -> _MarginForecaster:
        self._adopt(train)
        h, q = train.y.shape[1], len(self.quantiles)
        self.offsets = np.zeros((h, q))
        if self.params.margin:
            point = np.maximum(self._point(train.x, train.last), 0.0)
            resid = np.asarray(train.y, np.float64) - point[:, None]
            above = [i for i, lvl in enumerate(self.quantiles) if lvl > 0.5]
            levels = [self.quantiles[i] for i in above]
            self.offsets[:, above] = np.quantile(resid, levels, axis=0).T
            self.offsets = np.maximum.accumulate(np.maximum(self.offsets, 0.0), axis=1)
        self.training = {"windows": len(train.y)}
        return self

    def predict(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        x, last = self._check_input(x, last)
        point = np.maximum(self._point(x, last), 0.0).astype(np.float32)
        return point[:, None, None] + self.offsets.astype(np.float32)[None]

    def hyperparameters(self) -> dict[str, Any]:
        return asdict(self.params)

    def state(self) -> dict[str, Any]:
        return {"offsets": self.offsets.tolist(), "training": self.training}

    @classmethod
    def from_config(cls, hyperparameters: dict, state: dict) -> _MarginForecaster:
        model = cls(cls.params_type(**hyperparameters))
        model.offsets = np.asarray(state["offsets"], np.float64).reshape(
            -1, len(model.quantiles))
        model.training = dict(state.get("training", {}))
        return model

    def load_weights(self, directory: Path) -> None:
        if self.offsets.shape[0] != self.horizon_steps:
            raise ModelLoadError(directory / "model.json", f"{self.offsets.shape[0]} margin "
                                 f"rows for {self.horizon_steps} horizon steps")


@dataclass
class PersistenceParams:
    """``margin``: add residual-quantile margins to p90/p99 (False: all quantiles = last)."""

    margin: bool = True


class PersistenceForecaster(_MarginForecaster):
    """Every quantile of every step = last observed power (+ margins); p50 is ``last``."""

    name: ClassVar[str] = "persistence"
    params_type = PersistenceParams

    def __init__(self, params: PersistenceParams | None = None) -> None:
        super().__init__()
        self.params = params or PersistenceParams()

    def _point(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        return np.asarray(last)


@dataclass
class EwmaParams:
    """``alpha``: EWMA weight of the newest history step, in (0, 1]; ``margin`` as above."""

    alpha: float = 0.3
    margin: bool = True

    def __post_init__(self) -> None:
        check_params(self, {"alpha": (1e-6, 1.0)})


class EwmaForecaster(_MarginForecaster):
    """p50 = EWMA of the power feature over the history window (+ margins above)."""

    name: ClassVar[str] = "ewma"
    params_type = EwmaParams

    def __init__(self, params: EwmaParams | None = None) -> None:
        super().__init__()
        self.params = params or EwmaParams()

    def _point(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        return ewma(np.asarray(x)[:, :, self.power_index], self.params.alpha)


def ewma(series: np.ndarray, alpha: float) -> np.ndarray:
    """EWMA at the last step of each row, seeded with the first value.

    Args:
        series: (n, T) values, oldest first; alpha: weight of the newest value.

    Returns:
        (n,) float64 ``s_T`` of ``s_1 = v_1``, ``s_t = alpha v_t + (1 - alpha) s_(t-1)``.
    """
    t = series.shape[1]
    w = alpha * (1.0 - alpha) ** np.arange(t - 1, -1, -1, dtype=np.float64)
    w[0] = (1.0 - alpha) ** (t - 1)
    return np.asarray(series, np.float64) @ w


def summary_features(x: np.ndarray, power_index: int = 0) -> np.ndarray:
    """Tabular summary of windows for gradient boosting.

    Args:
        x: (n, history, F) features (power normalised by max_w); power_index: the power feature.

    Returns:
        (n, F + 10) float32: every feature at the last step, then the power history's mean,
        max, min, std, slope per step (least squares), EWMA(0.3) and last - power k steps ago
        for k = 1, 2, 4, 8 (clamped to the history).
    """
    x = np.asarray(x, np.float32)
    p = x[:, :, power_index].astype(np.float64)
    t = p.shape[1]
    tc = np.arange(t) - (t - 1) / 2.0
    slope = p @ tc / max(float(tc @ tc), 1e-12)
    lags = [p[:, -1] - p[:, max(t - 1 - k, 0)] for k in (1, 2, 4, 8)]
    extra = np.stack([p.mean(1), p.max(1), p.min(1), p.std(1), slope, ewma(p, 0.3), *lags],
                     axis=1)
    return np.concatenate([x[:, -1, :], extra.astype(np.float32)], axis=1)


@dataclass
class LightGbmParams:
    """LightGBM baseline. ``max_step_models``: anchor horizon steps that get their own models
    (evenly spaced, first and last included); ``max_rows``: training windows used at most
    (a seeded random sample); ``threads``: LightGBM's num_threads."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    subsample: float = 0.8
    colsample: float = 0.9
    max_step_models: int = 4
    max_rows: int = 200_000
    early_stopping: int = 20
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_params(self, {
            "n_estimators": (1, 100000), "learning_rate": (1e-6, 1.0), "num_leaves": (2, 1 << 17),
            "min_child_samples": (1, 1 << 30), "subsample": (0.01, 1.0),
            "colsample": (0.01, 1.0), "max_step_models": (1, 10000), "max_rows": (1, 1 << 40),
            "early_stopping": (0, 100000), "threads": (1, 1024)})


class LightGbmForecaster(Forecaster):
    """Quantile gradient boosting of ``y - last`` on :func:`summary_features`.

    Non-crossing is enforced after prediction (cumulative max along the quantiles), and
    non-negativity by clipping at 0 before it.
    """

    name: ClassVar[str] = "lightgbm"

    def __init__(self, params: LightGbmParams | None = None) -> None:
        super().__init__()
        self.params = params or LightGbmParams()
        self.anchors: list[int] = []                 # 1-based horizon steps with models
        self.boosters: dict[tuple[int, int], Any] = {}   # (quantile index, anchor) -> Booster

    def hyperparameters(self) -> dict[str, Any]:
        return asdict(self.params)

    def state(self) -> dict[str, Any]:
        return {"anchors": self.anchors, "training": self.training}

    @classmethod
    def from_config(cls, hyperparameters: dict, state: dict) -> LightGbmForecaster:
        model = cls(LightGbmParams(**hyperparameters))
        model.anchors = [int(a) for a in state["anchors"]]
        model.training = dict(state.get("training", {}))
        return model

    def _files(self) -> dict[tuple[int, int], str]:
        return {(qi, a): f"lgbm_q{round(q * 100):d}_s{a}.txt"
                for qi, q in enumerate(self.quantiles) for a in self.anchors}

    def save_weights(self, directory: Path) -> list[str]:
        files = self._files()
        for key, fname in files.items():
            self.boosters[key].save_model(str(directory / fname))
        return list(files.values())

    def load_weights(self, directory: Path) -> None:
        import lightgbm as lgb
        if not self.anchors or max(self.anchors) > self.horizon_steps or min(self.anchors) < 1:
            raise ModelLoadError(directory / "model.json", f"anchors {self.anchors} do not fit "
                                 f"horizon 1..{self.horizon_steps}")
        width = len(self.feature_names) + 10
        for key, fname in self._files().items():
            path = directory / fname
            try:
                booster = lgb.Booster(model_file=str(path))
            except (lgb.basic.LightGBMError, OSError, ValueError) as exc:
                raise ModelLoadError(path, f"unreadable LightGBM model ({exc})") from exc
            if booster.num_feature() != width:
                raise ModelLoadError(path, f"model takes {booster.num_feature()} features, "
                                     f"expected {width}")
            self.boosters[key] = booster

    def fit(self, train: Any, val: Any | None = None) -> LightGbmForecaster:
        import lightgbm as lgb
        p = self.params
        self._adopt(train)
        h = self.horizon_steps
        self.anchors = sorted({int(a) for a in np.rint(np.linspace(1, h, min(p.max_step_models,
                                                                             h)))})
        rng = np.random.default_rng(p.seed)
        rows = np.sort(rng.permutation(len(train.y))[:p.max_rows])
        feats = summary_features(train.x[rows], self.power_index)
        resid = np.asarray(train.y[rows], np.float64) - np.asarray(train.last[rows])[:, None]
        if val is not None and len(val.y):
            vfeats = summary_features(val.x, self.power_index)
            vresid = np.asarray(val.y, np.float64) - np.asarray(val.last)[:, None]
        rounds = {}
        for (qi, a) in self._files():
            params = {"objective": "quantile", "alpha": self.quantiles[qi],
                      "learning_rate": p.learning_rate, "num_leaves": p.num_leaves,
                      "min_child_samples": p.min_child_samples, "bagging_fraction": p.subsample,
                      "bagging_freq": 1, "feature_fraction": p.colsample,
                      "num_threads": p.threads, "seed": p.seed, "deterministic": True,
                      "force_row_wise": True, "verbosity": -1}
            dtrain = lgb.Dataset(feats, resid[:, a - 1], free_raw_data=False)
            kwargs = {}
            if val is not None and len(val.y) and p.early_stopping:
                kwargs["valid_sets"] = [lgb.Dataset(vfeats, vresid[:, a - 1], reference=dtrain)]
                kwargs["callbacks"] = [lgb.early_stopping(p.early_stopping, verbose=False)]
            booster = lgb.train(params, dtrain, num_boost_round=p.n_estimators, **kwargs)
            # through text, so a loaded model predicts bit for bit like this one
            self.boosters[(qi, a)] = lgb.Booster(model_str=booster.model_to_string())
            rounds[f"q{round(self.quantiles[qi] * 100)}_s{a}"] = booster.current_iteration()
        self.training = {"rows": len(rows), "rounds": rounds}
        return self

    def predict(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        x, last = self._check_input(x, last)
        if not self.boosters:
            raise ForecastInputError("lightgbm: predict called before fit or load")
        feats = summary_features(x, self.power_index)
        q = len(self.quantiles)
        at_anchor = np.empty((len(x), len(self.anchors), q))
        for j, a in enumerate(self.anchors):
            for qi in range(q):
                at_anchor[:, j, qi] = self.boosters[(qi, a)].predict(feats) if len(x) else 0.0
        steps = np.arange(1, self.horizon_steps + 1)
        # linear interpolation between anchors as a (horizon, anchors) weight matrix
        eye = np.eye(len(self.anchors))
        weights = np.stack([np.interp(steps, self.anchors, e) for e in eye], axis=1)
        resid = np.einsum("nak,ha->nhk", at_anchor, weights)
        pred = np.maximum(last[:, None, None] + resid, 0.0)
        return np.maximum.accumulate(pred, axis=2).astype(np.float32)
