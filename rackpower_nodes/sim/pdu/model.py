"""The simulator's PDU model: outlets and the rack breaker feeding them; pure numpy.

`PduModel` serves each outlet min(demand, allocation, server cap) (0 W for an outlet switched
off; the server cap is the power limit a server's BMC enforces, `sim.bmc`), counts what it
withheld, and models the breaker feeding the outlets with a trip curve:

- thermal (inverse time): with r = total served power / breaker rating, the element's heat
  h integrates (r**2 - 1) dt, clamped at 0 (it cools at the same rate below the rating); the
  breaker trips when h reaches `thermal_constant_s`. At a constant overload r the time to trip
  is thermal_constant_s / (r**2 - 1). With the default 30 s: 135 % -> 36.5 s, 200 % -> 10 s,
  255 % -> 5.4 s, and never at or below the rating. Basis: UL 489 asks a breaker to open
  within 1 h at 135 % and within 2 min at 200 % (ratings <= 30 A); IEC 60898-1 asks a
  trip within 1 h at 1.45 In and within 1-60 s at 2.55 In (In <= 32 A). The constant puts the
  curve inside those bands, towards the fast side of real thermal-magnetic breakers, so a
  simulated overload shows up within a run rather than after an hour.
- magnetic (instantaneous): r above `magnetic_multiple` (default 10, where IEC 60898-1 requires
  a type C breaker to trip instantly) trips within the step.

A trip is counted, sets `tripped` and from then on every outlet is served 0 W (the end of the
run).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

_log = logging.getLogger(__name__)


class PduModel:
    """Outlets fed through one breaker; pure numpy, not thread-safe (callers lock).

    Args:
        outlet_ratings_w: (n,) outlet ratings, W; the allocation of an outlet starts there.
        breaker_w: breaker rating as power, W (rated current x voltage x power factor).
        thermal_constant_s: heat at which the thermal element trips, s (see module doc).
        magnetic_multiple: instantaneous trip above this multiple of the rating.
    """

    def __init__(self, outlet_ratings_w: Sequence[float], breaker_w: float,
                 thermal_constant_s: float = 30.0, magnetic_multiple: float = 10.0):
        ratings = np.asarray(outlet_ratings_w, dtype=np.float64).reshape(-1)
        if ratings.size == 0 or not np.all(np.isfinite(ratings)) or np.any(ratings <= 0):
            raise ValueError(f"outlet_ratings_w = {ratings.tolist()}: expected one or more "
                             f"finite ratings > 0 W")
        for name, value in (("breaker_w", breaker_w), ("thermal_constant_s", thermal_constant_s),
                            ("magnetic_multiple", magnetic_multiple)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} = {value!r}: expected a finite number > 0")
        if magnetic_multiple <= 1.0:
            raise ValueError(f"magnetic_multiple = {magnetic_multiple!r}: expected > 1")
        self.ratings_w = ratings
        self.breaker_w = float(breaker_w)
        self.thermal_constant_s = float(thermal_constant_s)
        self.magnetic_multiple = float(magnetic_multiple)
        n = ratings.size
        self.allocation_w = ratings.copy()
        self.server_cap_w = np.full(n, np.inf)   # power limits set through the servers' BMCs
        self._limit = ratings.copy()             # min(allocation, server cap)
        self.outlet_on = np.ones(n, dtype=bool)
        self.served_w = np.zeros(n)           # served in the last step, W
        self.demand_w = np.zeros(n)           # demand in the last step, W
        self._cap = ratings.copy()
        self.reset_counters()

    @property
    def n_outlets(self) -> int:
        return self.ratings_w.size

    def reset_counters(self) -> None:
        """Zero the counters and the breaker's heat; re-close a tripped breaker."""
        n = self.ratings_w.size
        self.time_s = 0.0
        self.heat_s = 0.0                     # thermal element state, s
        self.tripped = False
        self.trips = 0
        self.trip_time_s: float | None = None
        self.demand_j = np.zeros(n)
        self.served_j = np.zeros(n)
        self.throttled_j = np.zeros(n)        # demand - served before a trip: performance lost
        # allocation here means min(outlet allocation, server cap)
        self.under_allocated_s = np.zeros(n)  # time with demand > allocation, s
        self.under_allocated_j = np.zeros(n)  # integral of max(demand - allocation, 0), J
        self.unserved_after_trip_j = 0.0      # demand while the breaker was open, J
        self.peak_ratio = 0.0                 # highest total / breaker_w seen
        self._update_cap()

    # -- control ------------------------------------------------------------------------
    def set_allocations(self, index: Sequence[int] | np.ndarray, watts) -> None:
        """Allocations (W, >= 0; 0 = no power) of outlets at 0-based `index`."""
        w = np.broadcast_to(np.asarray(watts, dtype=np.float64), np.shape(index))
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"watts = {w.tolist()}: expected finite allocations >= 0 W")
        self.allocation_w[np.asarray(index, dtype=np.int64)] = w
        self._update_cap()

    def set_server_caps(self, index: Sequence[int] | np.ndarray, watts) -> None:
        """Power limits (W, >= 0; inf = none) of the servers on outlets at 0-based `index`, as
        their BMCs enforce them: an outlet serves at most min(allocation, server cap)."""
        w = np.broadcast_to(np.asarray(watts, dtype=np.float64), np.shape(index))
        if np.any(np.isnan(w)) or np.any(w < 0):
            raise ValueError(f"watts = {w.tolist()}: expected server caps >= 0 W (inf = none)")
        self.server_cap_w[np.asarray(index, dtype=np.int64)] = w
        self._update_cap()

    def set_outlet_on(self, index: Sequence[int] | np.ndarray, on) -> None:
        """Switch outlets at 0-based `index` on or off (off serves 0 W)."""
        self.outlet_on[np.asarray(index, dtype=np.int64)] = np.asarray(on, dtype=bool)
        self._update_cap()

    def cap_w(self) -> np.ndarray:
        """(n,) the most each outlet serves now, W (0 when off or tripped)."""
        return self._cap

    def _update_cap(self) -> None:
        self._limit = np.minimum(self.allocation_w, self.server_cap_w)
        self._cap = np.where(self.outlet_on & (not self.tripped), self._limit, 0.0)

    # -- time -----------------------------------------------------------------------------
    def apply(self, demand_w: np.ndarray, dt_s: float) -> np.ndarray:
        """Serve one step of `dt_s` s at `demand_w` (n,) W; returns (n,) served W."""
        demand = np.maximum(demand_w, 0.0)
        served = np.minimum(demand, self._cap)
        self.time_s += dt_s
        self.demand_w, self.demand_j = demand, self.demand_j + demand * dt_s
        if self.tripped:
            self.served_w = served
            self.unserved_after_trip_j += float(demand.sum()) * dt_s
            return served
        over = demand - self._limit
        under = over > 0.0
        self.under_allocated_s += under * dt_s
        self.under_allocated_j += np.where(under, over, 0.0) * dt_s
        self.throttled_j += (demand - served) * dt_s
        ratio = float(served.sum()) / self.breaker_w
        self.peak_ratio = max(self.peak_ratio, ratio)
        self.heat_s = max(0.0, self.heat_s + (ratio * ratio - 1.0) * dt_s)
        if ratio > self.magnetic_multiple or self.heat_s >= self.thermal_constant_s:
            self._trip()
            served = self._cap.copy()       # all zero: the breaker opened during the step
        self.served_w = served
        self.served_j += served * dt_s
        return served

    def apply_block(self, demand_w: np.ndarray, dt_s: float) -> np.ndarray:
        """`apply` for (T, n) demand (W) at steps of `dt_s` s with the allocations held
        constant, vectorised over T (the breaker's clamped heat by the Lindley recursion
        h_t = max(h0 + S_t, S_t - min_{k<=t} S_k), S the cumulative sum of the increments).
        Same served power (T, n) and counters as T calls of `apply`."""
        demand = np.maximum(np.asarray(demand_w, dtype=np.float64), 0.0)
        if demand.ndim != 2 or demand.shape[1] != self.n_outlets:
            raise ValueError(f"demand_w shape {demand.shape}: expected (T, {self.n_outlets})")
        steps = demand.shape[0]
        if steps == 0:
            return demand.copy()
        served = np.minimum(demand, self._cap)
        live = 0 if self.tripped else steps
        if not self.tripped:
            ratio = served.sum(axis=1) / self.breaker_w
            s = np.cumsum((ratio * ratio - 1.0) * dt_s)
            heat = np.maximum(self.heat_s + s, s - np.minimum.accumulate(s))
            hit = np.flatnonzero((ratio > self.magnetic_multiple)
                                 | (heat >= self.thermal_constant_s))
            live = int(hit[0]) + 1 if hit.size else steps
            over = demand[:live] - self._limit
            under = over > 0.0
            self.under_allocated_s += under.sum(axis=0) * dt_s
            self.under_allocated_j += np.where(under, over, 0.0).sum(axis=0) * dt_s
            self.throttled_j += (demand[:live] - served[:live]).sum(axis=0) * dt_s
            self.peak_ratio = max(self.peak_ratio, float(ratio[:live].max()))
            self.heat_s = float(heat[live - 1])
            if hit.size:
                self.time_s += live * dt_s
                self._trip()
                self.time_s -= live * dt_s
                served[live - 1:] = 0.0
        self.unserved_after_trip_j += float(demand[live:].sum()) * dt_s
        self.time_s += steps * dt_s
        self.demand_j += demand.sum(axis=0) * dt_s
        self.served_j += served.sum(axis=0) * dt_s
        self.demand_w, self.served_w = demand[-1], served[-1]
        return served

    def _trip(self) -> None:
        self.tripped = True
        self.trips += 1
        self.trip_time_s = self.time_s
        self._update_cap()
        _log.warning("breaker tripped at t=%.1f s (heat %.1f s, rating %.0f W)",
                     self.time_s, self.heat_s, self.breaker_w)

    def time_to_trip_s(self, ratio: float) -> float:
        """Time to a thermal trip from cold at a constant total/breaker `ratio`, s (inf at or
        below 1; 0 above the magnetic multiple)."""
        if ratio > self.magnetic_multiple:
            return 0.0
        return self.thermal_constant_s / (ratio * ratio - 1.0) if ratio > 1.0 else float("inf")

    def stats(self) -> dict:
        """Counters as plain numbers (J, s, W): per outlet lists and rack totals."""
        return {"time_s": self.time_s, "trips": self.trips, "tripped": self.tripped,
                "trip_time_s": self.trip_time_s, "heat_s": self.heat_s,
                "peak_ratio": self.peak_ratio,
                "served_j": float(self.served_j.sum()), "demand_j": float(self.demand_j.sum()),
                "throttled_j": float(self.throttled_j.sum()),
                "under_allocated_j": float(self.under_allocated_j.sum()),
                "under_allocated_s": self.under_allocated_s.tolist(),
                "unserved_after_trip_j": self.unserved_after_trip_j}
