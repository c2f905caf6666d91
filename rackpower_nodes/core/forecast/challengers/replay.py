"""The served forecaster over recorded windows, as in service: for evaluation and judging.

A :class:`~.served.ServedForecaster` is an online forecaster: what it serves at a step depends
on the errors matured before it. Its stateless ``predict`` (the default class's current choice,
no bias correction) is not what it serves, so scoring it on held-out windows
(``rackpower-eval``, the retraining judge) goes through :func:`replay`, which issues every
window through the live calls in time order from a fresh online state, exactly as the
predictor would have, the past only at each step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rackpower_nodes.core.forecast.challengers.served import DEFAULT_CLASS, ServedForecaster
from rackpower_nodes.core.forecast.series import step_index

__all__ = ["predict_as_served", "replay"]


def replay(served: ServedForecaster, windows: Any,
           class_of: Callable[[str], str] | None = None, raw: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(quantiles, variants)``: (n, H, 3) served normalised quantiles for every window of
    ``windows`` (a WindowSet) and (n, H) the variant served to each. ``raw``: the members'
    quantiles for ``windows`` (:meth:`~.served.ServedForecaster.member_quantiles`), when
    several replays share them; computed here when None.

    At each step, the values measured then (the windows' ``last``, and earlier windows'
    targets once the time has reached them, so windows ``stride`` steps apart still mature
    every horizon step) are observed first, then the forecasts issued at that step are served,
    all keys of a step in one call, as the forecast service does. ``class_of`` maps a
    component to its class (None: all :data:`~.served.DEFAULT_CLASS`). ``served``'s online
    state is reset before and after."""
    x, last = served._check_input(windows.x, windows.last)
    n, h = len(last), served.horizon_steps
    if raw is None:
        raw = served.member_quantiles(x, last)
    keys = [str(c) for c in windows.component]
    classes = [class_of(k) if class_of else DEFAULT_CLASS for k in keys]
    y = np.asarray(windows.y, np.float64)
    step_s = float(served.spec["step_s"])
    origin = step_index(np.asarray(windows.t_unix, np.float64), step_s)
    order = np.argsort(origin, kind="stable")
    out = np.empty((n, h, len(served.quantiles)), np.float32)
    used = np.zeros((n, h), np.int64)
    newest: dict[str, int] = {}             # key -> its newest window issued so far
    done: int | None = None                 # the last step whose forecasts were issued
    served.reset_online()
    for group in np.split(order, np.flatnonzero(np.diff(origin[order])) + 1):
        if not len(group):
            continue
        s = int(origin[group[0]])
        reach = max((int(origin[i]) + h for i in newest.values()), default=s - 1)
        for between in range(s if done is None else done + 1, min(s, reach + 1)):
            seen = [i for i in newest.values() if 0 < between - origin[i] <= h]
            if seen:
                served.observe(between * step_s, [keys[i] for i in seen],
                               np.array([y[i, between - origin[i] - 1] for i in seen]),
                               [classes[i] for i in seen])
        out[group] = served.serve(s * step_s, [keys[i] for i in group], last[group],
                                  raw[group], [classes[i] for i in group])
        used[group] = served.last_served
        newest.update((keys[i], int(i)) for i in group)
        done = s
    served.reset_online()
    return out, used


def predict_as_served(model: Any, windows: Any,
                      class_of: Callable[[str], str] | None = None) -> np.ndarray:
    """(n, H, 3) what ``model`` would have served for ``windows``: :func:`replay` for a
    served forecaster, its (stateless) ``predict`` for any other."""
    if isinstance(model, ServedForecaster):
        return replay(model, windows, class_of)[0]
    return model.predict(windows.x, windows.last)
