"""Redundant A/B feeds in one rack: the feed configuration and the two-feed rack model.

:mod:`.config`: the ``feeds:`` section (breakers per feed, which components are dual-corded,
their split, validated with errors naming the key) as a `FeedConfig`. :mod:`.model`:
`FeedRack`, components split over per-feed breakers with the trip curve of
`sim.pdu.PduModel`, feed failure and restore, and the feed-loss counters (trips, time over
rating, peak overload multiple, throttled energy, time to cap).
"""
from rackpower_nodes.sim.feeds.config import FeedConfig, load_feeds, parse_feeds
from rackpower_nodes.sim.feeds.model import FeedRack

__all__ = ["FeedConfig", "FeedRack", "load_feeds", "parse_feeds"]
