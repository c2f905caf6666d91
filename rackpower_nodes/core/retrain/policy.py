"""Off-peak retraining, part 1: when. The policy, its gate and the error type of retraining.

:class:`OffPeakPolicy` / :class:`OffPeakGate`: local-time windows (``"01:00-05:00"``,
crossing midnight allowed, :func:`parse_window`) and/or rack load below
``load_threshold_frac`` of the budget for ``load_min_s``; never sooner than
``min_interval_s`` after the last retrain. :class:`RetrainError` is raised by every part of
retraining with a message naming the file, key or value and the reason.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass

__all__ = ["LOAD_STALE_S", "OffPeakGate", "OffPeakPolicy", "RetrainError", "parse_window"]

_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
LOAD_STALE_S = 5.0       # a rack load older than this does not count as quiet


class RetrainError(ValueError):
    """Retraining cannot go on; the message names the file, key or value and the reason."""


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

