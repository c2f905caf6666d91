"""The `recorder` node: the rack's topics into rosbag2 bags (MCAP storage) through rosbags.

Each configured topic is subscribed with `raw=True` once the graph tells its type and a
publisher offers it (looked up every `discovery.interval_s`), with QoS matched to the
publishers: reliable only when every publisher is reliable, transient local only when every
publisher is. The serialized CDR is written as it came, stamped with its receive time (ns),
and the publishers' offered QoS goes into the bag's metadata, as `ros2 bag record` does.

A bag is a complete rosbag2 folder (`<prefix>_<UTC start>/` with `metadata.yaml` and one
`.mcap` or `.db3`), closed when it reaches `rotation.max_bytes` or `rotation.max_duration_s`.
With a quota the oldest closed bags are deleted so that all bags of the prefix stay under
`quota.max_total_bytes`. Every `flush.interval_s` the pending MCAP chunk is written out (the
sqlite3 transaction committed), so a kill -9 loses at most that long; on start-up (and after
a write error) a bag left without `metadata.yaml` is salvaged into a complete bag holding every
message that reached the disk (:func:`recover_bags`). Write errors (disk full, folder gone)
are logged and reported on /diagnostics; the node keeps running and retries once a second.

The bag handling (:class:`BagStore`, :func:`recover_bags`) uses no rclpy and lives in
`core/recording`; this module subscribes, matches QoS and reports on /diagnostics.
"""
from __future__ import annotations

import importlib
import sys
import time
from functools import partial

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import (
    Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime)

from rackpower_nodes.sources.bags import message_typestore
from rackpower_nodes.core.recorder_config import RECORDER_PARAMETERS, recorder_config_from_params
from rackpower_nodes.core.recording import BagStore, UnknownType, ensure_type
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.common import declare_from_specs, diagnostic_status, publish_diagnostics


def bag_qos(profile) -> Qos:
    """An rclpy QoSProfile as the rosbags `Qos` recorded in metadata (times in s + ns)."""
    def t(duration) -> QosTime:
        sec, nsec = divmod(int(duration.nanoseconds), 1_000_000_000)
        return QosTime(sec, nsec)

    return Qos(history=QosHistory(int(profile.history)), depth=int(profile.depth),
               reliability=QosReliability(int(profile.reliability)),
               durability=QosDurability(int(profile.durability)),
               deadline=t(profile.deadline), lifespan=t(profile.lifespan),
               liveliness=QosLiveliness(int(profile.liveliness)),
               liveliness_lease_duration=t(profile.liveliness_lease_duration),
               avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions))


# -- the node ---------------------------------------------------------------------------------

def message_class(msgtype: str):
    """The Python class of 'pkg/msg/Name'; UnknownType when its package is not importable."""
    pkg, sub, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        raise UnknownType(f"{msgtype}: cannot import {pkg}.{sub}.{name} ({exc})") from exc


def subscription_qos(offered: list, depth: int) -> QoSProfile:
    """Reliable only when every publisher is, transient local only when every publisher is
    (so a latched topic's last message is recorded), keep last `depth`."""
    reliable = all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
    latched = all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class RecorderNode(Node):
    """Records the configured topics into rotating rosbag2 bags."""

    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        self.config = recorder_config_from_params(
            declare_from_specs(self, RECORDER_PARAMETERS))
        cfg = self.config
        self._typestore, self._tried = message_typestore(), set()
        self.bags = BagStore(cfg, self._typestore)
        try:
            self.bags.start()
        except OSError as exc:
            self.bags.stats.last_error = f"{cfg.folder}: {exc}"
        for line in self.bags.recovered:
            self.get_logger().warning(f"salvaged the unclosed bag {line}")
        self._waiting = {self.resolve_topic_name(t): t for t in cfg.topics}
        self._unknown: dict[str, str] = {}
        self._logged_error = ""
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(cfg.discovery_interval_s, self._discover)
        self.create_timer(cfg.flush_interval_s, self.bags.tick)
        self.create_timer(cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"recording {sorted(self._waiting)} into {cfg.folder} ({cfg.storage})")
        self._discover()

    def _discover(self) -> None:
        if not self._waiting:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in sorted(self._waiting):
            types = graph.get(topic)
            offered = [i.qos_profile for i in self.get_publishers_info_by_topic(topic)]
            if not types or not offered:
                continue
            try:
                cls = message_class(types[0])
                ensure_type(self._typestore, types[0], self._tried)
            except UnknownType as exc:
                if self._unknown.get(topic) != str(exc):
                    self.get_logger().error(f"cannot record {topic}: {exc}")
                self._unknown[topic] = str(exc)
                continue
            if len(types) > 1:
                self.get_logger().warning(f"{topic} has types {types}; recording {types[0]}")
            self.bags.add_topic(topic, types[0], [bag_qos(q) for q in offered])
            qos = subscription_qos(offered, self.config.qos_depth)
            self.create_subscription(cls, topic, partial(self._on_message, topic), qos,
                                     raw=True)
            del self._waiting[topic]
            self._unknown.pop(topic, None)
            self.get_logger().info(f"recording {topic} ({types[0]}, "
                                   f"{qos.reliability.name.lower()}, "
                                   f"{qos.durability.name.lower()})")

    def _on_message(self, topic: str, data: bytes) -> None:
        self.bags.write(topic, time.time_ns(), data)

    def _publish_diagnostics(self) -> None:
        s, bags = self.bags.stats, self.bags
        if s.last_error != self._logged_error:
            self._logged_error = s.last_error
            self.get_logger().error(f"cannot write bags: {s.last_error}")
        if bags.writer is None and s.last_error:
            level, text = DiagnosticStatus.ERROR, f"not writing: {s.last_error}"
        elif self._waiting:
            level, text = DiagnosticStatus.WARN, f"waiting for {sorted(self._waiting)}"
        else:
            level, text = DiagnosticStatus.OK, f"recording into {bags.current or '-'}"
        values = {"messages_written": s.messages, "bytes_written": s.bytes,
                  "current_bag": bags.current, "bag_bytes": bags.bag_bytes,
                  "bags_closed": s.bags_closed, "bags_deleted": s.bags_deleted,
                  "last_deleted": s.last_deleted, "bags_recovered": s.bags_recovered,
                  "dropped": s.dropped, "last_error": s.last_error,
                  "topics_waiting": " ".join(sorted(self._waiting)),
                  **{f"messages {t}": n for t, n in sorted(s.per_topic.items())}}
        publish_diagnostics(self, self._diag_pub, [diagnostic_status(
            level, f"{self.get_fully_qualified_name()}: recorder", text, "recorder",
            values)])

    def destroy_node(self) -> None:
        """Close the open bag (summary and metadata.yaml written) before the node goes; a bag
        that cannot be closed is salvaged at the next start."""
        name = self.bags.current
        self.bags.close()
        if name and self.bags.closed and self.bags.closed[-1][0].name == name:
            self.get_logger().info(f"closed the bag {name}")
        elif name:
            self.get_logger().error(f"could not close the bag {name}: "
                                    f"{self.bags.stats.last_error}; the next start salvages it")
        super().destroy_node()


def main(args=None) -> int:
    return run_node(RecorderNode, "recorder", args)


if __name__ == "__main__":
    sys.exit(main())
