"""Rack power allocation: budget water-filling, forecast peaks, modes and dynamic correction.

Pure numpy, no rclpy. Every power is in watts (W), every time in seconds (s, Unix time for
instants). The controller turns the newest measurements and power forecast into one allocation
per component for the coming actuation window; whatever the inputs, an allocation it returns
sums to at most the rack budget (breaker rating x derating) and lies in [0, ceiling] per
component.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.params import ConfigError

MODES = ("proactive", "reactive", "static", "safe")
QUANTILES = ("p50", "p90", "p99")
SAFE_POLICIES = ("reactive", "static")
ACTIONS = ("raised_from_slack", "took_from_lower_priority", "capped_at_ceiling",
           "budget_exhausted", "none")
PINNED_FRAC = 0.98
"""Measured power at or above this fraction of the allocation counts as held at the allocation."""


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
    "samples_stale_s": (0.0, False, math.inf),
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
    then allocates the static split (there is nothing to react to).
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


# ---------------------------------------------------------------- water-filling


def _total(x: np.ndarray) -> float:
    """Largest of the usual float64 sums of `x` (numpy pairwise, running, exact, Python)."""
    if x.size == 0:
        return 0.0
    values = x.tolist()
    try:
        exact = math.fsum(values)
    except OverflowError:
        exact = math.inf
    with np.errstate(over="ignore"):
        return max(float(np.sum(x)), float(np.cumsum(x)[-1]), exact, float(sum(values)))


def _fill_inputs(demand_w, floor_w, ceiling_w, priority, budget_w):
    arrays = {}
    for key, value in (("demand_w", demand_w), ("floor_w", floor_w),
                       ("ceiling_w", ceiling_w), ("priority", priority)):
        arr = np.array(value, dtype=np.float64)
        if arr.ndim != 1:
            raise ValueError(f"water_fill: {key} has shape {arr.shape}: expected one dimension")
        arrays[key] = arr
    sizes = {key: arr.size for key, arr in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"water_fill: lengths {sizes}: expected equal lengths")
    demand, floor, ceiling, prio = arrays.values()
    budget = float(budget_w)
    if math.isnan(budget) or budget < 0:
        raise ValueError(f"water_fill: budget_w = {budget_w!r}: expected a number >= 0 (W)")
    for key, arr in (("floor_w", floor), ("ceiling_w", ceiling)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
        if bad.size:
            raise ValueError(f"water_fill: {key}[{bad[0]}] = {float(arr[bad[0]])!r}: expected a "
                             "finite number >= 0 (W)")
    bad = np.flatnonzero(floor > ceiling)
    if bad.size:
        i = bad[0]
        raise ValueError(f"water_fill: floor_w[{i}] = {float(floor[i])!r} > ceiling_w[{i}] = "
                         f"{float(ceiling[i])!r}: expected floor_w <= ceiling_w")
    bad = np.flatnonzero(~np.isfinite(prio))
    if bad.size:
        raise ValueError(f"water_fill: priority[{bad[0]}] = {float(prio[bad[0]])!r}: expected a "
                         "finite number")
    return demand, floor, ceiling, prio, budget


def _water_level(excess: np.ndarray, left: float) -> float:
    """Level L >= 0 with sum(min(excess, L)) == left, for 0 <= left < sum(excess)."""
    s = np.sort(excess)
    m = s.size
    before = np.concatenate(([0.0], np.cumsum(s)[:-1]))
    with np.errstate(over="ignore"):
        spend = before + (m - np.arange(m)) * s
    j = int(np.argmax(spend >= left)) if np.any(spend >= left) else m - 1
    return max(0.0, (left - before[j]) / (m - j))


def _fill_levels(grant, target, prio, budget) -> np.ndarray:
    """Add the budget left after `grant` to the excess over it, highest priority level first."""
    result = grant.copy()
    left = budget - _total(grant)
    for level in np.unique(prio)[::-1]:
        idx = np.flatnonzero(prio == level)
        excess = target[idx] - grant[idx]
        need = _total(excess)
        if need <= left:
            result[idx] = target[idx]
            left -= need
            continue
        lvl = _water_level(excess, max(left, 0.0))
        result[idx] = np.where(excess <= lvl, target[idx],
                               np.minimum(grant[idx] + lvl, target[idx]))
        break
    return result


def _grant_by_priority(grant, prio, budget) -> np.ndarray:
    """Floors that do not all fit: whole levels from the highest, the first short one scaled."""
    result = np.zeros_like(grant)
    left = budget
    for level in np.unique(prio)[::-1]:
        idx = np.flatnonzero(prio == level)
        need = _total(grant[idx])
        if need <= left:
            result[idx] = grant[idx]
            left -= need
            continue
        top = float(np.max(grant[idx]))
        if top > 0 and left > 0:
            share = grant[idx] / top  # scaled first so that huge floors cannot overflow
            result[idx] = np.minimum(grant[idx], left * (share / _total(share)))
        break
    return result


def _shave(x, low, prio, budget) -> np.ndarray:
    """Lower `x` towards `low`, lowest priority first, until every float64 sum fits `budget`."""
    x = x.copy()
    for _ in range(4 * x.size + 64):
        over = _total(x) - budget
        if over <= 0:
            return x
        room = x - low
        movable = room > 0
        if not movable.any():
            break
        lowest = prio[movable].min()
        pick = np.where(movable & (prio == lowest), room, -1.0)
        i = int(np.argmax(pick))
        x[i] = max(low[i], x[i] - max(over, float(np.spacing(x[i]))))
    return low.copy() if _total(low) <= budget else np.zeros_like(x)


def water_fill(demand_w, floor_w, ceiling_w, priority, budget_w) -> np.ndarray:
    """Cut per-component demands (W) to a budget (W), lower priorities first.

    The target is demand clipped to [0, ceiling_w] (NaN demand asks for the floor). Targets
    that fit the budget are returned as they are. Otherwise every component first gets
    min(floor, target), or, when even those do not fit, they are granted by priority level,
    highest first, the first level that does not fit scaled proportionally. What budget is left
    goes to the excess over those grants, highest level first: a level whose excess fits gets
    it all, the first one that does not fit is water-filled (one common level), lower levels
    get nothing more. The result never exceeds its target or ceiling, and sums to at most
    `budget_w` under numpy, running, exact and Python float64 summation alike.

    Raises ValueError for arrays of different lengths, a negative or NaN budget, a floor or
    ceiling that is negative or not finite, a floor above its ceiling, or a non-finite priority.
    """
    demand, floor, ceiling, prio, budget = _fill_inputs(
        demand_w, floor_w, ceiling_w, priority, budget_w)
    target = np.clip(np.where(np.isnan(demand), floor, demand), 0.0, ceiling)
    if _total(target) <= budget:
        return target
    grant = np.minimum(floor, target)
    if _total(grant) <= budget:
        return _shave(_fill_levels(grant, target, prio, budget), grant, prio, budget)
    granted = _grant_by_priority(grant, prio, budget)
    return _shave(granted, np.zeros_like(granted), prio, budget)


def water_fill_tiers(need_w, want_w, floor_w, ceiling_w, priority, budget_w) -> np.ndarray:
    """Water-filling in two tiers: first every component's `need_w` (its expected draw,
    capped at `want_w`) by priority as in `water_fill`, floors included; then what budget is
    left goes to the headroom up to `want_w`, again highest priority first. Under a short
    budget a component thus keeps its expected draw while others lose headroom, and lower
    priorities lose first within each tier. The first tier asks for at least the floors; NaN
    need or want asks for the floor only. Same invariants as `water_fill`."""
    floors = np.array(floor_w, dtype=np.float64)
    want = np.array(want_w, dtype=np.float64)
    if want.shape == floors.shape:
        want = np.where(np.isnan(want), floors, want)
    need = np.fmin(np.fmax(np.array(need_w, dtype=np.float64), floors), want)
    first = water_fill(need, floor_w, ceiling_w, priority, budget_w)
    _, floor, ceiling, prio, budget = _fill_inputs(want, floor_w, ceiling_w, priority, budget_w)
    left = budget - _total(first)
    if not left > 0:
        return first
    extra_want = np.maximum(want - first, 0.0)
    extra = water_fill(extra_want, np.zeros_like(first), np.maximum(ceiling - first, 0.0),
                       prio, left)
    top = np.maximum(np.clip(want, 0.0, ceiling), first)      # no rounding above the want
    return _shave(np.minimum(first + extra, top), first, prio, budget)


# ---------------------------------------------------------------- forecasts


def _frozen_array(value, dtype=np.float64) -> np.ndarray:
    arr = np.array(value, dtype=dtype)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class ForecastView:
    """A power forecast in the controller's component order.

    `t_unix`: forecast origin, s. Step k (1-based) covers [t_unix + (k-1) step_s, t_unix +
    k step_s]. `p50_w`, `p90_w`, `p99_w`: (n_components, horizon) W, NaN where unknown.
    `model`: "name version". `fallback`: (n,) bool, True where the persistence fallback made it.
    """

    t_unix: float
    step_s: float
    p50_w: np.ndarray
    p90_w: np.ndarray
    p99_w: np.ndarray
    model: str = ""
    fallback: np.ndarray | None = None

    def __post_init__(self):
        if not _is_number(self.t_unix) or not math.isfinite(self.t_unix):
            raise ValueError(f"ForecastView t_unix = {self.t_unix!r}: expected a finite time, s")
        if not _is_number(self.step_s) or not math.isfinite(self.step_s) or self.step_s <= 0:
            raise ValueError(f"ForecastView step_s = {self.step_s!r}: expected a finite "
                             "number > 0, s")
        shape = None
        for key in QUANTILES:
            arr = _frozen_array(getattr(self, f"{key}_w"))
            if arr.ndim != 2 or (shape is not None and arr.shape != shape):
                raise ValueError(f"ForecastView {key}_w has shape {arr.shape}: expected "
                                 f"(n_components, horizon){'' if shape is None else shape}")
            shape = arr.shape
            object.__setattr__(self, f"{key}_w", arr)
        if self.fallback is not None:
            flags = _frozen_array(self.fallback, bool)
            if flags.shape != (shape[0],):
                raise ValueError(f"ForecastView fallback has shape {flags.shape}: expected "
                                 f"({shape[0]},)")
            object.__setattr__(self, "fallback", flags)

    @property
    def n_components(self) -> int:
        return self.p50_w.shape[0]

    @property
    def horizon(self) -> int:
        """Number of steps."""
        return self.p50_w.shape[1]

    def quantile_w(self, quantile: str) -> np.ndarray:
        """The (n_components, horizon) array of one quantile, W."""
        if quantile not in QUANTILES:
            raise ValueError(f"quantile = {quantile!r}: expected one of {', '.join(QUANTILES)}")
        return getattr(self, f"{quantile}_w")


def _steps_since(forecast: ForecastView, t: float) -> float:
    """(t - origin) / step_s, snapped to a whole number when within float noise of one."""
    u = (t - forecast.t_unix) / forecast.step_s
    near = round(u)
    return float(near) if abs(u - near) < 1e-9 else u


def forecast_peak(forecast: ForecastView, now_s: float, cfg: PolicyConfig,
                  quantile: str) -> np.ndarray:
    """Per component, the highest `quantile` forecast (W) over the actuation window.

    The window is [now_s + lead_s, now_s + lead_s + window_s] (s); every horizon step that
    overlaps it by more than an instant counts. A window reaching past the horizon is cut to
    the horizon's end (a window lying wholly past it uses the last step; one before the
    origin, the first). NaN where a component has no forecast value in those steps.
    """
    if not _is_number(now_s) or not math.isfinite(now_s):
        raise ValueError(f"now_s = {now_s!r}: expected a finite time, s")
    values = forecast.quantile_w(quantile)
    n, horizon = values.shape
    if horizon == 0:
        return np.full(n, np.nan)
    start = now_s + cfg.lead_s
    first = math.floor(_steps_since(forecast, start)) + 1
    last = math.ceil(_steps_since(forecast, start + cfg.window_s))
    last = min(max(last, 1), horizon)
    first = min(max(first, 1), last)
    return np.fmax.reduce(values[:, first - 1:last], axis=1)


def forecast_now(forecast: ForecastView, now_s: float, quantile: str = "p50") -> np.ndarray:
    """Per component, the `quantile` forecast (W) of the step covering `now_s` (clamped)."""
    values = forecast.quantile_w(quantile)
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    k = min(max(math.ceil(_steps_since(forecast, now_s)), 1), values.shape[1])
    return values[:, k - 1].copy()


# ---------------------------------------------------------------- controller


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
    `demand_w`: what each component asked for before the budget cut.
    """

    t_unix: float
    mode: str
    mode_reason: str
    allocated_w: np.ndarray
    forecast_w: np.ndarray
    demand_w: np.ndarray
    corrections: tuple[Correction, ...]


def _plus_margin(x: np.ndarray, frac: float, minimum_w: float) -> np.ndarray:
    """x + max(frac * x, minimum_w), W (NaN stays NaN)."""
    with np.errstate(over="ignore"):
        return x + np.maximum(frac * x, minimum_w)


class AllocationController:
    """Computes each cycle's allocation (W) for a fixed list of components.

    `mode` is the requested mode; the mode used can be `safe` instead (see `step`).
    `allocated_w` is the allocation in force, the static split until the first step.
    """

    def __init__(self, components: Sequence[Component], cfg: PolicyConfig,
                 mode: str = "proactive"):
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
        self._static = _frozen_array(self._static_split())
        self.allocated_w = self._static.copy()

    def set_mode(self, mode: str) -> None:
        """Request `mode`, one of MODES; ValueError otherwise."""
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode

    def _fill(self, demand: np.ndarray) -> np.ndarray:
        return water_fill(demand, self.floor_w, self.ceiling_w, self.priority, self.cfg.budget_w)

    def _static_split(self) -> np.ndarray:
        weight = np.array([c.weight_w for c in self.components])
        total = float(np.sum(weight))
        share = self.cfg.budget_w * weight / total if total > 0 else np.zeros_like(weight)
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

    def _measured_base(self, measured: np.ndarray) -> np.ndarray:
        """Measured power clipped at 0; one held at its allocation counts as the allocation."""
        base = np.maximum(measured, 0.0)
        return np.where(self._pinned(measured), np.maximum(base, self.allocated_w), base)

    def _pinned(self, measured: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return measured >= PINNED_FRAC * self.allocated_w

    def _demand(self, mode, base, peak) -> tuple[np.ndarray, float, float]:
        """Demand (W) and the (frac, W) margin of the mode used."""
        cfg = self.cfg
        if mode == "safe":
            frac, minimum = cfg.safe_margin_frac, cfg.reactive_margin_w
        else:
            frac, minimum = cfg.reactive_margin_frac, cfg.reactive_margin_w
        reactive = _plus_margin(base, frac, minimum)
        if mode != "proactive":
            return np.where(np.isnan(reactive), self._static, reactive), frac, minimum
        frac, minimum = cfg.margin_frac, cfg.margin_w
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
             samples_reason: str = "") -> Decision:
        """One control cycle at `t_unix` (s) from the newest measured power per component (W,
        NaN where unknown) and the newest forecast (None if none). `samples_age_s`: time
        since the last fresh measurement batch, s (inf: none yet); `samples_reason` says
        why it is stale (no batch, clock stuck, all NaN) for the mode reason.

        The requested mode is used unless it is proactive and the forecast is missing or its
        origin is more than forecast_stale_s away from t_unix, or the PDU is not answering
        (`pdu_ok` False), or the measurements are older than samples_stale_s: then safe
        mode, with the reason; without measurements safe mode allocates the static split,
        whatever its policy. Every component asks for at least its floor. Components
        measured at or above PINNED_FRAC of their allocation (held there by the PDU, so
        wanting more), or off the p50 forecast by more than the error threshold (proactive),
        are corrected at once: they ask for at least the measured power plus the mode's
        margin, and each yields a `Correction`. The budget is then
        water-filled by priority and the result becomes the allocation in force. Static mode,
        and safe mode under the static policy, allocate the static split and correct nothing.
        Raises ValueError for a non-finite time or arrays of the wrong size.
        """
        measured = self._check_inputs(t_unix, measured_w, forecast, samples_age_s)
        mode, reason, fresh, blind = self._select_mode(t_unix, forecast, pdu_ok, pdu_reason,
                                                       samples_age_s, samples_reason)
        n = len(self.ids)
        peak = np.full(n, np.nan)
        predicted = forecast_now(forecast, t_unix) if fresh else np.full(n, np.nan)
        if mode == "static" or (mode == "safe" and (blind or self.cfg.safe_policy == "static")):
            allocated = self._static.copy()
            decision = Decision(t_unix, mode, reason, _frozen_array(allocated),
                                _frozen_array(peak), _frozen_array(self._static), ())
            self.allocated_w = allocated
            return decision
        if mode == "proactive":
            peak = forecast_peak(forecast, t_unix, self.cfg, self.cfg.quantile)
        base = self._measured_base(measured)
        demand, frac, minimum = self._demand(mode, base, peak)
        flagged = self._pinned(measured)
        if mode == "proactive":
            flagged |= self._off_forecast(measured, predicted)
        wanted = np.where(flagged, np.fmax(demand, _plus_margin(base, frac, minimum)), demand)
        wanted = np.maximum(wanted, self.floor_w)  # idle power is always asked for
        # what each component is expected to draw comes before anyone's headroom
        need = base if mode != "proactive" else np.fmax(
            base, forecast_peak(forecast, t_unix, self.cfg, "p50"))
        allocated = water_fill_tiers(need, wanted, self.floor_w, self.ceiling_w,
                                     self.priority, self.cfg.budget_w)
        corrections = self._corrections(np.flatnonzero(flagged), measured, predicted, wanted,
                                        allocated)
        decision = Decision(t_unix, mode, reason, _frozen_array(allocated),
                            _frozen_array(peak), _frozen_array(wanted), corrections)
        self.allocated_w = allocated
        return decision

    def _corrections(self, flagged, measured, predicted, wanted, allocated):
        target = np.clip(wanted, 0.0, self.ceiling_w)
        out = []
        for i in flagged:
            out.append(Correction(self.ids[i], float(predicted[i]), float(measured[i]),
                                  float(self.allocated_w[i]), float(allocated[i]),
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
