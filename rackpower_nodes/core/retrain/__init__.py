"""Off-peak retraining: when to retrain, on what, how to judge the challenger (no rclpy).

- :mod:`.policy`: :class:`OffPeakPolicy` / :class:`OffPeakGate`, local-time windows and/or a
  quiet rack load, never sooner than ``min_interval_s`` after the last retrain;
  :class:`RetrainError`.
- :mod:`.data`: :func:`newest_bags` (the bags to learn from), :func:`error_weights` /
  :func:`resample_weighted` (windows near large logged allocation errors repeated) and
  :func:`holdout_split` (the last ``holdout_s`` held out).
- :mod:`.judge`: :func:`evaluate` / :func:`decide`, champion, challenger and persistence on
  the same held-out windows; promote only when the challenger beats the champion by
  ``margin_frac``.
- :mod:`.job`: :class:`RetrainJob` starts the training job
  (``python -m rackpower_nodes.tools.retrain_job``) in its own process and watches its time
  and memory.
- :mod:`.exclusion`: :class:`FaultTracker` (the health model's fault states as
  ``FlaggedInterval`` s) and :func:`exclude_flagged` (windows overlapping a component's flagged
  interval, widened by ``margin_s`` before it, left out of training and held-out data);
  :func:`save_flags` / :func:`load_flags` keep the intervals across a restart.
- :mod:`.pipeline`: :class:`RetrainPipeline` gathers the data, starts the job, and on its
  report registers the challenger and promotes or rejects it (:class:`Outcome`).

The allocation errors logged in bags are read by
``rackpower_nodes.sources.bags.allocation_errors_from_bags`` (the training job calls it).
This package re-exports the public names of its modules.
"""
from rackpower_nodes.core.retrain.data import (
    BagInfo,
    bag_info,
    error_weights,
    holdout_split,
    newest_bags,
    resample_weighted,
)
from rackpower_nodes.core.retrain.exclusion import (
    MARGIN_S,
    FaultTracker,
    exclude_flagged,
    flags_from_request,
    load_flags,
    save_flags,
)
from rackpower_nodes.core.retrain.job import JOB_MODULE, RetrainJob
from rackpower_nodes.core.retrain.judge import decide, evaluate
from rackpower_nodes.core.retrain.pipeline import Outcome, RetrainPipeline
from rackpower_nodes.core.retrain.policy import (
    LOAD_STALE_S,
    OffPeakGate,
    OffPeakPolicy,
    RetrainError,
    parse_window,
)

__all__ = [
    "JOB_MODULE", "LOAD_STALE_S", "MARGIN_S", "BagInfo", "FaultTracker", "OffPeakGate",
    "OffPeakPolicy", "Outcome", "RetrainError", "RetrainJob", "RetrainPipeline", "bag_info",
    "decide", "error_weights", "evaluate", "exclude_flagged", "flags_from_request",
    "holdout_split", "load_flags", "newest_bags", "parse_window", "resample_weighted",
    "save_flags",
]
