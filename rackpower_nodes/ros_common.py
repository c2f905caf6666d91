"""ROS helpers every rackpower node shares: QoS profiles and message array conversion.

Kept free of heavy imports (torch, lightgbm, pymodbus): every node imports this module, and a
node that needs none of those must not pay for them at start or at exit.
"""
from __future__ import annotations

import array

import numpy as np
from rclpy.duration import Duration
from rclpy.exceptions import InvalidHandle
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy._rclpy_pybind11 import RCLError


def samples_qos(deadline_s: float) -> QoSProfile:
    """Measurement streams (power_samples, host_telemetry): sensor-data QoS (best effort, keep
    last 10) with a deadline of `deadline_s` seconds, so subscribers notice a stall."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=10,
        reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE,
        deadline=Duration(seconds=deadline_s))


def forecast_qos() -> QoSProfile:
    """Forecasts: reliable, keep last 5."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Latest state (model_update, the current allocation): reliable, transient local,
    depth 1, so a late subscriber gets the last message."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def errors_qos() -> QoSProfile:
    """Allocation errors: reliable, keep last 100 (the retraining loop must not miss them)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def float32_array(values) -> array.array:
    """A float32[] message field from any array-like, without a per-element Python check."""
    out = array.array("f")
    out.frombytes(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return out


def publish_unless_shut_down(node: Node, publisher: Publisher, msg) -> bool:
    """Publish `msg` from a thread of the node's own (reader, worker); False, without a
    traceback, when the node's context is already shut down or the publisher destroyed
    (the node is on its way out). Any other failure is raised."""
    if not node.context.ok():
        return False
    try:
        publisher.publish(msg)
        return True
    except (RCLError, InvalidHandle):
        if node.context.ok() and not _destroyed(publisher):
            raise
        return False


def _destroyed(publisher: Publisher) -> bool:
    try:
        with publisher.handle:
            return False
    except InvalidHandle:
        return True
