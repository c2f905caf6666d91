"""Off-peak retraining: when to retrain, on what, how to judge the challenger (no rclpy).

- :class:`OffPeakPolicy` / :class:`OffPeakGate`: local-time windows (``"01:00-05:00"``,
  crossing midnight allowed) and/or rack load below ``load_threshold_frac`` of the budget for
  ``load_min_s``; never sooner than ``min_interval_s`` after the last retrain.
- :func:`newest_bags`: the newest rosbag2 bags (folders or ``.mcap`` files) of a folder, up
  to a time span and a byte limit, with their sizes and time ranges.
- :func:`error_weights` / :func:`resample_weighted`: windows whose forecast span saw a large
  logged ``AllocationError`` are repeated in the training set (``fit`` takes no weights).
  A window's weight is ``1 + (max_weight - 1) * min(1, |error_w| / error_ref_w)``, with
  ``error_w`` the largest |error| of its component logged within ``radius_s`` of the span
  from its last input step to the end of its horizon; each window is then repeated
  ``floor(w)`` times plus once more with probability ``w - floor(w)``.
- :func:`holdout_split`: the last ``holdout_s`` of the data is the held-out slice; windows
  whose inputs or targets would cross the cut are dropped from both sides.
- :func:`evaluate` / :func:`decide`: champion, challenger and persistence on the same
  held-out windows; promote only when the challenger beats the champion by ``margin_frac``.
- :class:`RetrainJob` starts the training job
  (``python -m rackpower_nodes.tools.retrain_job``) in its own process and watches its time and memory; :class:`RetrainPipeline` gathers the data,
  starts the job, and on its report registers the challenger and promotes or rejects it.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BagInfo", "OffPeakGate", "OffPeakPolicy", "RetrainError", "allocation_errors_from_bags",
    "bag_info", "decide", "error_weights", "evaluate", "holdout_split", "newest_bags",
    "parse_window", "resample_weighted",
]

_log = logging.getLogger(__name__)
_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
LOAD_STALE_S = 5.0       # a rack load older than this does not count as quiet


class RetrainError(ValueError):
    """Retraining cannot go on; the message names the file, key or value and the reason."""


# --- the off-peak policy -----------------------------------------------------------------
def parse_window(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` -> (start, end) minutes after local midnight; end < start crosses
    midnight. RetrainError naming the text otherwise."""
    m = _WINDOW_RE.match(str(text))
    if m:
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 < 24 and h2 <= 24 and m1 < 60 and m2 < 60 and not (h2 == 24 and m2):
            start, end = h1 * 60 + m1, h2 * 60 + m2
            if start != end % 1440 or start == end - 1440:
                return start, end
    raise RetrainError(f"off-peak window {text!r}: expected 'HH:MM-HH:MM' (00:00..24:00, "
                       "start != end; end before start crosses midnight)")


@dataclass(frozen=True)
class OffPeakPolicy:
    """When the rack is quiet enough to retrain.

    ``windows``: local-time windows ``"HH:MM-HH:MM"``; ``utc_offset_s``: local time - UTC, s;
    ``load_threshold_frac``: the load rule holds while the rack load stays below this
    fraction of ``budget_w`` (W) for ``load_min_s`` s (0 = rule off); ``combine``: ``any``
    (a window or the load rule) or ``all`` (both of those configured);
    ``min_interval_s``: least time between two retrains, s.
    """

    windows: tuple[str, ...] = ("01:00-05:00",)
    utc_offset_s: float = 0.0
    load_threshold_frac: float = 0.0
    budget_w: float = 0.0
    load_min_s: float = 600.0
    combine: str = "any"
    min_interval_s: float = 6 * 3600.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", tuple(self.windows))
        for w in self.windows:
            parse_window(w)
        if self.combine not in ("any", "all"):
            raise RetrainError(f"combine={self.combine!r}, expected 'any' or 'all'")
        if not 0.0 <= self.load_threshold_frac <= 1.0:
            raise RetrainError(f"load_threshold_frac={self.load_threshold_frac!r}, expected "
                               "0..1 (fraction of the budget; 0 = rule off)")
        if self.load_threshold_frac > 0 and not self.budget_w > 0:
            raise RetrainError(f"budget_w={self.budget_w!r}: the load rule needs a budget > 0 W")
        if not self.windows and self.load_threshold_frac == 0:
            raise RetrainError("no off-peak window and no load rule: retraining would never "
                               "start on its own (give windows or load_threshold_frac > 0)")
        if self.min_interval_s < 0 or self.load_min_s < 0:
            raise RetrainError(f"min_interval_s={self.min_interval_s!r}, load_min_s="
                               f"{self.load_min_s!r}: expected >= 0 s")

    def in_window(self, t_unix: float) -> bool:
        """True when local time at ``t_unix`` (Unix s) lies in one of the windows."""
        local = dt.datetime.fromtimestamp(t_unix + self.utc_offset_s, dt.UTC)
        minute = local.hour * 60 + local.minute + local.second / 60.0
        for start, end in (parse_window(w) for w in self.windows):
            if end > 1440 or end < start:          # crosses midnight
                if minute >= start or minute < end % 1440:
                    return True
            elif start <= minute < end:
                return True
        return False


class OffPeakGate:
    """The policy plus the state it needs: how long the load has been low, the last retrain."""

    def __init__(self, policy: OffPeakPolicy) -> None:
        self.policy = policy
        self.below_since: float | None = None
        self.last_load: tuple[float, float] | None = None      # (t_unix, W)

    def push_load(self, t_unix: float, load_w: float) -> None:
        """The rack's total power (W) at ``t_unix`` (Unix s)."""
        limit = self.policy.load_threshold_frac * self.policy.budget_w
        stale = self.last_load is not None and t_unix - self.last_load[0] > LOAD_STALE_S
        if not (math.isfinite(load_w) and load_w < limit):
            self.below_since = None
        elif self.below_since is None or stale:
            self.below_since = t_unix
        self.last_load = (t_unix, load_w)

    def load_quiet(self, now: float) -> bool:
        """True when the load rule is on and the load has been low for ``load_min_s``."""
        p = self.policy
        if p.load_threshold_frac <= 0 or self.below_since is None or self.last_load is None:
            return False
        return now - self.last_load[0] <= LOAD_STALE_S and now - self.below_since >= p.load_min_s

    def check(self, now: float, last_retrain_unix: float | None) -> tuple[bool, str]:
        """(may retrain now, why) at ``now`` (Unix s)."""
        p = self.policy
        if last_retrain_unix is not None and now - last_retrain_unix < p.min_interval_s:
            wait = p.min_interval_s - (now - last_retrain_unix)
            return False, f"last retrain {now - last_retrain_unix:.0f} s ago, next in {wait:.0f} s"
        rules = []
        if p.windows:
            rules.append(("off-peak window", p.in_window(now)))
        if p.load_threshold_frac > 0:
            rules.append((f"load < {p.load_threshold_frac:.0%} of {p.budget_w:.0f} W for "
                          f"{p.load_min_s:.0f} s", self.load_quiet(now)))
        met = [name for name, ok in rules if ok]
        ok = bool(met) if p.combine == "any" else len(met) == len(rules)
        if ok:
            return True, "off-peak: " + " and ".join(met)
        return False, "waiting for off-peak: " + ", ".join(
            f"{name} {'met' if good else 'not met'}" for name, good in rules)


# --- data -----------------------------------------------------------------------------------
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


def allocation_errors_from_bags(paths: Iterable[str | Path]) -> list[tuple[float, str, float]]:
    """(t_unix, component, |error_w|) of every finite AllocationError in the bags."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import get_types_from_msg

    from rackpower_nodes.core.forecast.datasets import _msg_folder, message_typestore

    store = message_typestore()
    text = (_msg_folder() / "AllocationError.msg").read_text()
    store.register(get_types_from_msg(text, "rackpower/msg/AllocationError"))
    out = []
    for path in paths:
        with AnyReader([Path(path)], default_typestore=store) as reader:
            conns = [c for c in reader.connections
                     if c.msgtype == "rackpower/msg/AllocationError"]
            if not conns:            # an empty list would make rosbags read every message
                continue
            for conn, _, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                err = float(msg.error_w)
                if math.isfinite(err):
                    t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                    out.append((t, str(msg.channel_id), abs(err)))
    return out


# --- weighting and the held-out slice ------------------------------------------------------
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


# --- evaluation and the decision --------------------------------------------------------------
def evaluate(models: dict[str, Any], test) -> dict[str, dict[str, float]]:
    """MAE and mean pinball loss (W) of each forecaster on the same windows, plus
    ``persistence`` (the last input step held, MAE only). Windows: ``test.x`` etc."""
    from rackpower_nodes.core.forecast.metrics import score

    if not len(test):
        raise RetrainError("the held-out slice has no windows; raise holdout_s or record more")
    scale = np.asarray(test.scale_w, np.float64)
    y = test.y * scale[:, None]
    out = {}
    for name, model in models.items():
        pred = model.predict(test.x, test.last).astype(np.float64) * scale[:, None, None]
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


# --- the training job and the pipeline -----------------------------------------------------
JOB_MODULE = "rackpower_nodes.tools.retrain_job"


class RetrainJob:
    """One training job in its own process, watched without blocking.

    ``request`` is the JSON-able job description (see rackpower_nodes.tools.retrain_job); it is
    written to ``workdir/request.json``, the job writes ``report.json``, ``progress.json`` and
    its log ``job.log`` there. ``max_seconds`` (wall s) and ``max_rss_mb`` (MB, resident set
    of the job) are enforced by :meth:`poll`, which kills a job that exceeds them.
    """

    def __init__(self, request: dict, workdir: str | Path, max_seconds: float = 1800.0,
                 max_rss_mb: float = 2048.0, python: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.request = dict(request, report=str(self.workdir / "report.json"),
                            progress=str(self.workdir / "progress.json"))
        self.max_seconds, self.max_rss_mb = float(max_seconds), float(max_rss_mb)
        self.python = python or sys.executable
        self.proc = None
        self.started = 0.0
        self.peak_rss_mb = 0.0

    def start(self) -> RetrainJob:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "request.json").write_text(json.dumps(self.request, indent=1))
        log = open(self.workdir / "job.log", "wb")
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", JOB_MODULE, "--request", str(self.workdir / "request.json")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=_job_env())
        finally:
            log.close()
        self.started = time.monotonic()
        return self

    def stage(self) -> str:
        """The job's own account of its stage (loading, training, evaluating, done)."""
        try:
            return str(json.loads((self.workdir / "progress.json").read_text())["stage"])
        except (OSError, ValueError, KeyError, TypeError):
            return "starting"

    def poll(self) -> dict | None:
        """None while the job runs; then its report (``ok`` true/false, ``error`` on failure).
        A job over its time or memory limit is killed and reported as failed."""
        if self.proc is None:
            raise RetrainError("RetrainJob.poll before start")
        code = self.proc.poll()
        if code is None:
            over = self._over_limit(time.monotonic() - self.started)
            if over is None:
                return None
            self.cancel()
            return {"ok": False, "error": over}
        try:
            report = json.loads(Path(self.request["report"]).read_text())
        except (OSError, ValueError):
            report = {"ok": False}
        if code != 0 or not report.get("ok"):
            report["ok"] = False
            report.setdefault("error", f"retrain job exited with code {code}: {self.log_tail()}")
        return report

    def _over_limit(self, elapsed: float) -> str | None:
        import psutil

        if elapsed > self.max_seconds:
            return f"retrain job ran {elapsed:.0f} s, over max_seconds={self.max_seconds:.0f}"
        try:
            rss = psutil.Process(self.proc.pid).memory_info().rss / 1e6
        except psutil.Error:
            return None
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if rss > self.max_rss_mb:
            return f"retrain job used {rss:.0f} MB, over max_rss_mb={self.max_rss_mb:.0f}"
        return None

    def cancel(self) -> None:
        """Kill the job (if running) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, chars: int = 600) -> str:
        try:
            text = (self.workdir / "job.log").read_text(errors="replace").strip()
        except OSError:
            return "(no log)"
        return text[-chars:]


def _job_env() -> dict[str, str]:
    """This environment, with this package's folder first on PYTHONPATH, so the job runs the
    same code as its parent."""
    import rackpower_nodes

    here = str(Path(rackpower_nodes.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH", "")]))
    return env


@dataclass
class Outcome:
    """What one retrain ended with: ``status`` promoted, rejected or failed; ``version`` of
    the challenger ('' when none was trained); ``reason``; ``metrics`` (W)."""

    status: str
    version: str
    reason: str
    metrics: dict


class RetrainPipeline:
    """Gathers data, runs a :class:`RetrainJob`, then registers and judges its challenger.

    ``settings`` keys: ``bag_folder``, ``namespace``, ``max_span_s``, ``max_bytes``, ``metric``,
    ``margin_frac``, ``max_seconds``, ``max_rss_mb`` and ``job`` (passed to the job: spec,
    lstm, threads, nice, holdout_s, max_windows, weighting, seed; see retrain_job).
    """

    def __init__(self, registry, settings: dict) -> None:
        self.registry = registry
        self.settings = dict(settings)
        self.job: RetrainJob | None = None
        self.problems: list[str] = []

    @property
    def running(self) -> bool:
        return self.job is not None

    def start(self, errors: Sequence[tuple[float, str, float]] = (),
              sources: list[dict] | None = None) -> RetrainJob:
        """Start a job on ``sources`` (default: the newest bags of ``bag_folder``) with the
        logged ``errors`` (t_unix, component, |error_w|). RetrainError when there is no data
        or a job runs already."""
        if self.job is not None:
            raise RetrainError("a retrain job is running already")
        s = self.settings
        self.problems = []
        if sources is None:
            bags, self.problems = newest_bags(s["bag_folder"], s.get("max_span_s", 86400.0),
                                              int(s.get("max_bytes", 2 << 30)))
            if not bags:
                raise RetrainError(f"no usable bag in {s['bag_folder']}"
                                   + (f": {'; '.join(self.problems)}" if self.problems else ""))
            sources = [{"kind": "bag", "path": b.path, "info": b.as_dict()} for b in bags]
        current = self.registry.current()
        champion = str(self.registry.path_of(current["version"])) if current else None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        request = dict(s.get("job", {}), sources=sources, namespace=s.get("namespace"),
                       errors=[list(e) for e in errors], out_root=str(self.registry.root),
                       champion=champion)
        self.job = RetrainJob(request, self.registry.root / "jobs" / stamp,
                              s.get("max_seconds", 1800.0), s.get("max_rss_mb", 2048.0)).start()
        return self.job

    def stage(self) -> str:
        return self.job.stage() if self.job is not None else "idle"

    def poll(self) -> Outcome | None:
        """None while the job runs (or none was started); then the outcome, with the
        challenger registered and promoted or rejected."""
        if self.job is None:
            return None
        report = self.job.poll()
        if report is None:
            return None
        self.job = None
        problems = self.problems + list(report.get("problems", []))
        if not report.get("ok"):
            return Outcome("failed", "", str(report.get("error", "unknown error")),
                           {"problems": problems})
        metrics = dict(report["metrics"], problems=problems)
        entry = self.registry.register(report["model_dir"], report["trained_on"], metrics)
        ok, why = decide(metrics, self.settings.get("metric", "mae"),
                         self.settings.get("margin_frac", 0.02))
        if ok:
            self.registry.promote(entry["version"], f"promoted: {why}")
            return Outcome("promoted", entry["version"], why, metrics)
        self.registry.reject(entry["version"], why)
        self.registry.prune(int(self.settings.get("keep_rejected", 10)))
        return Outcome("rejected", entry["version"], why, metrics)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None
