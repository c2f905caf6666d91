"""Building and publishing `/diagnostics` the same way in every node."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.publisher import Publisher


def status(level: bytes, name: str, message: str, hardware_id: str,
           values: Mapping[str, object]) -> DiagnosticStatus:
    """One status; every value is shown as text."""
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def publish(node: Node, publisher: Publisher, statuses: Iterable[DiagnosticStatus]) -> None:
    """A DiagnosticArray of `statuses`, stamped with the node's clock."""
    diag = DiagnosticArray(status=list(statuses))
    diag.header.stamp = node.get_clock().now().to_msg()
    publisher.publish(diag)
