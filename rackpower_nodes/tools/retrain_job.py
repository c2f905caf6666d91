"""One retraining job, run in its own low-priority process by the retrain_scheduler.

    python -m rackpower_nodes.tools.retrain_job --request JOBDIR/request.json

The request (JSON) names the data ``sources`` (``{"kind": "bag" | "sim" | "plain", "path":
..., "info": {...}}``), ``namespace`` (bags), ``errors`` (``[t_unix, component, |error_w|]``
logged AllocationErrors; those recorded in the bags are added), ``out_root`` (the model
registry), ``champion`` (its model folder or null), ``spec`` (WindowSpec fields for a first
model; a champion's spec wins, so both are scored on the same windows), ``model`` (the
challenger: ``lstm``; ``served``, the served forecaster over persistence, EWMA, LightGBM and
the LSTM, with a served champion's settings (ServedParams: its risk); or ``auto``, the default:
the champion's kind, an LSTM without one), ``lstm`` (LstmParams fields), ``threads`` (torch and
LightGBM threads), ``nice`` (niceness added), ``holdout_s`` (s), ``val_frac``, ``max_windows``,
``weighting`` (``max_weight``, ``error_ref_w`` W, ``radius_s`` s), ``flagged`` (FlaggedInterval
dicts: component, start_unix, end_unix or null while still faulty, cause), ``exclusion``
(``margin_s``: each flag widened this much before its start, s), ``seed``, ``report`` and
``progress`` (paths).

It loads the data, leaves out the windows of flagged components that overlap their flagged
intervals (core/retrain/exclusion.py; what was left out goes into ``trained_on["excluded"]``
and ``excluded.json`` beside the model's model.json), holds out the last ``holdout_s`` s,
repeats windows near large errors, trains the challenger, saves it into ``out_root``, scores
champion, challenger and persistence on the same held-out windows (a served forecaster as
served: replayed through its live calls) and writes ``report``
(``ok``, ``model_dir``, ``metrics`` W, ``trained_on``, ``problems``). Exit 0 on success; 1
with ``error`` in the report and on stderr when it fails; 2 for an unreadable request.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

_log = logging.getLogger("rackpower_retrain_job")
EXCLUDED_FILE = "excluded.json"     # beside model.json: the data left out as faulty
MODELS = ("auto", "lstm", "served")  # the request's ``model``: the kind of challenger
SPEC_DEFAULT = {"step_s": 0.1, "history_steps": 50, "horizon_steps": 50, "coarse": [10, 100],
                "stride": 20}


def _write(path: str | None, doc: dict) -> None:
    if not path:
        return
    tmp = Path(f"{path}.tmp")
    from rackpower_nodes.core.model_registry import _jsonable

    tmp.write_text(json.dumps(_jsonable(doc), indent=1, allow_nan=False, default=str) + "\n")
    os.replace(tmp, path)


def _progress(req: dict, stage: str, **extra) -> None:
    _write(req.get("progress"), {"stage": stage, "unix": time.time(), **extra})
    _log.info("stage: %s %s", stage, extra or "")


def load_sources(req: dict, step_s: float) -> tuple[list, dict, list[str]]:
    """(series, trained_on, problems): a source that cannot be read is a problem, not a
    failure, as long as one source remains."""
    from rackpower_nodes.sim.dataset import from_sim
    from rackpower_nodes.sources.bags import from_bag
    from rackpower_nodes.sources.csv_files import from_plain_csv

    series, problems = [], []
    trained_on: dict = {"bags": [], "sims": [], "plain": []}
    for src in req.get("sources", []):
        kind, path = src.get("kind"), src.get("path")
        try:
            if kind == "bag":
                got = from_bag(path, step_s=step_s, namespace=req.get("namespace"))
            elif kind == "sim":
                got = from_sim(path, step_s=step_s)
            elif kind == "plain":
                got = from_plain_csv(path, step_s=step_s)
            else:
                raise ValueError(f"source kind {kind!r}, expected bag, sim or plain")
        except (ValueError, OSError, KeyError) as exc:   # DatasetError is a ValueError
            problems.append(f"{kind} {path}: {exc}")
            continue
        series.extend(got)
        info = dict(src.get("info") or {}, path=str(path))
        if kind == "sim":
            info.setdefault("seed", _sim_seed(path))
        trained_on[{"bag": "bags", "sim": "sims", "plain": "plain"}[kind]].append(info)
    if not series:
        raise ValueError("no usable data in the sources: " + ("; ".join(problems) or "none given"))
    return series, trained_on, problems


def _sim_seed(path: str) -> int | None:
    try:
        return int(json.loads((Path(path) / "rack_sim.json").read_text())["seed"])
    except (OSError, ValueError, KeyError):
        return None


def _champion(req: dict):
    from rackpower_nodes.core.forecast.registry import ModelLoadError, load_model

    if not req.get("champion"):
        return None, "no champion"
    try:
        return load_model(req["champion"]), ""
    except ModelLoadError as exc:
        return None, str(exc)


def window_spec(doc: dict):
    """The WindowSpec of a request's ``spec`` (SPEC_DEFAULT's keys); the fleet trainer
    builds its windows with the same one."""
    from rackpower_nodes.core.forecast.features import WindowSpec

    return WindowSpec(step_s=float(doc["step_s"]), history_steps=int(doc["history_steps"]),
                      horizon_steps=int(doc["horizon_steps"]),
                      coarse=tuple(int(k) for k in doc["coarse"]),
                      stride=int(doc.get("stride", 1)))


def run(req: dict) -> dict:
    """The job (see the module docstring); returns the report."""
    import numpy as np

    from rackpower_nodes.core import retrain as rt
    from rackpower_nodes.core.forecast.features import (
        build_windows, seen_features, split_by_time)
    from rackpower_nodes.core.forecast.registry import save_model

    _progress(req, "loading")
    champion, champion_problem = _champion(req)
    spec_doc = {**SPEC_DEFAULT, **(req.get("spec") or {}), **(champion.spec if champion else {})}
    spec = window_spec(spec_doc)
    series, trained_on, problems = load_sources(req, spec.step_s)
    seed = int(req.get("seed", 0))
    ws = build_windows(series, spec, max_windows=req.get("max_windows"), seed=seed)
    ws, excluded = _exclude(req, ws, problems)
    train_all, test = rt.holdout_split(ws, float(req.get("holdout_s", 600.0)))
    if not len(train_all) or not len(test):
        raise ValueError(f"{len(train_all)} training and {len(test)} held-out windows from "
                         f"{len(ws)} ({excluded['windows']} more flagged faulty, left out): "
                         "record more data or lower holdout_s")
    bags = [s["path"] for s in req.get("sources", []) if s.get("kind") == "bag"]
    errors = [tuple(e) for e in req.get("errors", [])] + _bag_errors(bags, problems)
    fit_on, val = split_by_time(train_all, 1.0 - float(req.get("val_frac", 0.15)))
    weights = rt.error_weights(fit_on, errors, **(req.get("weighting") or {}))
    fit_on = rt.resample_weighted(fit_on, weights, seed)
    _progress(req, "training", windows=len(fit_on))
    span_s = float(fit_on.t_unix.max() - fit_on.t_unix.min()) if len(fit_on) else 0.0
    lstm = dict(req.get("lstm") or {})
    lstm.setdefault("features", seen_features(fit_on.feature_names, span_s))
    kind = challenger_kind(req.get("model", "auto"), champion, req.get("champion"))
    challenger = _fit(kind, lstm, int(req.get("threads", 1)), seed, fit_on,
                      val if len(val) else None, _served_params(champion))
    _progress(req, "evaluating", windows=len(test))
    models = {"challenger": challenger}
    if champion is not None:
        if list(champion.feature_names) == list(test.feature_names):
            models["champion"] = champion
        else:
            champion_problem = f"champion {req['champion']}: its features differ from the data's"
    metrics = rt.evaluate(models, test)
    metrics["holdout"] = {"windows": len(test), "holdout_s": float(req.get("holdout_s", 600.0)),
                          "t_first_unix": float(test.t_unix.min()),
                          "t_last_unix": float(test.t_unix.max())}
    metrics["champion_path"] = req.get("champion")
    if "champion" not in models:
        metrics["champion_problem"] = champion_problem
    trained_on.update(model=kind, windows=len(train_all), trained_windows=len(fit_on),
                      weighted_windows=int(np.count_nonzero(weights > 1.0)),
                      errors_logged=len(errors), spec=spec_doc,
                      # steps held at their allocation (the cap, not the demand): no window
                      # learnt them as targets
                      censored_steps=int(sum(int(s.censored.sum()) for s in series
                                             if s.censored is not None)),
                      t_first_unix=float(train_all.t_unix.min()),
                      t_last_unix=float(train_all.t_unix.max()), excluded=excluded)
    path = save_model(challenger, req["out_root"], metrics, trained_on)
    _write(str(path / EXCLUDED_FILE), excluded)
    _progress(req, "done")
    return {"ok": True, "model_dir": str(path), "metrics": metrics, "trained_on": trained_on,
            "problems": problems}


def challenger_kind(model: str, champion, champion_path: str | None = None) -> str:
    """The kind of challenger to train: ``model`` (``lstm`` or ``served``), or for ``auto``
    the champion's kind (a served champion is replaced by a served challenger only, never by
    a bare LSTM without its challengers and loss bound; ``lstm`` without a champion). A
    champion that could not be loaded is known by the class its model.json names."""
    from rackpower_nodes.core.forecast.challengers import ServedForecaster

    if model not in MODELS:
        raise ValueError(f"request model={model!r}, expected one of {', '.join(MODELS)}")
    if model != "auto":
        return model
    if champion is None and champion_path:
        try:
            doc = json.loads((Path(champion_path) / "model.json").read_text())
        except (OSError, ValueError):
            return "lstm"
        return "served" if isinstance(doc, dict) and doc.get("class") == "ServedForecaster" \
            else "lstm"
    return "served" if isinstance(champion, ServedForecaster) else "lstm"


def _served_params(champion):
    """A served champion's selection settings (its loss bound's risk, perhaps chosen by
    ``rackpower-train --select-risk``), for its challenger to keep; None for any other."""
    from rackpower_nodes.core.forecast.challengers import ServedForecaster

    return champion.params if isinstance(champion, ServedForecaster) else None


def _fit(kind: str, lstm: dict, threads: int, seed: int, fit_on, val, params=None):
    """The challenger: an LSTM (``lstm``: LstmParams fields), or the served forecaster over
    persistence, EWMA, LightGBM and that LSTM (its start per component class chosen on
    ``val``; ``params``: its ServedParams, the defaults when None), the LSTM given what is
    left of its ``max_train_s`` after the others."""
    from rackpower_nodes.core.forecast.baselines import (
        EwmaForecaster, LightGbmForecaster, LightGbmParams, PersistenceForecaster)
    from rackpower_nodes.core.forecast.challengers import ServedForecaster
    from rackpower_nodes.core.forecast.forecaster import LstmForecaster, LstmParams
    from rackpower_nodes.core.forecast.peak import class_of

    if kind == "lstm":
        return LstmForecaster(LstmParams(**dict(lstm, threads=threads, seed=seed))).fit(
            fit_on, val)
    t0 = time.monotonic()
    members = {"persistence": PersistenceForecaster().fit(fit_on, val),
               "ewma": EwmaForecaster().fit(fit_on, val),
               "lightgbm": LightGbmForecaster(LightGbmParams(threads=threads, seed=seed)).fit(
                   fit_on, val)}
    if lstm.get("max_train_s"):
        lstm = dict(lstm, max_train_s=max(float(lstm["max_train_s"]) - (time.monotonic() - t0),
                                          1.0))
    members["lstm"] = LstmForecaster(LstmParams(**dict(lstm, threads=threads, seed=seed))).fit(
        fit_on, val)
    return ServedForecaster(params, members).fit(fit_on, val, class_of)


def _exclude(req: dict, ws, problems: list[str]):
    """(windows, summary): the windows of components flagged faulty (``flagged``, widened by
    ``exclusion.margin_s`` before each start) left out; a component flagged over its whole
    span is named in ``problems``."""
    from rackpower_nodes.core import retrain as rt

    flags = rt.flags_from_request(req.get("flagged"))
    margin_s = float((req.get("exclusion") or {}).get("margin_s", rt.MARGIN_S))
    kept, summary = rt.exclude_flagged(ws, flags, margin_s)
    for comp in summary["whole_span"]:
        problems.append(f"component {comp}: flagged faulty over all of its data; none of it "
                        "trained on or judged")
    if summary["windows"]:
        _log.info("%d windows of flagged components left out: %s", summary["windows"],
                  {c: v["windows"] for c, v in summary["components"].items()})
    if len(ws) and not len(kept):
        raise ValueError(f"all {len(ws)} windows overlap flagged faulty intervals: "
                         f"{[f.as_dict() for f in flags]}")
    return kept, summary


def _bag_errors(bags: list[str], problems: list[str]) -> list[tuple]:
    from rackpower_nodes.sources.bags import allocation_errors_from_bags

    out = []
    for bag in bags:
        try:
            out.extend(allocation_errors_from_bags([bag]))
        except (ValueError, OSError, KeyError) as exc:
            problems.append(f"bag {bag}: allocation errors unreadable ({exc})")
    return out


def _limit(req: dict) -> None:
    """Lower this process's priority and cap torch's threads."""
    import torch

    nice = int(req.get("nice", 19))
    if nice:
        os.nice(nice)
    torch.set_num_threads(max(1, int(req.get("threads", 1))))
    torch.set_num_interop_threads(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="retrain_job", description=__doc__.split("\n")[0])
    parser.add_argument("--request", type=Path, required=True, help="request JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        req = json.loads(args.request.read_text())
        if not isinstance(req, dict) or "out_root" not in req:
            raise ValueError("expected a JSON object with out_root and sources")
    except (OSError, ValueError) as exc:
        print(f"retrain_job: request {args.request}: {exc}", file=sys.stderr)
        return 2
    try:
        _limit(req)
        report = run(req)
    except (ValueError, OSError, RuntimeError, KeyError, TypeError) as exc:
        msg = f"{type(exc).__name__}: {exc}"
        print(f"retrain_job: failed: {msg}", file=sys.stderr)
        _write(req.get("report"), {"ok": False, "error": msg})
        _progress(req, "failed", error=msg)
        return 1
    _write(req.get("report"), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
