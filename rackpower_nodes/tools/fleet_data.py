"""The fleet trainer's data: the racks in a set of bags, each rank loading its share.

A *rack source* is one rack's topics in one bag: ``(bag, namespace)`` for every namespace
whose ``<ns>/power_samples`` (PowerSamples) the bag holds (:func:`rack_sources`; the recorder
of a rack writes one, a bag of a whole room several). The rack id is the namespace
(``rack_01`` for ``/rack_01``), so a rack's rotated bags are one rack; ``RACK=PATH`` names it
instead (racks recorded under the same namespace, or without one: then the bag's name is the
id). Rank ``r`` of ``w`` loads the sources ``r, r + w, ...`` (:func:`load_share`) through the
retraining job's feature pipeline (``sources.bags.from_bag`` -> ``build_windows`` with its
WindowSpec) and reads the rack's logged allocation errors; every window's and error's
component becomes ``<rack>/<channel>``, so that racks whose channels share ids (``srv01`` in
every rack) stay apart. :func:`exchange` all-gathers the shares
(``torch.distributed.all_gather_object``) so that every rank holds all windows in source
order: the same WindowSet as one process loading everything, which the trainer's
``DistributedSampler`` then splits per epoch. A source that fails on any rank fails every
rank with the same message (no rank waits forever on a collective another one never joins).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FleetError", "RackSource", "concat_windows", "exchange", "load_share",
           "rack_sources"]


class FleetError(ValueError):
    """Bad fleet-training input; the message names the bag, rack or argument."""


@dataclass(frozen=True)
class RackSource:
    """One rack in one bag: ``namespace`` as in the topic ('' for ``/power_samples``);
    ``rack`` the id its components are prefixed with."""

    bag: str
    namespace: str
    rack: str


def rack_sources(bags: list[str]) -> list[RackSource]:
    """Every rack of every bag (``PATH`` or ``RACK=PATH``), in the order given; FleetError
    for no bags, a missing or unreadable bag or a bag without PowerSamples."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    from rackpower_nodes.sources.bags import POWER_TYPE

    if not bags:
        raise FleetError("no bags given: pass --bags with one or more rosbag2 bags")
    out: list[RackSource] = []
    for arg in bags:
        name, bag = _split(arg)
        path = Path(bag)
        if not path.exists():
            raise FleetError(f"bag {bag}: no such file or folder")
        try:
            with AnyReader([path]) as reader:
                conns = list(reader.connections)
        except (AnyReaderError, OSError, ValueError, KeyError) as exc:
            raise FleetError(f"bag {bag}: cannot open ({type(exc).__name__}: {exc})") from exc
        topics = sorted({c.topic for c in conns if c.msgtype == POWER_TYPE
                         and c.topic.rsplit("/", 1)[-1] == "power_samples"})
        if not topics:
            seen = sorted({f"{c.topic} ({c.msgtype})" for c in conns}) or "none"
            raise FleetError(f"bag {bag}: no <namespace>/power_samples topic of type "
                             f"{POWER_TYPE}, nothing to train on (its topics: {seen})")
        if name and len(topics) > 1:
            raise FleetError(f"bag {bag} holds several racks {topics}: a RACK= name fits a "
                             "bag of one rack; pass the bag without one")
        for topic in topics:
            ns = topic.rsplit("/", 1)[0].strip("/")
            out.append(RackSource(str(bag), ns, name or ns or path.name))
    return out


def _split(arg: str) -> tuple[str, str]:
    """(rack name or '', path) of ``RACK=PATH`` or ``PATH`` (a path that exists wins)."""
    name, eq, path = arg.partition("=")
    if not eq or Path(arg).exists() or not name or "/" in name:
        return "", arg
    return name, path


def load_share(sources: list[RackSource], rank: int, world: int, spec, max_windows: int | None,
               seed: int) -> list[tuple[int, object]]:
    """``[(source index, payload)]`` of the sources ``rank, rank + world, ...``; the payload is
    ``(WindowSet, errors, info)`` or, when the source cannot be read, its error message."""
    out = []
    for i in range(rank, len(sources), world):
        try:
            out.append((i, _load_rack(sources[i], spec, max_windows, seed + i)))
        except (ValueError, OSError, KeyError) as exc:          # DatasetError is a ValueError
            out.append((i, f"bag {sources[i].bag} rack {sources[i].rack!r}: "
                           f"{type(exc).__name__}: {exc}"))
    return out


def _load_rack(src: RackSource, spec, max_windows: int | None, seed: int):
    from rackpower_nodes.core.forecast.features import build_windows
    from rackpower_nodes.sources.bags import allocation_errors_from_bags, from_bag

    t0 = time.monotonic()
    series = from_bag(src.bag, step_s=spec.step_s, namespace=src.namespace)
    ws = build_windows(series, spec, max_windows=max_windows, seed=seed)
    if not len(ws):
        raise FleetError(f"no training windows ({len(series)} series shorter than "
                         f"{spec.warmup_steps + spec.horizon_steps} steps of {spec.step_s} s)")
    ws.component = np.array([f"{src.rack}/{c}" for c in ws.component], dtype=object)
    errors = [(t, f"{src.rack}/{c}", e)
              for t, c, e in allocation_errors_from_bags([src.bag], src.namespace)]
    info = {"bag": src.bag, "namespace": src.namespace, "rack": src.rack,
            "components": len(set(ws.component)), "windows": len(ws),
            "errors_logged": len(errors), "t_first_unix": float(ws.t_unix.min()),
            "t_last_unix": float(ws.t_unix.max()), "load_s": time.monotonic() - t0}
    return ws, errors, info


def exchange(share: list[tuple[int, object]], n_sources: int, world: int
             ) -> list[tuple[object, list, dict]]:
    """Every source's payload in source order, gathered from every rank's share (``world``
    1: the share itself). FleetError, on every rank, naming each source that failed."""
    if world > 1:
        from torch import distributed as dist

        shares: list = [None] * world
        dist.all_gather_object(shares, share)
    else:
        shares = [share]
    payload: dict[int, object] = {}
    for rank, got in enumerate(shares):
        for i, item in got:
            payload[i] = (rank, item)
    failed = [item for _, item in payload.values() if isinstance(item, str)]
    if failed:
        raise FleetError("cannot load " + "; ".join(failed))
    missing = sorted(set(range(n_sources)) - set(payload))
    if missing:
        raise FleetError(f"sources {missing} were loaded by no rank")
    out = []
    for i in range(n_sources):
        rank, (ws, errors, info) = payload[i]
        out.append((ws, errors, dict(info, loaded_by_rank=rank)))
    return out


def concat_windows(sets: list):
    """One WindowSet of ``sets`` (same spec and features) in their order."""
    from rackpower_nodes.core.forecast.features import WindowSet

    first = sets[0]
    for ws in sets[1:]:
        if ws.feature_names != first.feature_names or ws.spec != first.spec:
            raise FleetError("racks' windows differ in features or spec; they must be built "
                             "with one WindowSpec")
    return WindowSet(*(np.concatenate([getattr(ws, k) for ws in sets])
                       for k in ("x", "y", "scale_w", "last", "component", "t_unix")),
                     list(first.feature_names), first.spec)
