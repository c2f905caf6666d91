"""Forecast accuracy metrics and the tables `rackpower-eval` prints.

Arrays: ``y`` (n, horizon) actual power, ``pred`` (n, horizon, Q) quantile forecasts in the same
unit (W, or normalised power), ``quantiles`` the Q levels (e.g. 0.5, 0.9, 0.99); the point
forecast is the 0.5 quantile. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAPE_FLOOR", "METRIC_COLUMNS", "comparison_report", "coverage", "format_table",
           "metric_rows", "pinball_loss", "point_metrics", "score"]

MAPE_FLOOR = 1e-6     # actuals with |y| below this are left out of MAPE (same unit as y)
METRIC_COLUMNS = ["mae", "rmse", "mape", "p95_ae", "pinball", "cov_p50", "cov_p90", "cov_p99"]


def pinball_loss(y: np.ndarray, pred: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """Mean pinball (quantile) loss per quantile.

    ``L_q = mean(max(q (y - p), (q - 1) (y - p)))`` over every element of ``y``.

    Args:
        y: (...) actuals.
        pred: (..., Q) quantile forecasts.
        quantiles: Q quantile levels in (0, 1).

    Returns:
        (Q,) float64 loss in the unit of y.
    """
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    q = np.asarray(quantiles, np.float64)
    if pred.shape != y.shape + q.shape:
        raise ValueError(f"pred shape {pred.shape} must be y shape {y.shape} + ({q.size},)")
    diff = y[..., None] - pred
    loss = np.maximum(q * diff, (q - 1.0) * diff)
    return loss.reshape(-1, q.size).mean(axis=0)


def coverage(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Fraction of actuals at or below each quantile forecast.

    Args:
        y: (...) actuals; pred: (..., Q) quantile forecasts.

    Returns:
        (Q,) float64 in [0, 1]; a calibrated q-quantile covers a fraction q.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    if pred.shape[:-1] != y.shape:
        raise ValueError(f"pred shape {pred.shape} must be y shape {y.shape} + (Q,)")
    return (y[..., None] <= pred).reshape(-1, pred.shape[-1]).mean(axis=0)


def point_metrics(y: np.ndarray, point: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, MAPE (%) and the 95th percentile of the absolute error.

    MAPE leaves out actuals with |y| < MAPE_FLOOR (NaN when none remain).

    Args:
        y: (...) actuals; point: same shape, point forecasts (same unit).
    """
    y, point = np.asarray(y, np.float64), np.asarray(point, np.float64)
    if y.shape != point.shape:
        raise ValueError(f"point shape {point.shape} differs from y shape {y.shape}")
    err = np.abs(point - y).ravel()
    if err.size == 0:
        return dict.fromkeys(("mae", "rmse", "mape", "p95_ae"), float("nan"))
    nz = np.abs(y.ravel()) >= MAPE_FLOOR
    mape = float(np.mean(err[nz] / np.abs(y.ravel()[nz])) * 100) if nz.any() else float("nan")
    return {"mae": float(err.mean()), "rmse": float(np.sqrt(np.mean(err ** 2))),
            "mape": mape, "p95_ae": float(np.percentile(err, 95))}


def score(y: np.ndarray, pred: np.ndarray, quantiles: Sequence[float]) -> dict[str, float]:
    """Every metric for one slice: point metrics of the median, mean pinball loss over the
    quantiles (``pinball``), and coverage per quantile (``cov_p50``, ``cov_p90``, ...)."""
    out = point_metrics(y, pred[..., list(quantiles).index(0.5)])
    if y.size == 0:
        out["pinball"] = float("nan")
        out.update({_cov_key(q): float("nan") for q in quantiles})
        return out
    out["pinball"] = float(pinball_loss(y, pred, quantiles).mean())
    out.update({_cov_key(q): float(c) for q, c in zip(quantiles, coverage(y, pred))})
    return out


def _cov_key(q: float) -> str:
    return f"cov_p{round(q * 100):d}"


def metric_rows(y: np.ndarray, pred: np.ndarray, component: np.ndarray,
                quantiles: Sequence[float], steps: Sequence[int] | None = None,
                step_s: float = 1.0) -> list[dict]:
    """Metric table rows per horizon step (all components) and per component (those steps).

    Args:
        y: (n, horizon) actuals; pred: (n, horizon, Q) forecasts, same unit.
        component: (n,) component name per window.
        quantiles: Q levels; steps: 1-based horizon steps to report (None = all).
        step_s: step length (s), to label rows with the lead time.

    Returns:
        Dicts with ``scope`` ("step" / "component" / "all"), ``key``, ``lead_s`` and the metrics
        of :func:`score`.
    """
    steps = list(range(1, y.shape[1] + 1)) if steps is None else list(steps)
    bad = [s for s in steps if not 1 <= s <= y.shape[1]]
    if bad:
        raise ValueError(f"horizon steps {bad} outside 1..{y.shape[1]}")
    idx = np.asarray(steps) - 1
    rows = [{"scope": "step", "key": str(s), "lead_s": s * step_s,
             **score(y[:, s - 1], pred[:, s - 1], quantiles)} for s in steps]
    component = np.asarray(component).astype(str)
    for name in sorted(set(component.tolist())):
        m = component == name
        rows.append({"scope": "component", "key": name, "lead_s": float("nan"),
                     **score(y[m][:, idx], pred[m][:, idx], quantiles)})
    rows.append({"scope": "all", "key": "all", "lead_s": float("nan"),
                 **score(y[:, idx], pred[:, idx], quantiles)})
    return rows


def format_table(rows: Sequence[dict], columns: Sequence[str], floatfmt: str = "{:.4g}") -> str:
    """Markdown table of ``rows`` restricted to ``columns`` (floats with ``floatfmt``)."""
    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "nan" if np.isnan(v) else floatfmt.format(v)
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def comparison_report(y: np.ndarray, preds: dict[str, np.ndarray], last: np.ndarray,
                      component: np.ndarray, horizons: Sequence[int], step_s: float,
                      quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> str:
    """Markdown tables comparing models, each MAE also as a ratio to persistence's.

    Args:
        y: (n, horizon) actuals (W); preds: model name -> (n, horizon, Q) forecasts (W);
        last: (n,) last observed power (W), the persistence forecast; component: (n,) names;
        horizons: 1-based steps to report; step_s: step length (s).

    Returns:
        Tables per horizon step (plus 'all' = the steps pooled), per component and, when
        names look like ``<server>/<workload>``, per server with the mean ratio over servers.
    """
    idx = np.asarray(horizons) - 1
    pers = np.abs(y - np.asarray(last, np.float64)[:, None])     # persistence error
    comp = np.asarray(component).astype(str)
    by_step, by_comp = [], []
    for name, pred in preds.items():
        for r in metric_rows(y, pred, comp, quantiles, steps=horizons, step_s=step_s):
            if r["scope"] == "step":
                ref = pers[:, int(r["key"]) - 1]
            elif r["scope"] == "component":
                ref = pers[comp == r["key"]][:, idx]
            else:
                ref = pers[:, idx]
            r.update(model=name, vs_persistence=r["mae"] / max(float(ref.mean()), 1e-12))
            (by_comp if r["scope"] == "component" else by_step).append(r)
    cols = ["model", "key", "lead_s", *METRIC_COLUMNS, "vs_persistence"]
    out = [f"## Per horizon step (W; step {step_s} s; key = step, 'all' = steps "
           f"{list(horizons)})", format_table(by_step, cols),
           "## Per component (steps " + ",".join(map(str, horizons)) + ")",
           format_table(sorted(by_comp, key=lambda r: (r["key"], r["model"])),
                        cols[:2] + cols[3:])]
    if any("/" in c for c in comp):
        out += _server_tables(y, preds, pers, comp, list(horizons))
    return "\n\n".join(out)


def _server_tables(y: np.ndarray, preds: dict[str, np.ndarray], pers: np.ndarray,
                   comp: np.ndarray, horizons: list[int]) -> list[str]:
    """Per-server MAE and MAE / persistence MAE per horizon step, and their mean."""
    servers = np.array([c.rsplit("/", 1)[0] for c in comp])
    rows = []
    for s in sorted(set(servers.tolist())):
        m = servers == s
        for name, pred in preds.items():
            row = {"server": s, "model": name}
            for h in horizons:
                row[f"mae_h{h}"] = float(np.abs(pred[m, h - 1, 0] - y[m, h - 1]).mean())
                row[f"ratio_h{h}"] = row[f"mae_h{h}"] / max(float(pers[m, h - 1].mean()), 1e-12)
            row["ratio_mean"] = float(np.mean([row[f"ratio_h{h}"] for h in horizons]))
            rows.append(row)
    cols = ["server", "model"] + [f"{k}_h{h}" for h in horizons for k in ("mae", "ratio")]
    summary = "\n".join(
        f"- {name}: mean over servers of MAE / persistence MAE = "
        f"{np.mean([r['ratio_mean'] for r in rows if r['model'] == name]):.3f}"
        for name in preds)
    return ["## Per server: MAE (W) and ratio to persistence MAE",
            format_table(rows, cols + ["ratio_mean"]), summary]
