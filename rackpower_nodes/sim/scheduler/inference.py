"""An inference service's request rate (requests/s) and the GPU load it causes after a queue.

The offered rate follows the office-hours shape between ``night_frac * peak_rps`` and
``peak_rps`` with slow AR(1) wander, multiplied by surges (Poisson arrivals, each a factor from
``surge_gain`` held for a time from ``surge_s``, with 10 s ramps). It is what a front end or
exporter counts, so it is published as it happens; the GPUs serve it after a queue delay
(``delay_s``) and a first-order lag (``tau_s``), so their power follows the rate 1-3 s later.
State (AR level, surges in flight, the queue's recent input) carries from block to block.
"""
from __future__ import annotations

import math

import numpy as np

from rackpower_nodes.sim.rack_model import PulseTrain, ar1_filter, lag_filter
from rackpower_nodes.sim.scheduler.classes import InferenceSpec
from rackpower_nodes.sim.workload import WorkloadProfile

__all__ = ["RequestStream"]

_SHAPE = WorkloadProfile()
_RAMP_S = 10.0


class RequestStream:
    """Offered and served request rate (req/s) of one host's service, block by block."""

    def __init__(self, spec: InferenceSpec, dt_s: float, tz_offset_s: float,
                 rngs: list[np.random.Generator]):
        """``rngs``: two generators, the rate's wander and its surges."""
        self.spec, self._dt, self._tz = spec, dt_s, tz_offset_s
        self._rng_wander, self._rng_surge = rngs
        self._wander = 0.0
        self._surge = PulseTrain()
        self._ramp: float | None = None
        self._delay = np.zeros(max(0, round(spec.delay_s / dt_s)))
        self._served = 0.0

    def block(self, t_unix: np.ndarray, on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(offered, served) req/s at ``t_unix`` where the service runs (``on``), else 0."""
        s, n = self.spec, len(t_unix)
        shape = _SHAPE.shape(t_unix, self._tz, 0.0)
        a = math.exp(-self._dt / 600.0)
        wander = ar1_filter(0.08 * math.sqrt(1 - a * a) * self._rng_wander.standard_normal(n), a,
                            self._wander)
        self._wander = float(wander[-1])
        draws = self._rng_surge.random((n, 3))
        starts = np.flatnonzero(draws[:, 0] < s.surge_rate_per_h * self._dt / 3600.0)
        gains = s.surge_gain[0] + (s.surge_gain[1] - s.surge_gain[0]) * draws[starts, 1]
        lengths = np.rint((s.surge_s[0] + (s.surge_s[1] - s.surge_s[0]) * draws[starts, 2])
                          / self._dt)
        surge = self._surge.block(n, starts, lengths, gains - 1.0)
        if self._ramp is None:
            self._ramp = float(surge[0])
        surge = lag_filter(surge, _RAMP_S / 3.0, self._dt, self._ramp)
        self._ramp = float(surge[-1])
        level = s.night_frac + (1.0 - s.night_frac) * shape
        offered = s.peak_rps * np.maximum(level * (1.0 + surge) * np.exp(wander), 0.0)
        offered = np.where(on, offered, 0.0)
        queued = np.concatenate([self._delay, offered])
        delayed = queued[:n]
        self._delay = queued[n:]
        served = lag_filter(delayed, s.tau_s, self._dt, self._served)
        self._served = float(served[-1])
        return offered, served
