"""Off-peak retraining, part 2: on what. The bags to learn from, window weights, the held out.

- :func:`newest_bags`: the newest rosbag2 bags (folders or ``.mcap`` files) of a folder, up
  to a time span and a byte limit, with their sizes and time ranges (:class:`BagInfo`; only
  the bags' metadata is read here, the messages by ``rackpower_nodes.sources.bags``).
- :func:`error_weights` / :func:`resample_weighted`: windows whose forecast span saw a large
  logged ``AllocationError`` are repeated in the training set (``fit`` takes no weights).
  A window's weight is ``1 + (max_weight - 1) * min(1, |error_w| / error_ref_w)``, with
  ``error_w`` the largest |error| of its component logged within ``radius_s`` of the span
  from its last input step to the end of its horizon; each window is then repeated
  ``floor(w)`` times plus once more with probability ``w - floor(w)``.
- :func:`holdout_split`: the last ``holdout_s`` of the data is the held-out slice; windows
  whose inputs or targets would cross the cut are dropped from both sides.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rackpower_nodes.core.retrain.policy import RetrainError

__all__ = ["BagInfo", "bag_info", "error_weights", "holdout_split", "newest_bags",
           "resample_weighted"]


@dataclass(frozen=True)
class BagInfo:
    """A bag on disk: ``path``, ``bytes`` (all its files), ``start_unix``/``end_unix`` (s)."""

    path: str
    bytes: int
    start_unix: float
    end_unix: float

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "start_unix": self.start_unix,
                "end_unix": self.end_unix}


def _bag_paths(folder: Path) -> list[Path]:
    """rosbag2 folders (with metadata.yaml) and .mcap files not inside one."""
    out = []
    for p in sorted(folder.iterdir()):
        if p.is_dir() and (p / "metadata.yaml").is_file():
            out.append(p)
        elif p.is_file() and p.suffix == ".mcap":
            out.append(p)
    return out


def bag_info(path: str | Path) -> BagInfo:
    """Size and time range of one bag; RetrainError naming the bag when rosbags cannot open
    it."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    path = Path(path)
    size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir()
            else path.stat().st_size)
    try:
        with AnyReader([path]) as reader:
            start, end, count = reader.start_time, reader.end_time, reader.message_count
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        raise RetrainError(f"bag {path}: cannot open ({type(exc).__name__}: {exc})") from exc
    if not count:
        raise RetrainError(f"bag {path}: holds no messages")
    return BagInfo(str(path), int(size), start * 1e-9, end * 1e-9)


def newest_bags(folder: str | Path, max_span_s: float, max_bytes: int
                ) -> tuple[list[BagInfo], list[str]]:
    """(bags newest first, problems): the newest bags of ``folder`` whose time range ends
    within ``max_span_s`` s of the newest end and whose sizes add up to at most ``max_bytes``
    (the newest bag is always taken). Bags that cannot be opened are listed in problems."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RetrainError(f"bag folder {folder}: no such folder")
    infos, problems = [], []
    for p in _bag_paths(folder):
        try:
            infos.append(bag_info(p))
        except RetrainError as exc:
            problems.append(str(exc))
    infos.sort(key=lambda b: b.end_unix, reverse=True)
    chosen: list[BagInfo] = []
    total = 0
    for b in infos:
        if chosen and (infos[0].end_unix - b.start_unix > max_span_s
                       or total + b.bytes > max_bytes):
            break
        chosen.append(b)
        total += b.bytes
    return chosen, problems


def error_weights(ws, errors: Sequence[tuple[float, str, float]], max_weight: float = 4.0,
                  error_ref_w: float = 50.0, radius_s: float = 5.0) -> np.ndarray:
    """(n,) weights >= 1 of the windows of ``ws`` (see the module docstring for the rule)."""
    if max_weight < 1 or not error_ref_w > 0 or radius_s < 0:
        raise RetrainError(f"max_weight={max_weight!r} (>= 1), error_ref_w={error_ref_w!r} "
                           f"(> 0 W), radius_s={radius_s!r} (>= 0 s) expected")
    w = np.ones(len(ws))
    if not errors or not len(ws):
        return w
    spec = ws.spec
    span = (spec.horizon_steps + 1) * spec.step_s
    by_comp: dict[str, list[tuple[float, float]]] = {}
    for t, comp, err in errors:
        by_comp.setdefault(str(comp), []).append((float(t), abs(float(err))))
    for comp, items in by_comp.items():
        rows = np.flatnonzero(ws.component == comp)
        if not len(rows):
            continue
        items.sort()
        t = np.array([i[0] for i in items])
        e = np.array([i[1] for i in items])
        lo = np.searchsorted(t, ws.t_unix[rows] - radius_s, side="left")
        hi = np.searchsorted(t, ws.t_unix[rows] + span + radius_s, side="right")
        peak = np.array([e[a:b].max() if b > a else 0.0 for a, b in zip(lo, hi, strict=True)])
        w[rows] = 1.0 + (max_weight - 1.0) * np.minimum(1.0, peak / error_ref_w)
    return w


def resample_weighted(ws, weights: np.ndarray, seed: int = 0):
    """``ws`` with window i repeated ``floor(w_i)`` times and once more with probability
    ``w_i - floor(w_i)`` (a weight of 1 keeps a window once)."""
    weights = np.asarray(weights, np.float64)
    if weights.shape != (len(ws),) or not np.isfinite(weights).all() or (weights < 0).any():
        raise RetrainError(f"weights of shape {weights.shape}, expected ({len(ws)},) finite "
                           ">= 0 values")
    rng = np.random.default_rng(seed)
    base = np.floor(weights)
    counts = (base + (rng.random(len(weights)) < weights - base)).astype(np.int64)
    return ws.subset(np.repeat(np.arange(len(ws)), counts))


def holdout_split(ws, holdout_s: float):
    """(train, test): test = windows wholly in the last ``holdout_s`` s of the data (inputs
    and targets after the cut), train = windows wholly before it; the rest is dropped."""
    if not holdout_s > 0:
        raise RetrainError(f"holdout_s={holdout_s!r}, expected > 0 s")
    if not len(ws):
        raise RetrainError("no windows to split into training and held-out data")
    spec = ws.spec
    before = (spec.warmup_steps - 1) * spec.step_s
    after = (spec.horizon_steps + 1) * spec.step_s
    cut = float((ws.t_unix + after).max()) - holdout_s
    return ws.subset(ws.t_unix + after <= cut), ws.subset(ws.t_unix - before >= cut)

