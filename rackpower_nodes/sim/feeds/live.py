"""Redundant feeds under the live simulator's PDUs (`LiveRack(feeds=...)`).

The PDU model (`sim/pdu/`) keeps serving each outlet min(demand, allocation, BMC cap) and
keeps its registers; `LiveFeeds` puts the feeds under it: what the outlets serve is split
over the live feeds (`FeedRack`, a breaker per feed with the PDU model's trip curve), and

- a feed lost (`fail`, or its breaker tripped) takes its PDUs down: they stop answering
  Modbus (listener and connections closed, as a PDU whose inlet died), the single-corded
  components on it go dark (their outlets off), and the dual-corded ones whose outlet is on
  that PDU are carried by their other cord, no longer limited by the dead outlet's allocation
  (only by their BMC cap);
- a feed restored (`restore`) powers its PDUs up again: they boot with their power-on
  defaults (allocations back to the defaults, outlets on, boot counter up) and answer again.
  A feed whose breaker tripped stays out.

Thread-safe: the model's lock guards the model and the feeds; PDU servers are stopped and
started outside it (their threads take it to answer).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import numpy as np

from rackpower_nodes.sim.feeds.config import FeedConfig
from rackpower_nodes.sim.feeds.model import FeedRack
from rackpower_nodes.sim.pdu import PduModel, SimPduServer

__all__ = ["FeedError", "LiveFeeds"]

_log = logging.getLogger(__name__)


class FeedError(ValueError):
    """A feed command that cannot be done (the message names the feed and why)."""


class LiveFeeds:
    """Feeds under live PDUs (module docstring).

    Args:
        feeds: the feed configuration, components in the rack config's order.
        model: the PDU model every outlet is served by.
        outlet_of: (n,) the model outlet of each component.
        component_pdu: (n,) the PDU name of each component's outlet.
        pdus: the PDU servers by name.
        lock: the lock that guards `model`.
    """

    def __init__(self, feeds: FeedConfig, model: PduModel, outlet_of: np.ndarray,
                 component_pdu, pdus: Mapping[str, SimPduServer], lock: threading.Lock):
        self.rack = FeedRack(feeds)
        self.feeds = feeds
        self.model, self.lock = model, lock
        self.outlet_of = np.asarray(outlet_of, dtype=np.int64)
        self.component_pdu = list(component_pdu)
        self.pdus = dict(pdus)
        self._off: set[int] = set()              # feeds whose PDUs are down
        self._power_lock = threading.Lock()      # one feed command at a time

    def _feed(self, name) -> int:
        if name not in self.feeds.names:
            raise FeedError(f"feed = {name!r}: expected one of {', '.join(self.feeds.names)}")
        return self.feeds.names.index(name)

    def advance(self, dt_s: float) -> None:
        """Serve one step of the feeds at what the outlets served in the model's last step;
        a feed whose breaker tripped goes down."""
        with self.lock:
            self.rack.apply(self.model.served_w[self.outlet_of], dt_s)
            tripped = [f for f, b in enumerate(self.rack.breakers)
                       if b.tripped and f not in self._off]
        for f in tripped:
            _log.warning("feed %s: breaker tripped at t=%.1f s", self.feeds.names[f],
                         self.rack.time_s)
            self._power_off(f)

    def fail(self, name: str) -> dict:
        """Lose feed `name` now; returns what went dark.

        The survivors take the lost feed's load at this instant, not at the live rack's
        next step: a zero-length step at what the outlets serve now records their load then
        (its peak; a breaker it trips goes down at the next step). Otherwise caps landing
        before that step (an actuator reacts in tens of ms, the rack steps every 0.1 s or
        later on a busy machine) would hide the overload the loss caused."""
        f = self._feed(name)
        with self.lock:
            self.rack.fail_feed(name)
            self.rack.apply(self.model.served_w[self.outlet_of], 0.0)
        return self._power_off(f)

    def restore(self, name: str) -> dict:
        """Bring feed `name` back; FeedError when it is up or its breaker tripped."""
        f = self._feed(name)
        with self._power_lock:
            if self.rack.breakers[f].tripped:
                raise FeedError(f"feed = {name!r}: its breaker tripped, it stays open")
            if f not in self._off:
                raise FeedError(f"feed = {name!r}: it is not lost")
            with self.lock:
                self.rack.restore_feed(name)
            for pdu in self._pdus_of(f):
                server = self.pdus[pdu]
                server.reboot(0.0)           # power-on defaults, boot counter up
                server.start()
            self._off.discard(f)
            with self.lock:
                self._set_outlets()
        _log.info("feed %s restored", name)
        return {"feed": name, "pdus": self._pdus_of(f)}

    def _pdus_of(self, f: int) -> list[str]:
        return [p for p in self.pdus if p == self.feeds.pdus[f]]

    def _power_off(self, f: int) -> dict:
        with self._power_lock:
            if f in self._off:
                return {"feed": self.feeds.names[f], "pdus": [], "dark": []}
            self._off.add(f)
            pdus = self._pdus_of(f)
            for pdu in pdus:
                self.pdus[pdu].stop()
            with self.lock:
                dark = self._set_outlets()
        _log.warning("feed %s lost: PDUs %s down, dark: %s", self.feeds.names[f], pdus,
                     dark or "none")
        return {"feed": self.feeds.names[f], "pdus": pdus, "dark": dark}

    def _set_outlets(self) -> list[str]:
        """Outlets on where their component has a live feed; a dual-corded component's
        outlet on a PDU that is down no longer limits it. Returns the dark components."""
        _, powered = self.rack.shares()
        self.model.set_outlet_on(self.outlet_of, powered)
        down_pdus = {self.feeds.pdus[f] for f in self._off}
        carried = [i for i, p in enumerate(self.component_pdu)
                   if p in down_pdus and powered[i]]
        if carried:
            idx = self.outlet_of[carried]
            self.model.set_allocations(idx, self.model.ratings_w[idx])
        return [self.feeds.components[i] for i in np.flatnonzero(~powered)]

    def stats(self) -> dict:
        """The feed rack's counters (`FeedRack.stats`) and which feeds are down."""
        with self.lock:
            out = self.rack.stats()
        out["down"] = [self.feeds.names[f] for f in sorted(self._off)]
        return out
