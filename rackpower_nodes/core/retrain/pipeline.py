"""Off-peak retraining, part 5: the pipeline. Data in, a job run, the challenger judged.

:class:`RetrainPipeline` gathers the data (the newest bags, :mod:`.data`), starts a
:class:`~.job.RetrainJob`, and on its report registers the challenger and promotes or rejects
it (:func:`~.judge.decide`); :class:`Outcome` is what one retrain ended with.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rackpower_nodes.core.health.types import FlaggedInterval
from rackpower_nodes.core.retrain.data import newest_bags
from rackpower_nodes.core.retrain.job import RetrainJob
from rackpower_nodes.core.retrain.judge import decide
from rackpower_nodes.core.retrain.policy import RetrainError

__all__ = ["Outcome", "RetrainPipeline"]


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
    lstm, threads, nice, holdout_s, max_windows, weighting, exclusion, seed; see retrain_job).
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
              sources: list[dict] | None = None,
              flagged: Sequence[FlaggedInterval] = ()) -> RetrainJob:
        """Start a job on ``sources`` (default: the newest bags of ``bag_folder``) with the
        logged ``errors`` (t_unix, component, |error_w|) and the ``flagged`` faulty intervals
        whose windows it leaves out. RetrainError when there is no data or a job runs
        already."""
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
                       flagged=[f.as_dict() for f in flagged],
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
