"""The recorder's bag handling, with no rclpy: rotating rosbag2 bags under a quota
(:mod:`.store`), crash recovery of unclosed bags (:mod:`.salvage`) and the message types a bag
needs (:mod:`.typestore`). The `recorder` node (`nodes/recorder.py`) feeds it what it receives.
"""
from __future__ import annotations

from rackpower_nodes.core.recording.salvage import CRASHED, recover_bags
from rackpower_nodes.core.recording.store import (
    RECORD_OVERHEAD_BYTES, RETRY_AFTER_NS, BagStore, StoreStats)
from rackpower_nodes.core.recording.typestore import UnknownType, ensure_type

__all__ = ["CRASHED", "RECORD_OVERHEAD_BYTES", "RETRY_AFTER_NS", "BagStore", "StoreStats",
           "UnknownType", "ensure_type", "recover_bags"]
