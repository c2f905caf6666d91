"""Off-peak retraining, part 3: judging. Champion, challenger and persistence, then the verdict.

:func:`evaluate` scores every model on the same held-out windows; :func:`decide` promotes the
challenger only when it beats the champion (or, without one, persistence) by ``margin_frac``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from rackpower_nodes.core.retrain.policy import RetrainError

__all__ = ["decide", "evaluate"]


def evaluate(models: dict[str, Any], test) -> dict[str, dict[str, float]]:
    """MAE and mean pinball loss (W) of each forecaster on the same windows, plus
    ``persistence`` (the last input step held, MAE only). Windows: ``test.x`` etc. A served
    forecaster is scored as it would have served them (challengers/replay.py: through its
    live calls in time order from a fresh state, components classed as in service), not by
    its stateless predict."""
    from rackpower_nodes.core.forecast.challengers.replay import predict_as_served
    from rackpower_nodes.core.forecast.metrics import score
    from rackpower_nodes.core.forecast.peak import class_of

    if not len(test):
        raise RetrainError("the held-out slice has no windows; raise holdout_s or record more")
    scale = np.asarray(test.scale_w, np.float64)
    y = test.y * scale[:, None]
    out = {}
    for name, model in models.items():
        pred = predict_as_served(model, test, class_of).astype(np.float64) * scale[:, None, None]
        s = score(y, pred, model.quantiles)
        out[name] = {"mae_w": s["mae"], "pinball_w": s["pinball"], "cov_p90": s["cov_p90"],
                     "windows": len(test)}
    pers = np.abs(y - (np.asarray(test.last, np.float64) * scale)[:, None])
    out["persistence"] = {"mae_w": float(pers.mean()), "windows": len(test)}
    return out


def decide(metrics: dict[str, dict[str, float]], metric: str = "mae",
           margin_frac: float = 0.02) -> tuple[bool, str]:
    """(promote, reason): the challenger's ``metric`` (``mae`` or ``pinball``, W) must be below
    the champion's x (1 - ``margin_frac``). Without a scored champion (none yet, unloadable,
    other features) its MAE must beat persistence's MAE by the same margin."""
    if metric not in ("mae", "pinball"):
        raise RetrainError(f"metric={metric!r}, expected 'mae' or 'pinball'")
    key = f"{metric}_w"
    if metrics.get("champion", {}).get(key) is not None:
        ref_name = "champion"
    else:
        ref_name, key = "persistence", "mae_w"          # persistence has no quantiles
    chal = metrics.get("challenger", {}).get(key)
    ref = metrics.get(ref_name, {}).get(key)
    if chal is None or ref is None or not (math.isfinite(chal) and math.isfinite(ref)):
        return False, f"no finite {key} for the challenger ({chal}) or the {ref_name} ({ref})"
    need = ref * (1.0 - margin_frac)
    verdict = f"challenger {key} {chal:.3f} W vs {ref_name} {ref:.3f} W (needs < {need:.3f})"
    return chal < need, verdict

