"""The `pdu_actuator`'s redundant-feed parameters and their validated form (no rclpy).

Without `feeds.names` (the default) the rack has one feed and nothing changes. With it, each
PDU names its feed (`pdus.feed`), each feed has a breaker (`feeds.breaker_a` x
`feeds.voltage_v`) and a budget (x `feeds.derating`), and each component draws a fraction of
its power from each feed: `components.feed_split`, or by default evenly from the feeds of
the PDUs that feed it (`components.pdu` and, for a dual-corded server, `components.second_pdu`).
The overload a surviving feed may carry until the caps act comes from its breaker's trip curve
(`feeds.thermal_constant_s`, `feeds.magnetic_multiple`) over `feeds.cap_time_s`, or from
`feeds.overload_multiple` where the operator gives one (docs/feeds.md).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rackpower_nodes.core.allocation import (
    Component, FeedPlan, check_feed_plan, tolerated_multiple)
from rackpower_nodes.core.params import ConfigError, ParamSpec, check_ids, param

FEED_PARAMETERS: tuple[ParamSpec, ...] = (
    param("feeds.names", [], "string_array",
          "Redundant feeds of the rack (e.g. [A, B]); empty = one feed, budget.* only"),
    param("feeds.breaker_a", [], "double_array",
          "Breaker rating of each feed, A: one value for every feed, or one per feed"),
    param("feeds.voltage_v", 0.0, "double", "Feed voltage, V; 0 = budget.voltage_v",
          (0.0, 1000.0)),
    param("feeds.derating", 0.0, "double",
          "Continuous-load fraction of each feed's breaker its budget may use; 0 = "
          "budget.derating", (0.0, 1.0)),
    param("feeds.cap_time_s", 3.0, "double",
          "Worst time from a feed's loss to the caps holding, s: detection (pdu.timeout_s + "
          "the link's 0.5 s heartbeat) + the BMC write + the BMC's capping (0.5-2 s)",
          (0.01, 600.0), positive=True),
    param("feeds.thermal_constant_s", 30.0, "double",
          "Trip curve of the feeds' breakers: thermal trip after this / (r**2 - 1) s at r x "
          "the rating, s", (0.01, 36000.0), positive=True),
    param("feeds.magnetic_multiple", 10.0, "double",
          "Trip curve: the magnetic element trips at once above this multiple of the rating",
          (1.01, 100.0)),
    param("feeds.overload_multiple", 0.0, "double",
          "Load / rating a surviving feed may carry for feeds.cap_time_s; 0 = from the trip "
          "curve", (0.0, 100.0)),
    param("pdus.feed", [], "string_array", "Per PDU: the feed (feeds.names) it hangs on"),
    param("components.second_pdu", [], "string_array",
          "Per component: the PDU feeding its second power supply, '' for none (dual-corded "
          "servers); empty = single-corded. Its allocation is enforced by components.pdu's "
          "outlet and its BMC power cap"),
    param("components.feed_split", [], "double_array",
          "Fraction of each component's power drawn from each feed, row-major (component i, "
          "feed j at i * len(feeds.names) + j), rows summing to 1; empty = evenly from the "
          "feeds of its PDUs"),
)


@dataclass(frozen=True)
class FeedSettings:
    """The rack's feed plan and which feed each PDU hangs on (PDU name -> feed name)."""

    plan: FeedPlan
    pdu_feed: Mapping[str, str]

    def lost(self, down_pdus: Iterable[str]) -> frozenset[str]:
        """Feeds every PDU of which is down (not answering, or its inlet dead)."""
        down = set(down_pdus)
        return frozenset(f for f in self.plan.names
                         if all(p in down for p, g in self.pdu_feed.items() if g == f))


def feed_settings_from(v: Mapping[str, Any], components: Sequence[Component],
                       comp_pdu: Sequence[str], pdu_names: Sequence[str],
                       errors: list[str]) -> FeedSettings | None:
    """The feed settings of checked parameter values `v` (FEED_PARAMETERS with budget.*),
    None without feeds.names; every problem appended to `errors`, naming the key."""
    names = list(v.get("feeds.names", ()))
    if not names:
        extra = [k for k in ("feeds.breaker_a", "pdus.feed", "components.second_pdu",
                             "components.feed_split") if v.get(k)]
        errors.extend(f"{k}: set without feeds.names: expected feeds.names too" for k in extra)
        return None
    before = len(errors)
    check_ids("feeds.names", names, errors)
    f, n = len(names), len(components)
    pdu_feed = list(v.get("pdus.feed", ()))
    if len(pdu_feed) != len(pdu_names):
        errors.append(f"pdus.feed = {pdu_feed!r}: has {len(pdu_feed)} values, expected "
                      f"{len(pdu_names)} (one feed of feeds.names per pdus.names)")
        pdu_feed = [names[0]] * len(pdu_names)
    for i, g in enumerate(pdu_feed):
        if g not in names:
            errors.append(f"pdus.feed[{i}] = {g!r} ({pdu_names[i]}): expected one of "
                          f"feeds.names {names!r}")
    for g in names:
        if g not in pdu_feed:
            errors.append(f"feeds.names: feed {g!r} has no PDU in pdus.feed: its loss could "
                          "not be seen")
    amps = list(v.get("feeds.breaker_a", ()))
    if len(amps) not in (1, f) or any(not 0 < a <= 10000 for a in amps):
        errors.append(f"feeds.breaker_a = {amps!r}: expected one rating (A, 0..10000) for "
                      f"every feed or {f}, one per feeds.names")
        amps = [1.0]
    volts = v.get("feeds.voltage_v") or v["budget.voltage_v"]
    derating = v.get("feeds.derating") or v["budget.derating"]
    breaker = np.broadcast_to(np.array(amps, dtype=float) * volts, (f,))
    if len(errors) > before:
        return None
    split = _split(v, names, comp_pdu, dict(zip(pdu_names, pdu_feed)), n, errors)
    if len(errors) > before:
        return None
    cap_time = v["feeds.cap_time_s"]
    overload = v.get("feeds.overload_multiple") or tolerated_multiple(
        cap_time, v["feeds.thermal_constant_s"], v["feeds.magnetic_multiple"])
    try:
        plan = FeedPlan(tuple(names), breaker, breaker * derating, split, max(overload, 1.0),
                        cap_time)
    except ConfigError as exc:
        errors.extend(f"feeds: {e}" for e in exc.errors)
        return None
    bad = check_feed_plan(plan, [c.floor_w for c in components])
    errors.extend(f"components.floor_w: {e} (feeds.breaker_a x feeds.voltage_v x "
                  "feeds.derating)" for e in bad)
    return None if bad else FeedSettings(plan, dict(zip(pdu_names, pdu_feed)))


def _split(v, names, comp_pdu, feed_of, n, errors) -> np.ndarray:
    """(n, F) split: components.feed_split, else evenly over the feeds of each component's
    PDUs (components.pdu and components.second_pdu)."""
    f = len(names)
    given = list(v.get("components.feed_split", ()))
    if given:
        if len(given) != n * f:
            errors.append(f"components.feed_split: has {len(given)} values, expected {n * f} "
                          f"({n} components x {f} feeds, row-major)")
            return np.full((n, f), 1.0 / f)
        split = np.array(given, dtype=float).reshape(n, f)
        for i, row in enumerate(split):
            if np.any(row < 0) or np.any(row > 1) or abs(row.sum() - 1.0) > 1e-6:
                errors.append(f"components.feed_split[{i * f}:{(i + 1) * f}] = "
                              f"{row.tolist()!r}: expected fractions summing to 1")
        return split
    second = list(v.get("components.second_pdu", ())) or [""] * n
    if len(second) != n:
        errors.append(f"components.second_pdu = {second!r}: has {len(second)} values, "
                      f"expected {n} (one per components.names) or none")
        second = [""] * n
    split = np.zeros((n, f))
    for i, (first, other) in enumerate(zip(comp_pdu, second)):
        if other and other not in feed_of:
            errors.append(f"components.second_pdu[{i}] = {other!r}: expected '' or one of "
                          f"pdus.names {list(feed_of)!r}")
            continue
        cords = [p for p in (first, other) if p]
        for p in cords:
            if p in feed_of:
                split[i, names.index(feed_of[p])] += 1.0 / len(cords)
    return split
