"""The model in service: live windows in, per-component quantile forecasts in watts out.

`ForecastService` owns the `OnlineWindows` and the forecaster in service. Swapping models is
atomic: a new model is loaded and checked off the inference path, then replaces the reference
in one step, so a cycle runs with either the old model or the new one, never with neither.
A component whose inputs are not ready (warming up, stale, after a gap), and every component
while no model is in service or the model fails, gets the persistence fallback with a wide
margin, and each forecast says so.

While a model serves, the service feeds it what it learns online (:mod:`.adaptive`): each
closed step's means mature the forecasts of a served forecaster with challengers (its choice
per component class and its bias follow the newest errors) and the window peaks of the peak
calibrator, which shifts the published p50/p90/p99 so that their max over the actuation
window (``calibration``) is calibrated. Both start afresh with each model loaded.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.forecast.adaptive import CalibrationSettings, ServingState
from rackpower_nodes.core.forecast.base import Forecaster, ModelLoadError
from rackpower_nodes.core.forecast.features import WindowSpec, feature_names
from rackpower_nodes.core.forecast.online import EVENTS_STALE_S, OnlineWindows
from rackpower_nodes.core.forecast.registry import load_model
from rackpower_nodes.core.schedule import WorkloadSchedule
from rackpower_nodes.core.workload_events import WorkloadEvents

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Forecast:
    """One forecast of every component; arrays (components, horizon) in W."""

    t_unix: float              # origin: the newest input step's end, s
    step_s: float
    p50_w: np.ndarray
    p90_w: np.ndarray
    p99_w: np.ndarray
    last_w: np.ndarray         # (components,), NaN where never measured
    fallback: np.ndarray       # (components,) bool
    reason: str                # why any component is in fallback ('' when none)
    model_name: str
    model_version: str


class ForecastService:
    """Forecasts for `components` with the model in service or the persistence fallback.

    Args:
        components, idle_w, max_w: component ids and their idle and maximum power, W
            (`max_w` scales the model's inputs and outputs, as in training).
        schedule: the known workload schedule, for job features.
        stale_after_s: inputs older than this put a component in fallback, s.
        margin_frac, min_margin_w: fallback headroom: p90 = last + max(m * last, min),
            p99 = last + 2 * max(m * last, min).
        spec: window geometry used while no model is loaded (a model brings its own).
        events_stale_after_s: a workload-events snapshot older than this is unknown ("no
            job"), s; before the first snapshot the schedule gives the event features.
        calibration: the peak calibration of the published quantiles and the actuation
            window it calibrates (:class:`~.adaptive.CalibrationSettings`; on by default).
    """

    def __init__(self, components, idle_w, max_w, schedule: WorkloadSchedule | None = None,
                 stale_after_s: float = 1.0, margin_frac: float = 0.25,
                 min_margin_w: float = 20.0, spec: WindowSpec = WindowSpec(),
                 events_stale_after_s: float = EVENTS_STALE_S,
                 calibration: CalibrationSettings = CalibrationSettings()):
        self.components = list(components)
        self._idle, self._max = np.asarray(idle_w, float), np.asarray(max_w, float)
        self._schedule, self._stale = schedule, stale_after_s
        self._events_stale = events_stale_after_s
        self._snapshots: list[WorkloadEvents] = []
        self._margin = (margin_frac, min_margin_w)
        self._lock = threading.Lock()
        self._serve_lock = threading.Lock()          # one forecast at a time: online state
        self._calibration = calibration
        self._state: ServingState | None = None
        self._model: Forecaster | None = None
        self._model_error = "no model in service"
        self._windows = self._new_windows(spec)

    @property
    def model(self) -> Forecaster | None:
        return self._model

    @property
    def spec(self) -> WindowSpec:
        return self._windows.spec

    def load(self, path: str, runtime: str = "torch", threads: int = 1) -> Forecaster:
        """Load the model in `path` and put it in service; raises ModelLoadError (the model in
        service, if any, stays). `runtime` and `threads`: how an LSTM is served and an ONNX
        session's threads (registry.py's ``load_model``)."""
        model = load_model(path, runtime=runtime, threads=threads)
        spec = WindowSpec(**{k: tuple(v) if k == "coarse" else v
                             for k, v in model.spec.items() if k != "stride"})
        if model.feature_names != feature_names(spec):
            raise ModelLoadError(path, "its features are not the ones this predictor builds "
                                 f"({len(model.feature_names)} stored)")
        if model.history_steps != spec.history_steps:
            raise ModelLoadError(path, "window_spec history_steps disagrees with its features")
        try:
            state = ServingState(model, spec, self.components, self._max, self._calibration)
        except ValueError as exc:
            raise ModelLoadError(path, f"cannot serve it calibrated: {exc}") from exc
        with self._lock:
            if spec != self._windows.spec:
                self._windows = self._new_windows(spec)    # history rebuilds: fallback meanwhile
            self._model, self._model_error, self._state = model, "", state
        _log.info("model in service: %s %s from %s", model.name, model.version, path)
        return model

    def unload(self, reason: str) -> None:
        """Take the model out of service; forecasts use the fallback, saying `reason`."""
        with self._lock:
            self._model, self._model_error, self._state = None, reason, None

    def push_samples(self, msg) -> None:
        with self._lock:
            self._windows.push_samples(msg)

    def push_host_telemetry(self, msg) -> None:
        with self._lock:
            self._windows.push_host_telemetry(msg)

    def push_workload_events(self, events: WorkloadEvents) -> None:
        """A scheduler's snapshot of running and pending jobs; the event features come from
        the newest one from now on (stale after ``events_stale_after_s``: "no job")."""
        with self._lock:
            self._windows.push_workload_events(events)
            self._snapshots = [events]         # replayed into new windows on a model swap

    def push_power_block(self, t0_unix: float, sample_period_s: float, component_ids,
                         power_w) -> None:
        """Samples (components, samples) in W without a message (the fast-mode evaluation)."""
        with self._lock:
            self._windows.push_power_block(t0_unix, sample_period_s, component_ids, power_w)

    def push_telemetry(self, t_unix: float, host_id: str, values_6) -> None:
        """One host's telemetry vector without a message (the fast-mode evaluation)."""
        with self._lock:
            self._windows.push_telemetry(t_unix, host_id, values_6)

    def forecast(self, t_unix: float) -> Forecast:
        """Forecast every component from the inputs at `t_unix` (Unix s)."""
        with self._serve_lock:
            return self._forecast(t_unix)

    def online_state(self) -> dict:
        """What the model in service learnt online: the served forecaster's diagnostics
        (``served``) and the calibration offsets added at the last forecast (``offsets_w``,
        per component p50/p90/p99, W, NaN in fallback); empty without a model. Waits for a
        forecast in progress."""
        with self._serve_lock:
            state = self._state
            if state is None:
                return {}
            out: dict = {}
            if state.served:
                out["served"] = state.model.diagnostics()
            offsets = state.offsets_w()
        if offsets is not None:
            out["offsets_w"] = dict(zip(self.components, offsets.tolist(), strict=True))
        return out

    def served_summary(self) -> dict:
        """The served forecaster's :meth:`~.challengers.ServedForecaster.summary` per
        component class; empty for any other model or none. Waits for a forecast in
        progress."""
        with self._serve_lock:
            state = self._state
            return state.model.summary() if state is not None and state.served else {}

    def _forecast(self, t_unix: float) -> Forecast:
        with self._lock:
            model, error, spec, state = self._model, self._model_error, self._windows.spec, \
                self._state
            # the features only for a model: persistence (the fallback) reads `last` alone
            x, last, ready, _ = self._windows.window(t_unix, features=model is not None)
            last_step = self._windows.last_steps()
            if state is not None:
                steps, means = self._windows.closed_steps(state.last_fed, spec.warmup_steps)
        n, h = len(self.components), spec.horizon_steps
        q = np.zeros((n, h, 3), np.float32)
        use = ready & (model is not None)
        reason = error if model is None else ""
        if state is not None:
            state.feed(steps, means)
        if use.any():
            try:
                q[use] = state.predict(x, last, use, last_step)
            except (ValueError, RuntimeError) as exc:     # a broken model must not stop us
                _log.error("model %s failed, using the fallback: %s", model.version, exc)
                use[:] = False
                reason = f"model failed: {exc}"
        q *= self._max[:, None, None].astype(np.float32)
        if state is not None and use.any():
            q = state.calibrate(q, use, last_step).astype(np.float32)
        if (~use).any():
            q[~use] = self._fallback(last[~use] * self._max[~use], self._max[~use], h)
            if not reason:
                reason = "inputs stale or warming up: " + ", ".join(
                    c for c, u in zip(self.components, use) if not u)
        return Forecast(
            t_unix=float(t_unix), step_s=spec.step_s, p50_w=q[..., 0], p90_w=q[..., 1],
            p99_w=q[..., 2], last_w=(last * self._max).astype(np.float32), fallback=~use,
            reason=reason, model_name=model.name if model is not None else "persistence",
            model_version=model.version if model is not None else "fallback")

    def _fallback(self, last_w: np.ndarray, max_w: np.ndarray, horizon: int) -> np.ndarray:
        """Persistence with a wide margin, (n, horizon, 3) W; never measured → max_w."""
        base = np.where(np.isfinite(last_w), np.maximum(last_w, 0.0), max_w)
        margin = np.maximum(self._margin[0] * base, self._margin[1])
        out = np.stack([base, base + margin, base + 2 * margin], axis=-1)
        return np.repeat(out[:, None, :], horizon, axis=1).astype(np.float32)

    def _new_windows(self, spec: WindowSpec) -> OnlineWindows:
        windows = OnlineWindows(spec, self.components, self._idle, self._max, self._schedule,
                                stale_s=self._stale, events_stale_s=self._events_stale)
        for snap in self._snapshots:
            windows.push_workload_events(snap)
        return windows
