"""Allocation policy inputs: the modes, the components of the rack and the policy config.

Pure, no rclpy. Every power is in watts (W), every time in seconds (s). `Component` and
`PolicyConfig` check their fields when made and raise `ConfigError` naming each bad one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.params import ConfigError


MODES = ("proactive", "reactive", "static", "safe")
QUANTILES = ("p50", "p90", "p99")
SAFE_POLICIES = ("reactive", "static")
ACTIONS = ("raised_from_slack", "took_from_lower_priority", "capped_at_ceiling",
           "budget_exhausted", "none")
PINNED_FRAC = 0.98
"""Measured power at or above this fraction of the allocation in force (and within half the
mode's margin of it) counts as held there: the component is throttled, its demand unknown."""


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Component:
    """One powered component of the rack (W); `priority`: higher keeps its power longer."""

    id: str
    floor_w: float
    ceiling_w: float
    priority: int = 1
    nameplate_w: float | None = None

    def __post_init__(self):
        name = f"component {self.id!r}"
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError(f"component id = {self.id!r}: expected a non-empty string")
        errors = []
        for key in ("floor_w", "ceiling_w"):
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                errors.append(f"{name}: {key} = {value!r}: expected a finite number >= 0 (W)")
        if not errors and self.floor_w > self.ceiling_w:
            errors.append(f"{name}: floor_w = {self.floor_w!r} > ceiling_w = "
                          f"{self.ceiling_w!r}: expected floor_w <= ceiling_w")
        if not isinstance(self.priority, (int, np.integer)) or isinstance(self.priority, bool):
            errors.append(f"{name}: priority = {self.priority!r}: expected an integer")
        plate = self.nameplate_w
        if plate is not None and (not _is_number(plate) or not math.isfinite(plate) or plate < 0):
            errors.append(f"{name}: nameplate_w = {plate!r}: expected None or a finite "
                          "number >= 0 (W)")
        if errors:
            raise ConfigError(errors)

    @property
    def weight_w(self) -> float:
        """Static split weight, W: the nameplate rating, or the ceiling when none is given."""
        return float(self.ceiling_w if self.nameplate_w is None else self.nameplate_w)


# (field, lowest allowed, lowest is allowed itself, highest allowed)
_CONFIG_RANGES = {
    "breaker_w": (0.0, False, math.inf), "derating": (0.0, False, 1.0),
    "margin_frac": (0.0, True, math.inf), "margin_w": (0.0, True, math.inf),
    "lead_s": (0.0, True, math.inf), "window_s": (0.0, False, math.inf),
    "reactive_margin_frac": (0.0, True, math.inf), "reactive_margin_w": (0.0, True, math.inf),
    "error_threshold_frac": (0.0, True, math.inf), "error_threshold_w": (0.0, True, math.inf),
    "forecast_stale_s": (0.0, False, math.inf), "safe_margin_frac": (0.0, True, math.inf),
    "samples_stale_s": (0.0, False, math.inf), "pinned_growth": (1.0, True, 100.0),
    "pinned_hold_s": (0.0, True, math.inf),
}


@dataclass(frozen=True)
class PolicyConfig:
    """Allocation policy. Powers in W, times in s, fractions of the value they scale.

    Proactive demand is the forecast peak at `quantile` over [now + lead_s, now + lead_s +
    window_s] plus max(margin_frac * peak, margin_w). Reactive demand is the last measured
    power plus max(reactive_margin_frac * x, reactive_margin_w). A component whose measured
    power is off the p50 forecast by more than max(error_threshold_frac * p50,
    error_threshold_w) is corrected at once. A forecast whose origin is older than
    `forecast_stale_s` sends a proactive controller to safe mode, which allocates by
    `safe_policy`: reactive with `safe_margin_frac`, or the static split. No fresh
    measurement batch for more than `samples_stale_s` sends every mode to safe mode, which
    then allocates the static split (there is nothing to react to). A component held at its
    allocation in force (pinned: throttled, its demand unknown but at least that) for
    `pinned_hold_s` asks, as headroom, for `pinned_growth` times it plus the margin, until it
    is no longer pinned (a shorter clip, e.g. noise above the margin, gains the margin only).
    """

    breaker_w: float
    derating: float = 0.8
    quantile: str = "p99"
    margin_frac: float = 0.05
    margin_w: float = 5.0
    lead_s: float = 1.0
    window_s: float = 2.0
    reactive_margin_frac: float = 0.10
    reactive_margin_w: float = 10.0
    error_threshold_frac: float = 0.15
    error_threshold_w: float = 20.0
    forecast_stale_s: float = 0.25
    safe_policy: str = "reactive"
    safe_margin_frac: float = 0.25
    samples_stale_s: float = 0.5
    pinned_growth: float = 3.0
    pinned_hold_s: float = 0.2

    def __post_init__(self):
        errors = []
        for key, (low, low_ok, high) in _CONFIG_RANGES.items():
            value = getattr(self, key)
            if not _is_number(value) or not math.isfinite(value):
                errors.append(f"{key} = {value!r}: expected a finite number")
            elif value < low or (value == low and not low_ok) or value > high:
                bound = ">=" if low_ok else ">"
                upper = "" if high == math.inf else f" and <= {high}"
                errors.append(f"{key} = {value!r}: expected a number {bound} {low}{upper}")
        if self.quantile not in QUANTILES:
            errors.append(f"quantile = {self.quantile!r}: expected one of {', '.join(QUANTILES)}")
        if self.safe_policy not in SAFE_POLICIES:
            errors.append(f"safe_policy = {self.safe_policy!r}: expected one of "
                          f"{', '.join(SAFE_POLICIES)}")
        if errors:
            raise ConfigError(errors)

    @property
    def budget_w(self) -> float:
        """Continuous rack budget, W: breaker rating x derating."""
        return float(self.breaker_w) * float(self.derating)
