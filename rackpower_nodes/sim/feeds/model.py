"""A rack on redundant feeds: each component's power split over its feeds, a breaker per feed.

`FeedRack` serves each component min(demand, allocation) (the component-level limit the
controller sets: a BMC power cap, or the outlet allocation) while at least one of its feeds
is up, and splits what it serves over its live feeds in the configured proportions
(`FeedConfig.split`, renormalised over the live ones). Each feed's breaker is a `PduModel`
(sim/pdu/model.py, the same thermal and magnetic trip curve) fed the cords on that feed.

- `fail_feed` (an upstream loss: utility, UPS or a feed breaker opened elsewhere): at once
  the surviving feeds carry the whole load of the dual-corded components, and the
  single-corded components on the lost feed go dark (served 0 W, counted as dark energy,
  not as throttled). `restore_feed` brings it back. A feed whose own breaker trips is lost
  the same way, for good (a tripped breaker stays open).
- Counters per feed: trips, time over its rating and over its budget (s), peak overload
  multiple (load / rating), peak heat (fraction of the thermal constant: 1 = trip),
  throttled energy (J, demand - served, split as served). Per loss, for every survivor:
  the time from the loss until its load is back within its budget and stays there for
  `hold_s` (time to cap) and until it is back within its rating (overload over), its peak
  multiple and heat, and the energy throttled (per component too) and gone dark while the
  feed was out.

Pure numpy, not thread-safe (callers lock). Times in s from the model's start, powers in W.
It serves the evaluation loop (core/evaluation.py `run_mode`) like a `PduModel`: the outlet
index there is the component index here.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.sim.feeds.config import FeedConfig
from rackpower_nodes.sim.pdu.model import PduModel

__all__ = ["FeedRack"]

_log = logging.getLogger(__name__)

_CORD_RATING_W = 1e9      # cords never limit: the component's allocation does, before the split
_EPS_S = 1e-9


class FeedRack:
    """Components on redundant feeds, one breaker per feed (module docstring).

    Args:
        feeds: the validated feed configuration (`load_feeds`).
        hold_s: a survivor's load must stay within its budget this long to count as capped.
    """

    def __init__(self, feeds: FeedConfig, hold_s: float = 1.0):
        if not (math.isfinite(hold_s) and hold_s >= 0):
            raise ValueError(f"hold_s = {hold_s!r}: expected a finite number >= 0, s")
        self.feeds = feeds
        self.hold_s = float(hold_s)
        n, n_feeds = feeds.split.shape
        self.breakers = [PduModel(np.full(n, _CORD_RATING_W), w, feeds.thermal_constant_s,
                                  feeds.magnetic_multiple) for w in feeds.breaker_w]
        self.allocation_w = np.full(n, np.inf)
        self.lost = np.zeros(n_feeds, dtype=bool)
        self.lost_at_s = np.full(n_feeds, np.nan)
        self._schedule: list[tuple[float, str, int]] = []
        self.time_s = 0.0
        self.served_w = np.zeros(n)
        self.demand_w = np.zeros(n)
        self.feed_load_w = np.zeros(n_feeds)
        self.over_rating_s = np.zeros(n_feeds)
        self.over_budget_s = np.zeros(n_feeds)
        self.peak_multiple = np.zeros(n_feeds)
        self.peak_heat = np.zeros(n_feeds)
        self.throttled_j = np.zeros(n_feeds)
        self.throttled_by_component_j = np.zeros(n)
        self.dark_j = 0.0
        self.events: list[dict] = []
        self._open: dict[int, dict] = {}        # feed index -> its loss event while out

    # -- the run_mode interface (what a PduModel offers) ------------------------------------
    @property
    def n_outlets(self) -> int:
        return self.feeds.split.shape[0]

    @property
    def tripped(self) -> bool:
        """True once any feed's breaker has tripped."""
        return any(b.tripped for b in self.breakers)

    @property
    def trips(self) -> int:
        return sum(b.trips for b in self.breakers)

    def set_allocations(self, index: Sequence[int] | np.ndarray, watts) -> None:
        """Component-level limits (W, >= 0) of the components at 0-based `index`."""
        w = np.broadcast_to(np.asarray(watts, dtype=np.float64), np.shape(index))
        if np.any(np.isnan(w)) or np.any(w < 0):
            raise ValueError(f"watts = {w.tolist()}: expected allocations >= 0 W")
        self.allocation_w[np.asarray(index, dtype=np.int64)] = w

    # -- feeds ------------------------------------------------------------------------------
    def _index(self, name: str) -> int:
        if name not in self.feeds.names:
            raise ValueError(f"feed = {name!r}: expected one of {', '.join(self.feeds.names)}")
        return self.feeds.names.index(name)

    def fail_feed(self, name: str, t_s: float | None = None) -> None:
        """Lose feed `name` now, or at `t_s` (s since the start) if that is later."""
        self._at(t_s, "fail", self._index(name))

    def restore_feed(self, name: str, t_s: float | None = None) -> None:
        """Bring feed `name` back now, or at `t_s`; a feed whose breaker tripped stays out."""
        self._at(t_s, "restore", self._index(name))

    def _at(self, t_s, action: str, f: int) -> None:
        if t_s is not None and not math.isfinite(t_s):
            raise ValueError(f"t_s = {t_s!r}: expected a finite time, s")
        if t_s is None or t_s <= self.time_s + _EPS_S:
            self._do(action, f)
        else:
            self._schedule.append((float(t_s), action, f))
            self._schedule.sort(key=lambda e: e[0])

    def _do(self, action: str, f: int) -> None:
        name = self.feeds.names[f]
        if action == "fail" and not self.lost[f]:
            self.lost[f], self.lost_at_s[f] = True, self.time_s
            self._open_event(f, "lost")
            _log.info("feed %s lost at t=%.1f s", name, self.time_s)
        elif action == "restore" and self.lost[f] and not self.breakers[f].tripped:
            self.lost[f], self.lost_at_s[f] = False, np.nan
            event = self._open.pop(f, None)
            if event is not None:
                event["t_restore_s"] = self.time_s
            _log.info("feed %s restored at t=%.1f s", name, self.time_s)

    def _open_event(self, f: int, cause: str) -> None:
        names = self.feeds.names
        survivors = [g for g in range(len(names)) if g != f and not self._down(g)]
        event = {"feed": names[f], "cause": cause, "t_loss_s": self.time_s,
                 "t_restore_s": None, "throttled_j": 0.0, "dark_j": 0.0,
                 "throttled_by_component_j": np.zeros(self.n_outlets),
                 "survivors": {names[g]: {"time_to_cap_s": None, "time_to_rating_s": None,
                                          "peak_multiple": 0.0, "peak_heat": 0.0,
                                          "over_rating_s": 0.0, "trips": 0,
                                          "_below": math.nan, "_within": math.nan}
                               for g in survivors}}
        self.events.append(event)
        self._open[f] = event

    def _down(self, f: int) -> bool:
        return bool(self.lost[f] or self.breakers[f].tripped)

    def live_feeds(self) -> np.ndarray:
        """(F,) True where a feed is up (not lost, breaker closed)."""
        return ~self.lost & ~np.array([b.tripped for b in self.breakers])

    def lost_seen(self, detect_s: float = 0.0) -> frozenset[str]:
        """The feeds down (lost or tripped) for at least `detect_s` s: what an actuator that
        notices a dead PDU after `detect_s` knows."""
        out = []
        for f, name in enumerate(self.feeds.names):
            b = self.breakers[f]
            since = b.trip_time_s if b.tripped else self.lost_at_s[f]
            if since is not None and not math.isnan(since) \
                    and self.time_s - since >= detect_s - _EPS_S:
                out.append(name)
        return frozenset(out)

    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        """((n, F) the fraction of each component's power on each live feed now, (n,) True
        where a component has a live feed)."""
        share = self.feeds.split * self.live_feeds()
        total = share.sum(axis=1)
        powered = total > 0
        return share / np.where(powered, total, 1.0)[:, None], powered

    def cap_w(self) -> np.ndarray:
        """(n,) the most each component is served now, W (0 when dark)."""
        _, powered = self.shares()
        return np.where(powered, self.allocation_w, 0.0)

    # -- time -------------------------------------------------------------------------------
    def apply(self, demand_w: np.ndarray, dt_s: float) -> np.ndarray:
        """Serve one step of `dt_s` s at `demand_w` (n,) W; returns (n,) served W."""
        while self._schedule and self._schedule[0][0] <= self.time_s + _EPS_S:
            _, action, f = self._schedule.pop(0)
            self._do(action, f)
        demand = np.maximum(np.asarray(demand_w, dtype=np.float64), 0.0)
        share, powered = self.shares()
        served = np.where(powered, np.minimum(demand, self.allocation_w), 0.0)
        throttled = np.where(powered, demand - served, 0.0)
        dark = float(demand[~powered].sum()) * dt_s
        cords = served[:, None] * share                       # (n, F) W per cord
        was = [b.tripped for b in self.breakers]
        for f, breaker in enumerate(self.breakers):
            breaker.apply(cords[:, f], dt_s)
        self.time_s += dt_s
        load = cords.sum(axis=0)
        self.feed_load_w = load
        ratio = load / self.feeds.breaker_w
        heat = np.array([b.heat_s for b in self.breakers]) / self.feeds.thermal_constant_s
        self.over_rating_s += (ratio > 1.0) * dt_s
        self.over_budget_s += (load > self.feeds.budget_w) * dt_s
        self.peak_multiple = np.maximum(self.peak_multiple, ratio)
        self.peak_heat = np.maximum(self.peak_heat, heat)
        self.throttled_j += (throttled[:, None] * share).sum(axis=0) * dt_s
        self.throttled_by_component_j += throttled * dt_s
        self.dark_j += dark
        self._track_events(load, ratio, heat, throttled * dt_s, dark, dt_s)
        for f, breaker in enumerate(self.breakers):
            if breaker.tripped and not was[f]:
                self._tripped(f)
        self.demand_w, self.served_w = demand, served
        return served

    def _track_events(self, load, ratio, heat, throttled_j, dark_j, dt_s) -> None:
        names = self.feeds.names
        t_end = self.time_s
        for event in self._open.values():
            event["throttled_j"] += float(throttled_j.sum())
            event["throttled_by_component_j"] += throttled_j
            event["dark_j"] += dark_j
            for name, s in event["survivors"].items():
                g = names.index(name)
                s["peak_multiple"] = max(s["peak_multiple"], float(ratio[g]))
                s["peak_heat"] = max(s["peak_heat"], float(heat[g]))
                s["over_rating_s"] += dt_s * (ratio[g] > 1.0)
                for key, mark, limit in (("time_to_cap_s", "_below", self.feeds.budget_w[g]),
                                         ("time_to_rating_s", "_within",
                                          self.feeds.breaker_w[g])):
                    if s[key] is not None:
                        continue
                    if load[g] > limit:
                        s[mark] = math.nan
                        continue
                    if math.isnan(s[mark]):
                        s[mark] = t_end - dt_s
                    if t_end - s[mark] >= self.hold_s - _EPS_S:
                        s[key] = s[mark] - event["t_loss_s"]

    def _tripped(self, f: int) -> None:
        name = self.feeds.names[f]
        for event in self._open.values():
            if name in event["survivors"]:
                event["survivors"][name]["trips"] += 1
        if f not in self._open:
            self.lost_at_s[f] = self.breakers[f].trip_time_s
            self._open_event(f, "tripped")

    # -- report -----------------------------------------------------------------------------
    def stats(self) -> dict:
        """Counters as plain numbers (J, s, W): per feed, rack totals and the loss events."""
        names = self.feeds.names
        feeds = {}
        for f, name in enumerate(names):
            b = self.breakers[f]
            feeds[name] = {"breaker_w": float(self.feeds.breaker_w[f]),
                           "budget_w": float(self.feeds.budget_w[f]),
                           "lost": bool(self.lost[f]), "trips": b.trips,
                           "trip_time_s": b.trip_time_s,
                           "over_rating_s": float(self.over_rating_s[f]),
                           "over_budget_s": float(self.over_budget_s[f]),
                           "peak_multiple": float(self.peak_multiple[f]),
                           "peak_heat": float(self.peak_heat[f]),
                           "throttled_j": float(self.throttled_j[f]),
                           "load_w": float(self.feed_load_w[f])}
        events = [{**e, "throttled_by_component_j": e["throttled_by_component_j"].tolist(),
                   "survivors": {k: {kk: vv for kk, vv in v.items() if kk[0] != "_"}
                                 for k, v in e["survivors"].items()}}
                  for e in self.events]
        return {"time_s": self.time_s, "trips": self.trips, "tripped": self.tripped,
                "throttled_j": float(self.throttled_j.sum()), "dark_j": self.dark_j,
                "throttled_by_component_j": self.throttled_by_component_j.tolist(),
                "feeds": feeds, "events": events}
