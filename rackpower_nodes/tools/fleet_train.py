"""Fleet training: one LSTM forecaster from the bags of many racks, data-parallel over ranks.

    torchrun --nproc_per_node 2 -m rackpower_nodes.tools.fleet_train \\
        --bags bags/rack_01 bags/rack_02 ... --out models/
    python -m rackpower_nodes.tools.fleet_train --bags ... --out models/      # one process

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank joins a process group (gloo on CPU, nccl
when CUDA is there; ``--backend`` overrides), loads its share of the racks (fleet_data.py:
each rack's namespace kept apart, ``<rack>/<channel>`` components, the retraining job's
WindowSpec and windows), and the shares are gathered so that every rank holds the same
windows. Then the retraining job's steps: the last ``--holdout-s`` held out, the last
``--val-frac`` of each component's time for early stopping, windows near logged allocation
errors repeated, and ``LstmForecaster.fit``, which trains in ``DistributedDataParallel``
with a ``DistributedSampler`` share per rank (forecaster.py). Rank 0 alone scores the model
beside persistence and EWMA on the held-out windows, writes ``<out>/lstm-<version>/``, checks
it as the registry and the predictor will (``load_model`` with the predictor's feature list
and class; its predictions equal the trained model's) and, with ``--register``, adds it to
the ModelRegistry at ``--out`` as a candidate. One process: the same steps, no DDP.

Prints one JSON line (rank 0): ``ok``, ``model_dir``, ``world_size``, ``metrics``.
Exit 0 on success, 2 for bad arguments or data (the message names the bag or flag), 1 when
the trained model fails the checks.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from rackpower_nodes.core.forecast.base import ModelLoadError
from rackpower_nodes.tools.fleet_data import (
    FleetError, concat_windows, exchange, load_share, rack_sources)
from rackpower_nodes.tools.retrain_job import SPEC_DEFAULT, window_spec

__all__ = ["main", "train"]

_log = logging.getLogger("rackpower_fleet_train")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet_train", description=__doc__.split("\n")[0])
    p.add_argument("--bags", nargs="*", default=[],
                   help="rosbag2 bags (folders or .mcap), PATH or RACK=PATH; a rack is its "
                   "namespace unless named")
    p.add_argument("--out", type=Path, required=True, help="model root (registry) folder")
    p.add_argument("--spec", type=json.loads, default={},
                   help=f"WindowSpec fields as JSON over {json.dumps(SPEC_DEFAULT)}")
    p.add_argument("--lstm", type=json.loads, default={},
                   help='LstmParams fields as JSON, e.g. {"hidden_size": 32, "max_epochs": 20}')
    p.add_argument("--global-batch", type=int, default=0,
                   help="windows per optimiser step over all ranks (batch per rank = this / "
                   "world size, rounded up); 0: the lstm batch_size is per rank")
    p.add_argument("--holdout-s", type=float, default=600.0, help="held-out tail, s")
    p.add_argument("--val-frac", type=float, default=0.15, help="validation tail per component")
    p.add_argument("--max-windows", type=int, default=None, help="at most this many per rack")
    p.add_argument("--seed", type=int, default=0, help="seed (training: 100-199)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per rank (0: the CPUs / processes on this node)")
    p.add_argument("--backend", choices=("gloo", "nccl"), default=None,
                   help="process group backend (default: nccl with CUDA, else gloo)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="collective timeout, s")
    p.add_argument("--register", action="store_true",
                   help="add the model to the ModelRegistry at --out as a candidate")
    return p


def train(args: argparse.Namespace, rank: int = 0, world: int = 1) -> dict:
    """Every rank's part of a fleet training (see the module docstring); the report on rank 0,
    ``{"ok": True, "rank": r}`` on the others."""
    from rackpower_nodes.core import retrain as rt
    from rackpower_nodes.core.forecast.features import seen_features, split_by_time
    from rackpower_nodes.core.forecast.forecaster import LstmForecaster, LstmParams

    spec_doc = {**SPEC_DEFAULT, **args.spec}
    spec = window_spec(spec_doc)
    sources = rack_sources(args.bags)
    timing = {"start": time.monotonic()}
    share = load_share(sources, rank, world, spec, args.max_windows, args.seed)
    timing["loaded"] = time.monotonic()
    racks = exchange(share, len(sources), world)
    timing["exchanged"] = time.monotonic()
    ws = concat_windows([r[0] for r in racks])
    errors = [e for r in racks for e in r[1]]
    train_all, test = rt.holdout_split(ws, args.holdout_s)
    if not len(train_all) or not len(test):
        raise FleetError(f"{len(train_all)} training and {len(test)} held-out windows of "
                         f"{len(ws)}: record more data or lower --holdout-s")
    fit_on, val = split_by_time(train_all, 1.0 - args.val_frac)
    weights = rt.error_weights(fit_on, errors)
    fit_on = rt.resample_weighted(fit_on, weights, args.seed)
    span_s = float(fit_on.t_unix.max() - fit_on.t_unix.min())
    lstm = dict(args.lstm)
    lstm.setdefault("features", seen_features(fit_on.feature_names, span_s))
    if args.global_batch:
        lstm["batch_size"] = math.ceil(args.global_batch / world)
    params = LstmParams(**dict(lstm, threads=args.threads, seed=args.seed))
    timing["prepared"] = time.monotonic()
    model = LstmForecaster(params).fit(fit_on, val if len(val) else None)
    timing["fitted"] = time.monotonic()
    if rank != 0:
        return {"ok": True, "rank": rank}
    per_rank = [{"rank": r, "racks": [i["rack"] for _, _, i in racks
                                      if i["loaded_by_rank"] == r],
                 "windows_loaded": sum(i["windows"] for _, _, i in racks
                                       if i["loaded_by_rank"] == r),
                 "load_s": sum(i["load_s"] for _, _, i in racks if i["loaded_by_rank"] == r)}
                for r in range(world)]
    per_epoch = min(len(fit_on), params.samples_per_epoch or len(fit_on))
    trained = model.training.get("distributed", {}).get(
        "per_rank", [{"windows": model.training["epochs"] * per_epoch}])
    for entry, done in zip(per_rank, trained, strict=True):
        entry["windows_trained"] = done["windows"]
    info = {"racks": [i for _, _, i in racks], "world_size": world, "per_rank": per_rank,
            "spec": spec_doc, "windows": len(ws), "trained_windows": len(fit_on),
            "val_windows": len(val), "held_out_windows": len(test),
            "weighted_windows": int((weights > 1.0).sum()), "errors_logged": len(errors),
            "global_batch": params.batch_size * world, "seed": args.seed,
            "timing_s": {"load": timing["loaded"] - timing["start"],      # rank 0's share
                         "exchange": timing["exchanged"] - timing["loaded"],
                         "prepare": timing["prepared"] - timing["exchanged"],
                         "fit": timing["fitted"] - timing["prepared"]}}
    return _finish(args, model, fit_on, val, test, info)


def _finish(args, model, fit_on, val, test, info: dict) -> dict:
    """Rank 0: score beside the baselines, save, check as the registry and predictor do."""
    import numpy as np

    from rackpower_nodes.core import retrain as rt
    from rackpower_nodes.core.forecast.baselines import EwmaForecaster
    from rackpower_nodes.core.forecast.features import WindowSpec, feature_names
    from rackpower_nodes.core.forecast.forecaster import LstmForecaster
    from rackpower_nodes.core.forecast.registry import load_model, save_model
    from rackpower_nodes.core.model_registry import ModelRegistry

    ewma = EwmaForecaster().fit(fit_on, val if len(val) else None)
    metrics = rt.evaluate({"challenger": model, "ewma": ewma}, test)
    metrics["holdout"] = {"windows": len(test), "holdout_s": args.holdout_s}
    path = save_model(model, args.out, metrics, info)
    serve_spec = WindowSpec(**{k: tuple(v) if k == "coarse" else v
                               for k, v in model.spec.items() if k != "stride"})
    loaded = load_model(path, expected_features=feature_names(serve_spec), kind=LstmForecaster)
    same = np.array_equal(loaded.predict(test.x, test.last), model.predict(test.x, test.last))
    if not same:
        raise RuntimeError(f"{path}: the saved model's predictions differ from the trained "
                           "model's")
    entry = None
    if args.register:
        entry = ModelRegistry(args.out).register(path, {"fleet": info}, metrics)["version"]
    return {"ok": True, "model_dir": str(path), "registered": entry,
            "world_size": info["world_size"], "per_rank": info["per_rank"],
            "timing_s": info["timing_s"],
            "epochs": model.training["epochs"], "metrics": metrics}


def _init(args) -> tuple[int, int]:
    """(rank, world size): the process group joined when torchrun started several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return 0, 1
    import torch
    from torch import distributed as dist

    backend = args.backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=args.timeout_s))
    return dist.get_rank(), dist.get_world_size()


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s")
    if not args.threads:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        args.threads = max(1, (os.cpu_count() or 1) // per_node)
    try:
        rack_sources(args.bags)              # every rank checks the bags before joining
    except FleetError as exc:
        print(f"fleet_train: {exc}", file=sys.stderr)
        return 2
    rank, world = _init(args)
    try:
        report = train(args, rank, world)
    except ValueError as exc:   # FleetError, DatasetError, RetrainError: on every rank alike
        print(f"fleet_train: rank {rank}: {exc}", file=sys.stderr)
        return 2
    except (ModelLoadError, RuntimeError) as exc:           # rank 0's checks of the model
        print(f"fleet_train: rank {rank}: the trained model fails its checks: {exc}",
              file=sys.stderr)
        return 1
    finally:
        if world > 1:
            from torch import distributed as dist

            dist.barrier()
            dist.destroy_process_group()
    if rank == 0:
        print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
