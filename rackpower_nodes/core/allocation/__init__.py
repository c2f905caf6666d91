"""Rack power allocation: budget water-filling, forecast peaks, modes and dynamic correction.

Pure numpy, no rclpy. Every power is in watts (W), every time in seconds (s, Unix time for
instants). The controller turns the newest measurements and power forecast into one allocation
per component for the coming actuation window; whatever the inputs, an allocation it returns
sums to at most the rack budget (breaker rating x derating) and lies in [0, ceiling] per
component.

The parts: `policy` (modes, components, the policy config), `filling` (water-filling, the pure
division of the budget), `forecast` (the forecast view and its peaks) and `controller` (the
controller's modes, safe/static fallbacks and corrections). This package re-exports their
public names.
"""

from rackpower_nodes.core.allocation.controller import (
    AllocationController, Correction, Decision)
from rackpower_nodes.core.allocation.feeds import (
    FeedPlan, check_feed_plan, contingency_w, feed_fill, feed_limits, feed_load_w,
    loads_after_loss, moved_split, tolerated_multiple)
from rackpower_nodes.core.allocation.filling import water_fill, water_fill_tiers
from rackpower_nodes.core.allocation.forecast import ForecastView, forecast_now, forecast_peak
from rackpower_nodes.core.allocation.policy import (
    ACTIONS, MODES, PINNED_FRAC, QUANTILES, SAFE_POLICIES, Component, PolicyConfig)

__all__ = [
    "ACTIONS", "MODES", "PINNED_FRAC", "QUANTILES", "SAFE_POLICIES", "AllocationController",
    "Component", "Correction", "Decision", "FeedPlan", "ForecastView", "PolicyConfig",
    "check_feed_plan", "contingency_w", "feed_fill", "feed_limits", "feed_load_w",
    "forecast_now", "forecast_peak", "loads_after_loss", "moved_split", "tolerated_multiple",
    "water_fill", "water_fill_tiers",
]
