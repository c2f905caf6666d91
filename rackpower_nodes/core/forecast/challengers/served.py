"""The served forecaster: its permanent challengers, the choice among them, and its storage.

:class:`ServedForecaster` holds fitted candidate forecasters (*members*: persistence always,
then EWMA, LightGBM, the LSTM, whichever were trained, all on the same windows) and serves,
per component class, context (calm or moving, :func:`~.online.contexts`) and horizon step,
the variant (a member, raw or bias-corrected; see :mod:`.online`) with the lowest recent error
on its newest matured forecasts; but persistence until a guard has found that variant's
realised errors in that context below persistence's by the hysteresis margin, by two standard
errors at least (so persistence is served first, and after a few lucky errors still); and
never further from persistence's forecast than the loss bound lets it (:mod:`.online`: per
class and horizon step, the served error sum stays within ``1 + risk`` times persistence's,
at every moment).
The choice starts from the one made offline on the newest held-out slice of the training data
(:meth:`ServedForecaster.select_start`): per context, the best member there if it beats
persistence by the margin, else persistence.

The live calls (not thread-safe: one caller at a time, e.g. under ForecastService's lock)::

    served.forecast(last_step_t, keys, x, last, classes)   # -> (n, H, 3) normalised
    served.observe(step_t, keys, realised, classes)        # a measured step, if not via last

``forecast`` first takes ``last`` as the measured value of the step starting at
``last_step_t`` (so calling it every step is enough), then predicts with every member,
records their p50 for maturing and returns the served quantiles. ``predict`` (the
:class:`~..base.Forecaster` interface) is stateless: the current choice of the default class,
no bias correction. Saved by the registry as one model directory, each member's weight files
in ``member_<name>/``; the online state (errors, biases, choices made since) is not stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rackpower_nodes.core.forecast.base import ForecastInputError, Forecaster, ModelLoadError
from rackpower_nodes.core.forecast.baselines import (
    EwmaForecaster, LightGbmForecaster, PersistenceForecaster)
from rackpower_nodes.core.forecast.challengers.online import (
    CONTEXTS, ClassState, KeyState, ServedParams, contexts, variant_names)
from rackpower_nodes.core.forecast.lazy_classes import ForecasterClasses
from rackpower_nodes.core.forecast.series import step_index

__all__ = ["DEFAULT_CLASS", "MEMBER_CLASSES", "ServedForecaster"]

DEFAULT_CLASS = "*"
# LstmForecaster (torch) is imported when a stored member names it
MEMBER_CLASSES = ForecasterClasses(PersistenceForecaster, EwmaForecaster, LightGbmForecaster)


class ServedForecaster(Forecaster):
    """Persistence and its challengers, one served per class and horizon step.

    Args:
        params: selection and bias settings (:class:`~.online.ServedParams`).
        members: name -> forecaster; fitted ones are adopted by :meth:`fit` as they are.
    """

    name: ClassVar[str] = "served"

    def __init__(self, params: ServedParams | None = None,
                 members: Mapping[str, Forecaster] | None = None) -> None:
        super().__init__()
        self.params = params or ServedParams()
        self.members: dict[str, Forecaster] = dict(members or {})
        self.start: dict[str, list[list[int]]] = {}   # class -> [context][step] variant
        self.offline: dict[str, Any] = {}             # held-out MAE per class and member
        self.reset_online()

    # --- fitting and the offline start -----------------------------------------------------
    @property
    def variants(self) -> list[str]:
        """Variant names in index order (``m`` and ``m+bias`` for each member)."""
        return variant_names(list(self.members))

    def fit(self, train: Any, val: Any | None = None,
            class_of: Callable[[str], str] | None = None) -> ServedForecaster:
        """Fit the members not yet fitted on ``train`` (``val`` for early stopping), adding a
        persistence member if none is given, then choose the start on ``val`` (see
        :meth:`select_start`; persistence everywhere without ``val``)."""
        self.members.setdefault("persistence", PersistenceForecaster())
        for member in self.members.values():
            if member.version == "unfitted":
                member.fit(train, val)
        self.adopt_members()
        self.select_start(val, class_of)
        return self

    def adopt_members(self) -> None:
        """Take features, window spec and version from fitted members (persistence first);
        raise ForecastInputError unless all share them and persistence is among them."""
        if "persistence" not in self.members:
            raise ForecastInputError("served: the members must include 'persistence' "
                                     f"(given {sorted(self.members)})")
        self.members = {"persistence": self.members["persistence"],
                        **{k: m for k, m in self.members.items() if k != "persistence"}}
        first = self.members["persistence"]
        for name, m in self.members.items():
            if m.version == "unfitted":
                raise ForecastInputError(f"served: member {name!r} was never fitted")
            if m.feature_names != first.feature_names or m.spec != first.spec:
                raise ForecastInputError(f"served: member {name!r} was fitted on other "
                                         "windows (features or window spec) than persistence")
        self.feature_names, self.spec = list(first.feature_names), dict(first.spec)
        self.version = max(m.version for m in self.members.values())
        self.reset_online()

    def select_start(self, val: Any | None, class_of: Callable[[str], str] | None = None
                     ) -> dict[str, list[list[int]]]:
        """Start variant per class, context and horizon step from ``val``, the newest
        held-out slice of the training data: the raw member with the lowest MAE on its
        windows of that class and context if it is below ``(1 - margin)`` times
        persistence's, else persistence. ``class_of`` maps a window's component to its
        class; every class seen gets a start, and :data:`DEFAULT_CLASS` one from all windows
        (used for classes never seen)."""
        h = self.horizon_steps
        self.start = {DEFAULT_CLASS: [[0] * h for _ in CONTEXTS]}
        self.offline = {}
        if val is not None and len(val.y):
            preds = np.stack([m.predict(val.x, val.last)[..., 0] for m in self.members.values()])
            err = np.abs(preds - np.asarray(val.y, np.float64)[None])        # (C, n, H)
            ctx = contexts(val.x[:, :, self.power_index], self.params.jump_z)
            klass = np.array([class_of(str(c)) if class_of else DEFAULT_CLASS
                              for c in val.component], dtype=object)
            for k in [DEFAULT_CLASS, *sorted(set(klass.tolist()) - {DEFAULT_CLASS})]:
                rows = np.ones(len(klass), bool) if k == DEFAULT_CLASS else klass == k
                self.start[k], self.offline[k] = [], {}
                for c, name in enumerate(CONTEXTS):
                    these = rows & (ctx == c)
                    if not these.any():
                        self.start[k].append([0] * h)
                        continue
                    mae = err[:, these].mean(axis=1)                         # (C, H)
                    best = np.argmin(mae, axis=0)
                    wins = mae[best, np.arange(h)] < mae[0] * (1.0 - self.params.margin)
                    self.start[k].append([2 * int(b) if w else 0
                                          for b, w in zip(best, wins, strict=True)])
                    self.offline[k][name] = {"windows": int(these.sum()), **{
                        n: mae[i].tolist() for i, n in enumerate(self.members)}}
        self.reset_online()
        return self.start

    # --- online serving ----------------------------------------------------------------------
    def reset_online(self) -> None:
        """Forget every matured error, bias and choice made online."""
        self._keys: dict[str, KeyState] = {}
        self._classes: dict[str, ClassState] = {}
        self.last_served = np.zeros((0, 0), np.int64)   # (n, H) variants of the last serve

    def forecast(self, last_step_t: float, keys: Sequence[str], x: np.ndarray,
                 last: np.ndarray, classes: Sequence[str] | None = None) -> np.ndarray:
        """Served (n, H, 3) normalised quantiles for ``keys`` (component ids) from windows
        whose newest step starts at ``last_step_t`` (Unix s; the WindowSet's ``t_unix``);
        ``last`` (n,) is taken as that step's measured value first (:meth:`observe`).
        ``classes``: each key's component class (None: all :data:`DEFAULT_CLASS`)."""
        x, last = self._check_input(x, last)
        return self.serve(last_step_t, keys, last, self.member_quantiles(x, last), classes)

    def member_quantiles(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        """(n, C, H, 3) every member's normalised quantiles for windows ``x``, ``last``
        (stateless), in member order: what :meth:`serve` takes as ``raw``."""
        x, last = self._check_input(x, last)
        return np.stack([m.predict(x, last) for m in self.members.values()], axis=1)

    def serve(self, last_step_t: float, keys: Sequence[str], last: np.ndarray,
              raw: np.ndarray, classes: Sequence[str] | None = None) -> np.ndarray:
        """:meth:`forecast` from the members' predictions ``raw`` (n, C, H, 3), computed
        elsewhere (in batch for a replay, or in a test)."""
        keys, classes = self._keys_classes(keys, classes)
        raw = np.asarray(raw, np.float64)
        n, c, h = len(keys), len(self.members), self.horizon_steps
        if raw.shape != (n, c, h, len(self.quantiles)):
            raise ForecastInputError(f"served: member predictions of shape {raw.shape}, "
                                     f"expected {(n, c, h, len(self.quantiles))}")
        self.observe(last_step_t, keys, last, classes)
        step = self._step(last_step_t)
        out = np.empty((n, h, len(self.quantiles)))
        self.last_served = np.zeros((n, h), np.int64)
        for i, (key, klass) in enumerate(zip(keys, classes, strict=True)):
            state, cs = self._key(key, klass), self._class(klass)
            context = int(contexts(np.array(state.values)[None], self.params.jump_z)[0])
            v = self.last_served[i] = cs.served(context)
            out[i] = np.maximum(cs.limit(raw[i, 0], self._variant(raw[i], state, v)), 0.0)
            stake = np.abs(out[i, :, 0] - raw[i, 0, :, 0])
            cs.hold(stake)
            cs.release(state.record(step, raw[i, :, :, 0], context, out[i, :, 0], stake))
        return np.maximum.accumulate(out, axis=2).astype(np.float32)

    def _variant(self, raw: np.ndarray, state: KeyState, v: np.ndarray) -> np.ndarray:
        """(H, 3) quantiles of variants ``v`` (H,) from one key's raw (C, H, 3)."""
        cols = np.arange(len(v))
        shift = np.where(v % 2 == 1, state.bias[v // 2, cols], 0.0)
        return raw[v // 2, cols, :] - shift[:, None]

    def observe(self, step_t: float, keys: Sequence[str], realised: np.ndarray,
                classes: Sequence[str] | None = None) -> None:
        """Measured normalised power ``realised`` (n,) of the step starting at ``step_t``
        (Unix s) for ``keys``: the forecasts that targeted it mature (their errors now count
        for selection and bias). NaN values and repeats of a step are ignored."""
        keys, classes = self._keys_classes(keys, classes)
        realised = np.asarray(realised, np.float64).reshape(-1)
        if len(realised) != len(keys):
            raise ForecastInputError(f"served: {len(realised)} realised values for "
                                     f"{len(keys)} keys")
        step = self._step(step_t)
        touched: set[str] = set()
        for key, klass, value in zip(keys, classes, realised, strict=True):
            if not np.isfinite(value):
                continue
            errors = self._key(key, klass).mature(step, float(value))
            if errors is not None:
                raw, corrected, context, served, held, dropped = errors
                both = np.stack([raw, corrected], axis=1).reshape(-1, raw.shape[1])  # (V, H)
                cs = self._class(klass)
                cs.add(np.abs(both), context)
                cs.settle(raw[0], served, held, dropped)
                touched.add(klass)
        for klass in touched:
            self._class(klass).close_step(step)

    def diagnostics(self) -> dict[str, Any]:
        """JSON-able online state. Per class: per context the variant chosen and served per
        horizon step, the mean absolute error and count of every variant over the window;
        the guard's sums and evidence (:meth:`~.online.ClassState.evidence`: with the guard
        on, the choice serves where it is > 0) per context and the switches so far. Per
        key: its class, the context of its next forecast, the bias (normalised, per step) of
        the member served to it and whether it is subtracted."""
        names = self.variants
        out: dict[str, Any] = {"classes": {}, "keys": {}}
        for k, cs in self._classes.items():
            doc: dict[str, Any] = {"switches": cs.switches, "loss_bound": {
                "saved": cs.saved.tolist(), "persistence": cs.persistence.tolist(),
                "held": cs.held.tolist(),
                "available": cs.available().tolist() if self.params.loss_bound else None,
                "mixed": cs.bounded.tolist()}}
            for c, ctx in enumerate(CONTEXTS):
                mean, n = cs.scores(c)
                doc[ctx] = {
                    "guard": {names[v]: cs.guard[c, v].tolist() for v in range(len(names))},
                    "evidence": cs.evidence(c).tolist(),
                    "chosen": [names[v] for v in cs.chosen[c]],
                    "served": [names[v] for v in cs.served(c)],
                    "mae": {names[v]: [None if np.isnan(m) else float(m) for m in mean[v]]
                            for v in range(len(names))},
                    "errors": {names[v]: n[v].tolist() for v in range(len(names))}}
            out["classes"][k] = doc
        for key, ks in self._keys.items():
            context = int(contexts(np.array(ks.values)[None], self.params.jump_z)[0])
            v = self._class(ks.klass).served(context)
            out["keys"][key] = {"class": ks.klass, "context": CONTEXTS[context],
                                "bias": ks.bias[v // 2, np.arange(len(v))].tolist(),
                                "corrected": (v % 2 == 1).tolist()}
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per class, what an operator asks first: ``error_ratio``, the served p50's absolute
        error sum over persistence's (all horizon steps, matured forecasts; None before any
        matured); ``bound``, the most it can be (``1 + risk``; None without the bound);
        ``matured``, the forecasts matured at every horizon step; ``serving``, the variant
        served in calm at the last horizon step; ``mixed``, forecasts held closer to
        persistence's by the bound."""
        names, out = self.variants, {}
        for k, cs in self._classes.items():
            total = float(cs.persistence.sum())
            out[k] = {"error_ratio": (total - float(cs.saved.sum())) / total if total > 0
                      else None,
                      "bound": 1.0 + self.params.risk if self.params.loss_bound else None,
                      "matured": int(cs.matured.min()), "serving": names[cs.served(0)[-1]],
                      "mixed": int(cs.bounded.sum())}
        return out

    def _keys_classes(self, keys, classes) -> tuple[list[str], list[str]]:
        keys = [str(k) for k in keys]
        classes = [DEFAULT_CLASS] * len(keys) if classes is None else [str(c) for c in classes]
        if len(classes) != len(keys):
            raise ForecastInputError(f"served: {len(classes)} classes for {len(keys)} keys")
        if self.version == "unfitted" or not self.start:
            raise ForecastInputError("served: forecast before fit or load")
        return keys, classes

    def _step(self, t_unix: float) -> int:
        return int(step_index(float(t_unix), float(self.spec["step_s"])))

    def _key(self, key: str, klass: str) -> KeyState:
        state = self._keys.get(key)
        if state is not None and state.klass != klass:   # moved: its stakes leave with it
            self._class(state.klass).release(state.pending())
            state = None
        if state is None:
            state = KeyState(klass, len(self.members), self.horizon_steps,
                             self.history_steps, self.params)
            self._keys[key] = state
        return state

    def _class(self, klass: str) -> ClassState:
        state = self._classes.get(klass)
        if state is None:
            allowed = np.array([self.params.correct_bias or v % 2 == 0
                                for v in range(2 * len(self.members))])
            start = self.start.get(klass, self.start[DEFAULT_CLASS])
            state = ClassState(np.asarray(start), 2 * len(self.members), self.params, allowed)
            self._classes[klass] = state
        return state

    # --- the Forecaster interface and storage -------------------------------------------------
    def predict(self, x: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Stateless: the default class's current calm choice without bias correction."""
        if not self.start:
            raise ForecastInputError("served: predict before fit or load")
        raw = self.member_quantiles(x, last)
        v = self._class(DEFAULT_CLASS).chosen[0] // 2
        out = raw[:, v, np.arange(self.horizon_steps), :]
        return np.maximum.accumulate(np.maximum(out, 0.0), axis=2).astype(np.float32)

    def hyperparameters(self) -> dict[str, Any]:
        return asdict(self.params)

    def state(self) -> dict[str, Any]:
        members = {name: {"class": type(m).__name__, "version": m.version,
                          "hyperparameters": m.hyperparameters(), "state": m.state()}
                   for name, m in self.members.items()}
        return {"members": members, "start": self.start, "offline": self.offline}

    @classmethod
    def from_config(cls, hyperparameters: dict, state: dict,
                    member_class: Callable[[str, str], type[Forecaster] | None] | None = None
                    ) -> ServedForecaster:
        """``member_class(class name, member name)`` picks each member's class (registry.py:
        the LSTM's runtime); by default the stored class, from MEMBER_CLASSES."""
        members = {}
        for name, doc in dict(state["members"]).items():
            kind = (member_class(doc["class"], name) if member_class is not None
                    else MEMBER_CLASSES.get(doc["class"]))
            if kind is None:
                raise ValueError(f"member {name!r}: unknown class {doc['class']!r} (known: "
                                 f"{sorted(MEMBER_CLASSES)})")
            members[name] = kind.from_config(dict(doc["hyperparameters"]), dict(doc["state"]))
            members[name].version = str(doc["version"])
        model = cls(ServedParams(**hyperparameters), members)
        model.start = {str(k): [[int(v) for v in row] for row in s]
                       for k, s in dict(state["start"]).items()}
        model.offline = dict(state.get("offline", {}))
        return model

    def save_weights(self, directory: Path) -> list[str]:
        files = []
        for name, m in self.members.items():
            sub = directory / f"member_{name}"
            sub.mkdir(parents=True, exist_ok=True)
            files += [f"{sub.name}/{f}" for f in m.save_weights(sub)]
        return files

    def load_weights(self, directory: Path) -> None:
        meta = directory / "model.json"
        if "persistence" not in self.members or DEFAULT_CLASS not in self.start:
            raise ModelLoadError(meta, "served: no persistence member or no default start")
        width = 2 * len(self.members)
        for k, s in self.start.items():
            if (len(s) != len(CONTEXTS) or any(len(r) != self.horizon_steps for r in s)
                    or not all(0 <= v < width for r in s for v in r)):
                raise ModelLoadError(meta, f"served: start of class {k!r} is {s}, expected "
                                     f"{len(CONTEXTS)} x {self.horizon_steps} variants in "
                                     f"0..{width - 1}")
        for name, m in self.members.items():
            m.feature_names, m.spec = list(self.feature_names), dict(self.spec)
            m.load_weights(directory / f"member_{name}")
        self.reset_online()
