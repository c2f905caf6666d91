"""The LSTM forecaster: :class:`LstmForecaster` around :class:`~.model.QuantileLSTM`.

It implements the interface of base.py (fit on a ``WindowSet``, predict normalised p50/p90/p99
for every horizon step); the baselines (baselines.py) implement the same one. The interface
and its errors (:class:`~.base.Forecaster`, :class:`~.base.ModelLoadError`,
:class:`~.base.ForecastInputError`, :func:`~.base.check_params`) are re-exported here for the
importers that take them from this module, and so are the hyperparameters
(:class:`~.lstm_base.LstmParams`, shared with the torch-free :mod:`.onnx_lstm`). Stored with its
hyperparameters, feature scaling and weights in one versioned model directory (registry.py):
weights.pt for torch, weights.onnx, its export, for serving without torch.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rackpower_nodes.core.forecast.base import (
    ForecastInputError, Forecaster, ModelLoadError, check_params)
from rackpower_nodes.core.forecast.distributed import DistContext
from rackpower_nodes.core.forecast.lstm_base import ONNX_FILE, LstmBase, LstmParams
from rackpower_nodes.core.forecast.model import QuantileLSTM

__all__ = ["ForecastInputError", "Forecaster", "LstmForecaster", "LstmParams", "ModelLoadError",
           "check_params"]

_log = logging.getLogger(__name__)
ONNX_OPSET = 17          # of weights.onnx


class LstmForecaster(LstmBase):
    """Global quantile LSTM (model.py) with per-feature standardisation fitted on train.

    Fit minimises the mean pinball loss over p50/p90/p99 with Adam, keeps the weights of the
    epoch with the lowest validation pinball loss (training loss when no validation set is
    given), multiplies the learning rate by ``lr_decay`` after every epoch without a relative
    improvement of ``min_delta`` and stops after ``patience`` such epochs in a row. With
    ``calibrate`` and a validation set it then stores ``calibration`` (horizon, Q) offsets
    (normalised power) that ``predict`` adds to p90 and p99 (the p50 column is 0).
    Deterministic for a seed and thread count. ``progress=True`` shows a tqdm bar over epochs.

    Run in every rank of an initialised ``torch.distributed`` group of more than one process
    (``torchrun``, distributed.py), fit trains data-parallel: every rank is given the same
    windows, the module runs inside ``DistributedDataParallel``, each rank takes its
    ``DistributedSampler`` share of each epoch (``batch_size`` is per rank: the global batch is
    ``batch_size * world_size``), the training and validation losses are summed over the ranks
    so that every rank takes the same early-stopping decision, and ``training["distributed"]``
    records the world size and the windows and batches each rank trained on. Every rank ends
    with the same weights; the caller writes the model directory from rank 0 only.
    """

    def __init__(self, params: LstmParams | None = None, progress: bool = False) -> None:
        super().__init__(params)
        self.progress = progress
        self.module: QuantileLSTM | None = None

    def _new_module(self) -> QuantileLSTM:
        p = self.params
        return QuantileLSTM(len(self.columns), self.horizon_steps, p.hidden_size,
                            p.num_layers, p.dropout, len(self.quantiles))

    def save_weights(self, directory: Path) -> list[str]:
        """weights.pt (the state_dict: training, fine-tuning, serving with torch) and
        weights.onnx (the network's ONNX export with a dynamic batch, for serving without
        torch: onnx_lstm.py)."""
        torch.save(self.module.state_dict(), directory / "weights.pt")
        _export_onnx(self.module, len(self.columns), self.history_steps,
                     directory / ONNX_FILE)
        return ["weights.pt", ONNX_FILE]

    def load_weights(self, directory: Path) -> None:
        path = directory / "weights.pt"
        self._check_state(directory / "model.json")
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise ModelLoadError(path, "weights file is missing") from exc
        except Exception as exc:   # torch raises RuntimeError, EOFError, UnpicklingError, ...
            raise ModelLoadError(path, f"unreadable weights ({type(exc).__name__}: {exc})"
                                 ) from exc
        module = self._new_module()
        try:
            module.load_state_dict(weights)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise ModelLoadError(path, f"weights do not fit the model ({exc})") from exc
        self.module = module.eval()

    def _scale(self, x: np.ndarray) -> torch.Tensor:
        """(n, history, all features) -> (n, history, read features) standardised tensor."""
        return torch.from_numpy(self._scaled(x))

    def predict(self, x: np.ndarray, last: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """See Forecaster.predict; runs on torch's current thread setting."""
        if self.module is None:
            raise ForecastInputError("lstm: predict called before fit or load")
        x, last = self._check_input(x, last)
        self.module.eval()
        dev = next(self.module.parameters()).device      # a rank's GPU while fit runs
        out = []
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                sl = slice(i, i + batch_size)
                out.append(self.module(self._scale(x[sl]).to(dev), torch.from_numpy(
                    last[sl]).to(dev)).cpu().numpy())
        if not out:
            return np.zeros((0, self.horizon_steps, len(self.quantiles)), np.float32)
        return self._calibrated(np.concatenate(out))

    def fit(self, train: Any, val: Any | None = None) -> LstmForecaster:
        p = self.params
        self._adopt(train)
        self.calibration = np.zeros((0, 0), np.float32)
        torch.set_num_threads(p.threads)
        torch.manual_seed(p.seed)
        rng = np.random.default_rng(p.seed)
        ctx = DistContext.current()          # None: one process, no DDP
        cols = self.columns
        flat = train.x[:, :, cols].reshape(-1, len(cols)).astype(np.float64)
        self.mean = flat.mean(axis=0).astype(np.float32)
        std = flat.std(axis=0)
        self.std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
        self.module = self._new_module()
        net = self.module if ctx is None else ctx.wrap(self.module)
        opt = torch.optim.Adam(self.module.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        quantiles = torch.tensor(self.quantiles, device=ctx.device if ctx else None)
        best, best_state, bad, history = float("inf"), None, 0, []
        seen = np.zeros(2)                   # windows and batches this rank trained on
        t0 = time.monotonic()
        epochs = _progress(range(p.max_epochs), self.progress, "lstm epochs")
        for epoch in epochs:
            if ctx is None:
                order = rng.permutation(len(train.x))[:p.samples_per_epoch or None]
                train_loss = self._epoch(train, net, opt, quantiles, order, seen)
            else:
                order = ctx.epoch_order(len(train.x), p.seed, epoch, p.samples_per_epoch)
                total, count = ctx.sum([self._epoch(train, net, opt, quantiles, order, seen)
                                        * len(order), len(order)])
                train_loss = float(total / max(count, 1.0))
            val_loss = (self._val_loss(val, ctx) if val is not None and len(val.x)
                        else train_loss)
            history.append({"epoch": epoch + 1, "train_pinball": train_loss,
                            "val_pinball": val_loss, "elapsed_s": time.monotonic() - t0})
            _log.info("lstm epoch %d: train pinball %.5f, val pinball %.5f", epoch + 1,
                      train_loss, val_loss)
            if hasattr(epochs, "set_postfix"):
                epochs.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            bad = 0 if val_loss < best * (1.0 - p.min_delta) else bad + 1
            if bad:
                for group in opt.param_groups:
                    group["lr"] *= p.lr_decay
            if val_loss < best:
                best, best_state = val_loss, copy.deepcopy(self.module.state_dict())
            stop = bad >= p.patience or bool(p.max_train_s
                                             and time.monotonic() - t0 > p.max_train_s)
            if stop if ctx is None else ctx.any(stop):    # the clock may differ between ranks
                break
        if best_state is not None:          # None only when every loss was NaN
            self.module.load_state_dict(best_state)
        self.module.cpu().eval()
        if p.calibrate and val is not None and len(val.x):
            self.calibration = self._conformal_offsets(val)
        self.training = {"epochs": len(history), "best_val_pinball": best,
                         "seconds": time.monotonic() - t0, "history": history,
                         "calibrated": bool(self.calibration.size)}
        if ctx is not None:
            self.training["distributed"] = {
                "world_size": ctx.world_size, "backend": ctx.backend,
                "batch_size_per_rank": p.batch_size,
                "per_rank": [{"rank": r, "windows": int(w), "batches": int(b)}
                             for r, (w, b) in enumerate(ctx.gather(seen))]}
        return self

    def _val_loss(self, val: Any, ctx: DistContext | None) -> float:
        """Mean pinball loss on ``val``; with ranks, each scores its share and the sums
        are added up, so every rank gets the same value."""
        if ctx is None:
            return self.loss(val)
        idx = ctx.shard(len(val.x))
        part = self.loss(val.subset(idx)) * len(idx) if len(idx) else 0.0
        total, count = ctx.sum([part, len(idx)])
        return float(total / max(count, 1.0))

    def _conformal_offsets(self, val: Any) -> np.ndarray:
        """(horizon, Q) float32 offsets (normalised power): per horizon step, the split
        conformal quantile of ``y - q`` on the validation windows for each upper quantile q,
        so that ``q + offset`` covers its level there; 0 for the median."""
        pred = self.predict(val.x, val.last).astype(np.float64)
        resid = np.asarray(val.y, np.float64)[:, :, None] - pred
        n = len(resid)
        out = np.zeros(pred.shape[1:], np.float32)
        for k, level in enumerate(self.quantiles):
            if k == 0:
                continue
            rank = min(1.0, np.ceil((n + 1) * level) / n)
            out[:, k] = np.quantile(resid[:, :, k], rank, axis=0, method="higher")
        return out

    def _epoch(self, train: Any, net: torch.nn.Module, opt: torch.optim.Optimizer,
               quantiles: torch.Tensor, order: np.ndarray, seen: np.ndarray) -> float:
        """One pass over the training windows ``order`` through ``net`` (the module, or it
        in DDP); adds the windows and batches to ``seen``; returns the mean pinball loss."""
        p = self.params
        dev = quantiles.device
        net.train()
        total = 0.0
        for i in range(0, len(order), p.batch_size):
            idx = np.sort(order[i:i + p.batch_size])
            pred = net(self._scale(train.x[idx]).to(dev), torch.from_numpy(
                np.asarray(train.last[idx], np.float32)).to(dev))
            loss = _pinball(pred, torch.from_numpy(np.asarray(train.y[idx], np.float32)
                                                   ).to(dev), quantiles)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            seen += (len(idx), 1)
        return total / max(len(order), 1)

    def loss(self, windows: Any) -> float:
        """Mean pinball loss (normalised power) of the current weights on a WindowSet."""
        pred = torch.from_numpy(self.predict(windows.x, windows.last))
        return float(_pinball(pred, torch.from_numpy(np.asarray(windows.y, np.float32)),
                              torch.tensor(self.quantiles)))


def _pinball(pred: torch.Tensor, y: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss; pred (batch, horizon, Q), y (batch, horizon), quantiles (Q,)."""
    diff = y.unsqueeze(-1) - pred
    return torch.maximum(quantiles * diff, (quantiles - 1.0) * diff).mean()


def _export_onnx(module: QuantileLSTM, width: int, history: int, path: Path) -> None:
    """Write the ONNX export of ``module`` (a CPU copy in eval mode) to ``path``: inputs
    ``x`` (batch, history, width) and ``base`` (batch,), output ``q`` (batch, horizon, Q),
    the batch dynamic. The exporter's notices (its legacy path, the traced shape check, the
    LSTM batch note: no sequence lengths here) are silenced."""
    net = copy.deepcopy(module).cpu().eval()
    x, base = torch.zeros(2, history, width), torch.zeros(2)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size",
                                UserWarning)
        torch.onnx.export(net, (x, base), str(path), input_names=["x", "base"],
                          output_names=["q"], dynamic_axes={"x": batch, "base": batch,
                                                            "q": batch},
                          dynamo=False, opset_version=ONNX_OPSET)


def _progress(iterable, enabled: bool, desc: str):
    """tqdm around ``iterable`` when enabled (tqdm imported only then)."""
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, unit="epoch")
