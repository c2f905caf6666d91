"""Which of the rack's feeds are lost, as the PDU link sees them (no rclpy).

A feed is lost when every PDU on it (`pdus.feed`) is down. Down here means not answering:
the register maps (`config/pdu/`) have no inlet voltage or inlet power point, and the link
reads only the allocation registers and the boot counter, so a PDU whose controller stays up
on a dead inlet (a controller on its own supply) is not seen as down. A PDU is not answering
from its first failed request (a read-back or heartbeat at least every 0.5 s, each bounded by
`pdu.timeout_s`) until it reconnects (docs/feeds.md).
"""
from __future__ import annotations

from rackpower_nodes.core.feed_config import FeedSettings
from rackpower_nodes.drivers.pdu_link import PduLink


def down_pdus(link: PduLink) -> frozenset[str]:
    """Names of the link's PDUs that are not answering now."""
    return frozenset(t.name for t in link.targets if t.kind == "pdu" and not t.client.connected)


def lost_feeds(feeds: FeedSettings | None, link: PduLink | None) -> frozenset[str]:
    """Feeds every PDU of which is not answering; empty without feeds or a link."""
    if feeds is None or link is None:
        return frozenset()
    return feeds.lost(down_pdus(link))
