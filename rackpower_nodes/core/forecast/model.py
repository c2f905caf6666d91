"""The quantile LSTM network: forward pass only (fitting and scaling: forecaster.py).

One global network is shared by every component. It reads a window of standardised features and
emits, for every horizon step at once, three quantiles of the component's future mean power as a
fraction of its ``max_w`` (the same normalisation as ``WindowSet.y``).

Quantiles never cross and are never negative by construction::

    p50 = softplus_b(base + a)          base: last observed normalised power (persistence)
    p90 = p50 + softplus_b(b)
    p99 = p90 + softplus_b(c)

``softplus_b(z) = log(1 + exp(b z)) / b`` with a sharpness ``b`` (default 20), close to
``max(z, 0)`` but smooth; its output is >= 0, and adding non-negative float32 increments can
never make a later quantile smaller than an earlier one. Centring p50 on ``base`` makes the
network learn the change from persistence, which it does far faster than the level itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rackpower_nodes.core.forecast.base import QUANTILES

__all__ = ["QUANTILES", "QuantileLSTM"]


class QuantileLSTM(nn.Module):
    """LSTM encoder + MLP head emitting non-crossing, non-negative quantiles per horizon step.

    Args:
        n_features: features per history step (F).
        horizon_steps: forecast steps (H), all predicted at once.
        hidden_size: LSTM and head width.
        num_layers: stacked LSTM layers (dropout applies between them when > 1).
        dropout: dropout probability between LSTM layers and before the head.
        n_quantiles: quantiles per step (Q); the first is the median.
        sharpness: ``b`` of the softplus that keeps outputs non-negative (1 / normalised power).
        init_spread: initial gap between consecutive quantiles (normalised power).
    """

    def __init__(self, n_features: int, horizon_steps: int, hidden_size: int = 64,
                 num_layers: int = 1, dropout: float = 0.0, n_quantiles: int = len(QUANTILES),
                 sharpness: float = 20.0, init_spread: float = 0.03) -> None:
        super().__init__()
        if min(n_features, horizon_steps, hidden_size, num_layers, n_quantiles) < 1:
            raise ValueError(
                f"QuantileLSTM sizes must be >= 1, got n_features={n_features}, "
                f"horizon_steps={horizon_steps}, hidden_size={hidden_size}, "
                f"num_layers={num_layers}, n_quantiles={n_quantiles}")
        self.n_features = n_features
        self.horizon_steps = horizon_steps
        self.n_quantiles = n_quantiles
        self.sharpness = float(sharpness)
        self.lstm = nn.LSTM(n_features, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Sequential(
            nn.Linear(hidden_size + n_features, hidden_size), nn.ReLU(),
            nn.Linear(hidden_size, horizon_steps * n_quantiles))
        self._init_head(init_spread)

    def _init_head(self, init_spread: float) -> None:
        """Start with p50 = base and quantile gaps of ``init_spread``, not softplus(0) = 0.69/b."""
        last = self.head[-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            bias = last.bias.view(self.horizon_steps, self.n_quantiles)
            bias.zero_()
            spread = torch.tensor(max(init_spread, 1e-4))
            # inverse of softplus_b: z = log(expm1(b y)) / b
            bias[:, 1:] = torch.log(torch.expm1(self.sharpness * spread)) / self.sharpness

    def forward(self, x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """Quantile forecasts.

        Args:
            x: (batch, history, n_features) float32, standardised features, oldest step first.
            base: (batch,) float32 last observed normalised power; None = zeros.

        Returns:
            (batch, horizon_steps, n_quantiles) float32 normalised power (fraction of max_w),
            >= 0 and non-decreasing along the last axis.
        """
        if x.dim() != 3 or x.shape[2] != self.n_features:
            raise ValueError(f"x must be (batch, history, {self.n_features}), got "
                             f"{tuple(x.shape)}")
        out, _ = self.lstm(x)
        summary = torch.cat([out[:, -1], x[:, -1]], dim=1)
        raw = self.head(self.drop(summary)).view(-1, self.horizon_steps, self.n_quantiles)
        if base is None:
            base = x.new_zeros(x.shape[0])
        median = F.softplus(base[:, None] + raw[..., 0], beta=self.sharpness)
        gaps = F.softplus(raw[..., 1:], beta=self.sharpness)
        return torch.cat([median[..., None], median[..., None] + torch.cumsum(gaps, dim=-1)],
                         dim=-1)
