"""The allocation controller: mode selection (safe/static, stale inputs) and correction.

Pure numpy, no rclpy. Powers in W, times in s. Each `AllocationController.step` picks the
mode it can use, turns measurements and forecast into demands and water-fills the budget;
the result is a `Decision`, with a `Correction` per component corrected at once.
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from rackpower_nodes.core.allocation.feed_control import FeedGuard
from rackpower_nodes.core.allocation.feeds import FeedPlan
from rackpower_nodes.core.allocation.filling import water_fill, water_fill_tiers
from rackpower_nodes.core.allocation.forecast import (
    ForecastView, _frozen_array, forecast_now, forecast_peak)
from rackpower_nodes.core.allocation.policy import (
    MODES, PINNED_FRAC, Component, PolicyConfig, _is_number)
from rackpower_nodes.core.params import ConfigError


@dataclass(frozen=True)
class Correction:
    """One component corrected at once because of its measured power (W).

    `predicted_w`: p50 forecast for the measurement's moment (NaN if none); `actual_w`: the
    measured power; `allocated_w`: the allocation in force when it was measured;
    `new_allocated_w`: the allocation after the correction; `action`: one of ACTIONS.
    """

    component: str
    predicted_w: float
    actual_w: float
    allocated_w: float
    new_allocated_w: float
    action: str

    @property
    def error_w(self) -> float:
        """actual_w - predicted_w, W (NaN without a forecast)."""
        return self.actual_w - self.predicted_w


@dataclass(frozen=True)
class Decision:
    """One control cycle's result; per-component arrays (W) in the controller's order.

    `mode`: the mode used (safe when forced); `mode_reason`: why safe ('' otherwise);
    `forecast_w`: the forecast peak used (NaN outside proactive or without a forecast);
    `demand_w`: what each component asked for before the budget cut; `contingency_w`: with
    redundant feeds, per feed the allocation to apply at once if it is lost (empty otherwise).
    """

    t_unix: float
    mode: str
    mode_reason: str
    allocated_w: np.ndarray
    forecast_w: np.ndarray
    demand_w: np.ndarray
    corrections: tuple[Correction, ...]
    contingency_w: dict[str, np.ndarray] = field(default_factory=dict)


def _plus_margin(x: np.ndarray, frac: float, minimum_w: float) -> np.ndarray:
    """x + max(frac * x, minimum_w), W (NaN stays NaN)."""
    with np.errstate(over="ignore"):
        return x + np.maximum(frac * x, minimum_w)


class AllocationController:
    """Computes each cycle's allocation (W) for a fixed list of components.

    `mode` is the requested mode; the mode used can be `safe` instead (see `step`).
    `allocated_w` is the newest allocation decided, the static split until the first step.
    """

    def __init__(self, components: Sequence[Component], cfg: PolicyConfig,
                 mode: str = "proactive", feeds: FeedPlan | None = None):
        self.components = tuple(components)
        if not self.components:
            raise ConfigError("components = (): expected at least one component")
        for c in self.components:
            if not isinstance(c, Component):
                raise ConfigError(f"components: {c!r}: expected a Component")
        seen = set()
        for c in self.components:
            if c.id in seen:
                raise ConfigError(f"components: id {c.id!r} appears twice: expected unique ids")
            seen.add(c.id)
        if not isinstance(cfg, PolicyConfig):
            raise ConfigError(f"cfg = {cfg!r}: expected a PolicyConfig")
        self.cfg = cfg
        self.ids = tuple(c.id for c in self.components)
        self.floor_w = _frozen_array([c.floor_w for c in self.components])
        self.ceiling_w = _frozen_array([c.ceiling_w for c in self.components])
        self.priority = _frozen_array([c.priority for c in self.components], np.int64)
        self.set_mode(mode)
        # redundant feeds (core/allocation/feeds.py): every fill keeps the feed limits
        self.feeds = None if feeds is None else FeedGuard(feeds, self.components)
        self._contingency: dict[str, np.ndarray] = {}
        self.budget_w = float(cfg.budget_w)     # the budget in force (set_budget), W
        self._static = _frozen_array(self._static_split())
        self.allocated_w = self._static.copy()
        # the controller's own estimate of the allocation in force: the newest decided at
        # least lead_s (the actuation delay) ago; the decisions not yet in force
        self._in_force = self._static.copy()
        self._pending: deque[tuple[float, np.ndarray]] = deque()
        self._pinned_since = np.full(len(self.ids), np.nan)   # start of each pinned run, s

    def set_mode(self, mode: str) -> None:
        """Request `mode`, one of MODES; ValueError otherwise."""
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode

    def set_budget(self, budget_w: float) -> None:
        """Allocate within `budget_w` (W) from the next step on, e.g. a power coordinator's
        grant: the fill, the static split and the safe state all use it. ValueError for a
        budget that is not a positive finite number."""
        if not _is_number(budget_w) or not math.isfinite(budget_w) or budget_w <= 0:
            raise ValueError(f"budget_w = {budget_w!r}: expected a positive number of W")
        if float(budget_w) != self.budget_w:
            self.budget_w = float(budget_w)
            self._static = _frozen_array(self._static_split())

    def _fill(self, demand: np.ndarray) -> np.ndarray:
        if self.feeds is not None:      # the static split: safe after a loss, uncapped
            return self.feeds.fill(demand, self.budget_w, secure=True)
        return water_fill(demand, self.floor_w, self.ceiling_w, self.priority, self.budget_w)

    def _static_split(self) -> np.ndarray:
        weight = np.array([c.weight_w for c in self.components])
        total = float(np.sum(weight))
        share = self.budget_w * weight / total if total > 0 else np.zeros_like(weight)
        return self._fill(np.maximum(share, self.floor_w))

    def static_allocation(self) -> np.ndarray:
        """Nameplate split, W: budget x nameplate / sum(nameplate), raised to the floor,
        capped at the ceiling, then water-filled to the budget (floors kept when they fit)."""
        return self._static.copy()

    def _select_mode(self, t_unix, forecast, pdu_ok, pdu_reason, samples_age_s,
                     samples_reason) -> tuple[str, str, bool, bool]:
        """(mode used, reason, forecast usable, measurements stale)."""
        reasons = []
        fresh = False
        blind = not samples_age_s <= self.cfg.samples_stale_s
        if forecast is not None:
            age = t_unix - forecast.t_unix
            fresh = -self.cfg.forecast_stale_s <= age <= self.cfg.forecast_stale_s
        if self.mode == "safe":
            reasons.append("requested")
        if not pdu_ok:
            reasons.append(f"pdu: {pdu_reason or 'not answering'}")
        if blind:
            reasons.append("power_samples stale: " + (samples_reason or (
                f"no fresh batch for {samples_age_s:.2f} s" if math.isfinite(samples_age_s)
                else "none received")))
        if self.mode == "proactive" and not fresh:
            if forecast is None:
                reasons.append("forecast missing")
            elif age > 0:
                reasons.append(f"forecast stale {age:.2f} s")
            else:
                reasons.append(f"forecast {-age:.2f} s ahead of the clock")
        if reasons:
            return "safe", "; ".join(reasons), fresh, blind
        return self.mode, "", fresh, blind

    def _check_inputs(self, t_unix, measured_w, forecast, samples_age_s) -> np.ndarray:
        if not _is_number(t_unix) or not math.isfinite(t_unix):
            raise ValueError(f"t_unix = {t_unix!r}: expected a finite time, s")
        if not _is_number(samples_age_s) or math.isnan(samples_age_s):
            raise ValueError(f"samples_age_s = {samples_age_s!r}: expected a number, s "
                             "(inf: no batch yet)")
        measured = np.array(measured_w, dtype=np.float64)
        if measured.shape != (len(self.ids),):
            raise ValueError(f"measured_w has shape {measured.shape}: expected "
                             f"({len(self.ids)},), one value per component (W)")
        if forecast is not None:
            if not isinstance(forecast, ForecastView):
                raise ValueError(f"forecast = {forecast!r}: expected a ForecastView or None")
            if forecast.n_components != len(self.ids):
                raise ValueError(f"forecast has {forecast.n_components} components: expected "
                                 f"{len(self.ids)}, in the controller's order")
        return measured

    def in_force_at(self, t_unix: float, in_force_w=None) -> np.ndarray:
        """The allocation in force when the power of `t_unix` was measured, W: what the
        devices reported holding (`in_force_w`) where known, else the newest allocation this
        controller decided at least lead_s before `t_unix` (inf: no limit)."""
        while self._pending and self._pending[0][0] <= t_unix - self.cfg.lead_s:
            self._in_force = self._pending.popleft()[1]
        if in_force_w is None:
            return self._in_force.copy()
        held = np.array(in_force_w, dtype=np.float64)
        if held.shape != (len(self.ids),):
            raise ValueError(f"in_force_w has shape {held.shape}: expected ({len(self.ids)},), "
                             "one value per component (W, NaN unknown)")
        return np.where(np.isnan(held), self._in_force, held)

    def _held(self, measured, reference, frac: float, minimum_w: float):
        """(at or above, pinned): measured at or above the allocation in force less a band of
        (1 - PINNED_FRAC) of it and at most half the mode's margin (an unthrottled component
        sits a margin below); pinned when also within the band above it (held there, its
        demand censored), rather than well above it (not held: its demand was measured)."""
        with np.errstate(invalid="ignore"):
            band = np.minimum((1.0 - PINNED_FRAC) * reference,
                              0.5 * np.maximum(frac * reference, minimum_w))
            above = measured >= reference - band
            return above, above & (measured <= reference + band)

    def _margin(self, mode) -> tuple[float, float]:
        """The (frac, W) margin of the mode used."""
        cfg = self.cfg
        if mode == "proactive":
            return cfg.margin_frac, cfg.margin_w
        if mode == "safe":
            return cfg.safe_margin_frac, cfg.reactive_margin_w
        return cfg.reactive_margin_frac, cfg.reactive_margin_w

    def _demand(self, mode, base, peak) -> tuple[np.ndarray, float, float]:
        """Demand (W) and the (frac, W) margin of the mode used."""
        frac, minimum = self._margin("safe" if mode == "safe" else "reactive")
        reactive = _plus_margin(base, frac, minimum)
        if mode != "proactive":
            return np.where(np.isnan(reactive), self._static, reactive), frac, minimum
        frac, minimum = self._margin(mode)
        ahead = _plus_margin(np.maximum(peak, 0.0), frac, minimum)
        demand = np.fmax(ahead, _plus_margin(base, frac, minimum))
        demand = np.where(np.isnan(peak), reactive, demand)
        return np.where(np.isnan(demand), self._static, demand), frac, minimum

    def _off_forecast(self, measured, predicted) -> np.ndarray:
        cfg = self.cfg
        limit = np.maximum(cfg.error_threshold_frac * np.abs(predicted), cfg.error_threshold_w)
        with np.errstate(invalid="ignore"):
            return np.abs(measured - predicted) > limit

    def step(self, t_unix: float, measured_w: np.ndarray, forecast: ForecastView | None,
             pdu_ok: bool = True, pdu_reason: str = "", samples_age_s: float = 0.0,
             samples_reason: str = "", in_force_w=None,
             lost_feeds=frozenset()) -> Decision:
        """One control cycle at `t_unix` (s) from the newest measured power per component (W,
        NaN where unknown) and the newest forecast (None if none). `samples_age_s`: time
        since the last fresh measurement batch, s (inf: none yet); `samples_reason` says
        why it is stale (no batch, clock stuck, all NaN) for the mode reason. `in_force_w`:
        the allocation the devices held when the power was measured (W, NaN unknown; None:
        the controller's own estimate, see `in_force_at`).

        The requested mode is used unless it is proactive and the forecast is missing or its
        origin is more than forecast_stale_s away from t_unix, or the PDU is not answering
        (`pdu_ok` False), or the measurements are older than samples_stale_s: then safe
        mode, with the reason; without measurements safe mode allocates the static split,
        whatever its policy. Every component asks for at least its floor. A component held
        at the allocation in force when its power was measured (pinned: throttled, its demand
        censored) for pinned_hold_s is expected to draw what it holds and asks, as headroom,
        for pinned_growth times it plus the margin (from slack and lower priorities' headroom,
        never from anyone's expected draw), so it recovers within an actuation delay or two
        instead of a margin per delay. Components at
        or above their allocation in force, or off the p50 forecast by more than the error
        threshold (proactive), are corrected at once: they ask for at least the measured
        power plus the mode's margin, and each yields a `Correction`. The budget is then
        water-filled by priority, expected draws first, and the result is the newest
        allocation. Static mode, and safe mode under the static policy, allocate the static
        split and correct nothing. With redundant feeds every allocation keeps the feed
        limits and each decision carries the contingencies; `lost_feeds` (names) applies the
        contingency for them at once: mode safe, reason 'feed <X> lost' (`FeedGuard.on_loss`).
        Raises ValueError for a non-finite time, arrays of the wrong size or an unknown feed.
        """
        measured = self._check_inputs(t_unix, measured_w, forecast, samples_age_s)
        if self.feeds is not None and self.feeds.check_lost(lost_feeds):
            return self._feed_lost(t_unix, frozenset(lost_feeds))
        reference = self.in_force_at(t_unix, in_force_w)
        mode, reason, fresh, blind = self._select_mode(t_unix, forecast, pdu_ok, pdu_reason,
                                                       samples_age_s, samples_reason)
        n = len(self.ids)
        peak = np.full(n, np.nan)
        predicted = forecast_now(forecast, t_unix) if fresh else np.full(n, np.nan)
        if mode == "static" or (mode == "safe" and (blind or self.cfg.safe_policy == "static")):
            allocated = self._static.copy()
            decision = Decision(t_unix, mode, reason, _frozen_array(allocated),
                                _frozen_array(peak), _frozen_array(self._static), ())
            self._pinned_since[:] = np.nan        # nothing is judged pinned meanwhile
            return self._decided(decision, allocated)
        if mode == "proactive":
            peak = forecast_peak(forecast, t_unix, self.cfg, self.cfg.quantile)
        above, pinned = self._held(measured, reference, *self._margin(mode))
        base = np.maximum(measured, 0.0)
        base = np.where(pinned, np.maximum(base, reference), base)   # demand is at least that
        demand, frac, minimum = self._demand(mode, base, peak)
        flagged = above.copy()
        if mode == "proactive":
            flagged |= self._off_forecast(measured, predicted)
        wanted = np.where(flagged, np.fmax(demand, _plus_margin(base, frac, minimum)), demand)
        self._pinned_since = np.where(pinned, np.fmin(self._pinned_since, t_unix), np.nan)
        with np.errstate(invalid="ignore"):
            pinned_for = t_unix - self._pinned_since                    # NaN: not pinned
            held = pinned_for >= self.cfg.pinned_hold_s - 1e-9
            stuck = pinned_for >= self.cfg.pinned_hold_s + self.cfg.lead_s - 1e-9
        # headroom up to pinned_growth x what it holds, from slack and lower priorities'
        # headroom; only a component still held a whole actuation delay later (`stuck`: slack
        # did not free it) claims lower priorities' expected draw (_priority_claims)
        grown = _plus_margin(reference * self.cfg.pinned_growth, frac, minimum)
        wanted = np.where(held, np.fmax(wanted, grown), wanted)
        wanted = np.maximum(wanted, self.floor_w)  # idle power is always asked for
        # what each component is expected to draw (a pinned one: what it holds) comes before
        # anyone's headroom
        need = base if mode != "proactive" else np.fmax(
            base, forecast_peak(forecast, t_unix, self.cfg, "p50"))
        need = self._priority_claims(stuck, grown, need)
        if self.feeds is None:
            allocated = water_fill_tiers(need, wanted, self.floor_w, self.ceiling_w,
                                         self.priority, self.budget_w)
        else:                               # the same tiers within every feed limit
            allocated = self.feeds.fill_tiers(need, wanted, self.budget_w)
        corrections = self._corrections(np.flatnonzero(flagged), measured, predicted, wanted,
                                        allocated, reference)
        decision = Decision(t_unix, mode, reason, _frozen_array(allocated),
                            _frozen_array(peak), _frozen_array(wanted), corrections)
        return self._decided(decision, allocated)

    def _priority_claims(self, held, grown, need) -> np.ndarray:
        """Expected draws with each held component's growth claimed from strictly lower
        priorities' expected draw above their floors, highest priority first: a throttled
        component is not kept waiting by a lower priority, and never takes from its own level
        (that would throttle its peers, who would claim back in turn)."""
        need = np.array(need, dtype=np.float64)
        spare = np.maximum(np.nan_to_num(need) - self.floor_w, 0.0)
        for level in sorted(set(self.priority[held].tolist()), reverse=True):
            mine = held & (self.priority == level)
            extra = np.maximum(np.nan_to_num(grown - need), 0.0) * mine
            lower = self.priority < level
            pool, wanted = float(spare[lower].sum()), float(extra.sum())
            if pool <= 0.0 or wanted <= 0.0:
                continue
            take = min(pool, wanted)
            need += extra * (take / wanted)
            spare[lower] *= 1.0 - take / pool
        return need

    def _feed_lost(self, t_unix: float, lost: frozenset[str]) -> Decision:
        allocated, reason = self.feeds.on_loss(lost, self._contingency, self.allocated_w,
                                               self.budget_w)
        self._pinned_since[:] = np.nan            # nothing is judged pinned meanwhile
        self.allocated_w = allocated
        self._pending.append((t_unix, allocated.copy()))
        return Decision(t_unix, "safe", reason, _frozen_array(allocated),
                        _frozen_array(np.full(len(self.ids), np.nan)),
                        _frozen_array(allocated), (), dict(self._contingency))

    def _decided(self, decision: Decision, allocated: np.ndarray) -> Decision:
        if self.feeds is not None:
            self._contingency = self.feeds.contingencies(allocated, self.budget_w)
            decision = replace(decision, contingency_w=dict(self._contingency))
        self.allocated_w = allocated
        self._pending.append((decision.t_unix, np.array(allocated, dtype=np.float64)))
        return decision

    def _corrections(self, flagged, measured, predicted, wanted, allocated, reference):
        target = np.clip(wanted, 0.0, self.ceiling_w)
        out = []
        for i in flagged:
            out.append(Correction(self.ids[i], float(predicted[i]), float(measured[i]),
                                  float(reference[i]), float(allocated[i]),
                                  self._action(i, measured[i], wanted[i], allocated, target)))
        return tuple(out)

    def _action(self, i, actual, wanted, allocated, target) -> str:
        ceiling, new, old = self.ceiling_w[i], allocated[i], self.allocated_w[i]
        if wanted > ceiling and new >= ceiling:
            return "capped_at_ceiling"
        if new < min(actual, ceiling):
            return "budget_exhausted"
        if new <= old:
            return "none"
        lower = self.priority < self.priority[i]
        if np.any(allocated[lower] < target[lower]):
            return "took_from_lower_priority"
        return "raised_from_slack"
