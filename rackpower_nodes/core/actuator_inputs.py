"""What the `pdu_actuator` holds of its inputs between control steps, with no rclpy.

:func:`forecast_view` puts a ``rackpower/msg/PowerForecast`` (an rclpy or rosbags message,
read through its attributes) into the controller's component order. :class:`SampleInputs`
keeps the newest power per component from ``power_samples`` batches and when it arrived: a
batch is fresh when its header.stamp advanced over the previous batch's and it holds a finite
value for one of the components; only a fresh batch updates the measurements and the time of
the last fresh batch (a stuck board clock or an all-NaN stream ends in safe mode like a dead
sensor). Powers in W; receipt times are monotonic s, stamps Unix s.
"""
from __future__ import annotations

import math

import numpy as np

from rackpower_nodes.core.allocation import ForecastView
from rackpower_nodes.core.forecast.messages import stamp_unix

__all__ = ["SampleInputs", "forecast_view"]


def forecast_view(msg, components: tuple[str, ...]) -> ForecastView:
    """A PowerForecast in the controller's component order (NaN rows for missing ones)."""
    h = int(msg.horizon_steps)
    n = len(components)
    out = {q: np.full((n, h), np.nan) for q in ("p50", "p90", "p99")}
    pos = {cid: i for i, cid in enumerate(msg.channel_ids)}
    rows = [(i, pos[cid]) for i, cid in enumerate(components) if cid in pos]
    if rows and h:
        mine, theirs = (np.array(a) for a in zip(*rows))
        for q, arr in (("p50", msg.p50_w), ("p90", msg.p90_w), ("p99", msg.p99_w)):
            flat = np.asarray(arr, dtype=float)
            if flat.size == len(msg.channel_ids) * h:
                out[q][mine] = flat.reshape(-1, h)[theirs]
    return ForecastView(stamp_unix(msg.header.stamp), float(msg.step_s), out["p50"],
                        out["p90"], out["p99"],
                        model=f"{msg.model_name} {msg.model_version}".strip(),
                        fallback=np.full(n, bool(msg.fallback)))


class SampleInputs:
    """The newest measured power per component (`names`, the controller's order)."""

    def __init__(self, names: tuple[str, ...]):
        n = len(names)
        self.measured_w = np.full(n, np.nan)
        self.measured_t = np.full(n, -np.inf)          # monotonic receipt time
        self.fresh_t = -math.inf     # monotonic receipt of the last fresh batch
        self.stamp = -math.inf       # header.stamp of the previous batch, s
        self.fault = ""              # why the batches since the last fresh one were not
        self.index = {cid: i for i, cid in enumerate(names)}

    def update(self, stamp: float, channel_ids, mean_power_w, now: float) -> None:
        """One batch: its header.stamp (Unix s), channel ids and mean power per channel (W),
        received at `now` (monotonic s)."""
        previous = self.stamp
        self.stamp = stamp
        if not stamp > previous:
            self.fault = "header.stamp not advancing"
        else:
            fresh = False
            means = np.asarray(mean_power_w, dtype=float)
            for cid, value in zip(channel_ids, means):
                i = self.index.get(cid)
                if i is not None and math.isfinite(value):
                    self.measured_w[i] = value
                    self.measured_t[i] = now
                    fresh = True
            if fresh:
                self.fresh_t, self.fault = now, ""
            else:
                self.fault = "every value NaN"

    def measured(self, now: float, stale_s: float) -> np.ndarray:
        """The newest power per component (W), NaN where it arrived more than `stale_s` before
        `now` (monotonic s)."""
        return np.where(now - self.measured_t <= stale_s, self.measured_w, np.nan)
