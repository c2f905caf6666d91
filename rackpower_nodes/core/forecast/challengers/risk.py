"""The loss bound's risk chosen by leave-one-group-out on the training data.

The loss bound (:class:`~.online.ServedParams` ``risk``) lets the served forecaster lose up to
``risk`` times persistence's error sum beyond what it has saved: ``risk`` 0 serves persistence
alone, a larger one lets the challengers serve sooner and lose more where they turn out worse.
Which is right depends on how well the members carry over to data they were not trained on,
and that can be measured before service, on the training data alone: hold each group (for BSC
traces, a workload) out in turn, fit the served forecaster on the others, replay it as served
on the held-out group with each candidate risk (the same members), and keep the candidate
that never lost to persistence, at any horizon step of any held-out group, with the lowest
mean ratio to persistence (ties: the smaller risk). Risk 0 always qualifies (it serves
persistence's forecast exactly), so with 0 among the candidates a choice always exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from rackpower_nodes.core.forecast.challengers.replay import replay
from rackpower_nodes.core.forecast.challengers.served import ServedForecaster
from rackpower_nodes.core.forecast.features import group_of, leave_one_group_out

__all__ = ["RISKS", "choose_risk", "risk_ratios", "select_risk"]

RISKS = (0.0, 0.001, 0.003, 0.01, 0.03)     # 0 (persistence alone), and 1/10 to 3x the default


def risk_ratios(served: ServedForecaster, windows: Any, class_of: Callable[[str], str] | None,
                risks: Sequence[float]) -> np.ndarray:
    """(R, H) the served p50's MAE over ``windows`` relative to persistence's, per candidate
    risk and horizon step, replayed as served (:func:`~.replay.replay`) from the same members
    (1.0 where both are exact, inf where only persistence is). ``served.params`` is left as
    it was."""
    raw = served.member_quantiles(windows.x, windows.last)
    y = np.asarray(windows.y, np.float64)
    pers = np.abs(raw[:, 0, :, 0].astype(np.float64) - y).mean(axis=0)          # (H,)
    params, out = served.params, []
    try:
        for risk in risks:
            served.params = replace(params, risk=float(risk))
            p50 = replay(served, windows, class_of, raw)[0][..., 0].astype(np.float64)
            mae = np.abs(p50 - y).mean(axis=0)
            out.append(np.where(pers > 0, mae / np.where(pers > 0, pers, 1.0),
                                np.where(mae > 0, np.inf, 1.0)))
    finally:
        served.params = params
        served.reset_online()
    return np.array(out)


def choose_risk(ratios: dict[str, np.ndarray], risks: Sequence[float]) -> dict[str, Any]:
    """The candidate of ``risks`` to serve with, from ``ratios`` (group -> (R, H) from
    :func:`risk_ratios`): among those at or below 1.0 at every horizon step of every group,
    the lowest mean ratio (mean over groups of the mean over steps; ties: the smaller risk);
    when none qualifies (0 not among the candidates), the smallest risk. Returns ``risk``,
    ``qualified`` (bool), and per candidate its ``mean`` and ``worst`` ratio and the
    ``groups`` where it lost, for the model's record."""
    if not ratios:
        raise ValueError("choose_risk: no held-out group to judge the risk on")
    risks = [float(r) for r in risks]
    table = np.stack([np.asarray(ratios[g], np.float64) for g in ratios])       # (G, R, H)
    if table.shape[1] != len(risks):
        raise ValueError(f"choose_risk: {table.shape[1]} ratios per group for "
                         f"{len(risks)} risks")
    mean = table.mean(axis=(0, 2))
    worst = table.max(axis=(0, 2))
    ok = worst <= 1.0
    best = min(range(len(risks)), key=lambda i: (not ok[i], mean[i] if ok[i] else 0.0,
                                                 risks[i]))
    over = table.max(axis=2) > 1.0                                               # (G, R)
    lost = [[g for g, o in zip(ratios, over[:, i], strict=True) if o]
            for i in range(len(risks))]
    return {"risk": risks[best], "qualified": bool(ok[best]),
            "candidates": [{"risk": r, "mean": float(mean[i]), "worst": float(worst[i]),
                            "groups_lost": lost[i]} for i, r in enumerate(risks)]}


def select_risk(windows: Any, fit: Callable[[Any], ServedForecaster],
                class_of: Callable[[str], str] | None = None,
                risks: Sequence[float] = RISKS,
                key: Callable[[str], str] = group_of) -> dict[str, Any]:
    """:func:`choose_risk` over ``windows`` (a WindowSet) held out one ``key`` group at a time:
    ``fit(train)`` returns a served forecaster fitted on the other groups' windows (its own
    split for early stopping and the start), replayed on the group's. Adds ``groups`` (the
    held-out group names) to the result. Raises ValueError with fewer than two groups."""
    groups = sorted({key(str(c)) for c in windows.component})
    if len(groups) < 2:
        raise ValueError(f"select_risk: the training windows hold {len(groups)} group(s) "
                         f"({', '.join(groups) or 'none'}); leave-one-group-out needs two")
    ratios = {}
    for group, train, test in leave_one_group_out(windows, key):
        ratios[group] = risk_ratios(fit(train), test, class_of, risks)
    return {**choose_risk(ratios, risks), "groups": list(ratios)}
