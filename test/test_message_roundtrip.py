"""A `PowerSamples` published in one process arrives intact in another (real DDS)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

PUBLISHER = textwrap.dedent("""
    import sys, array
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, DurabilityPolicy
    from rackpower.msg import PowerSamples
    rclpy.init()
    node = rclpy.create_node("roundtrip_pub", namespace="/rack_rt")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pub = node.create_publisher(PowerSamples, "power_samples", qos)
    msg = PowerSamples()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1764230400, 123456789
    msg.header.frame_id = "rack_rt"
    msg.sample_period_s = 0.001
    msg.sample_count = 3
    msg.first_sequence = 2**40 + 5
    msg.first_board_time_us = 2**50 + 7
    msg.channel_ids = ["srv01", "tor-a"]
    msg.current_a = array.array("f", [0.5, 0.25, -1.5, 2.0, 3.0, 4.0])
    msg.voltage_v = array.array("f", [230.0, 231.5])
    msg.mean_power_w = array.array("f", [-57.5, 694.5])
    msg.peak_power_w = array.array("f", [115.0, 926.0])
    msg.total_power_w = 637.0
    msg.frames_lost = 4
    pub.publish(msg)
    sys.stdin.readline()  # stay until the test has the message (or gave up): stdin closed
    node.destroy_node()
    rclpy.shutdown()
""")


def test_power_samples_crosses_processes_intact(ros_env):
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    from rackpower.msg import PowerSamples

    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=ros_env,
                            stdin=subprocess.PIPE)
    received = []
    try:
        with rclpy.init():
            node = rclpy.create_node("roundtrip_sub", namespace="/rack_rt")
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_subscription(PowerSamples, "power_samples", received.append, qos)
            deadline = time.monotonic() + 20
            while not received and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
            node.destroy_node()
    finally:
        proc.stdin.close()  # the publisher ends once the test is done with it
        proc.wait(30)
    assert proc.returncode == 0
    assert len(received) == 1
    msg = received[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1764230400, 123456789)
    assert msg.header.frame_id == "rack_rt"
    assert msg.sample_period_s == 0.001
    assert msg.sample_count == 3
    assert msg.first_sequence == 2**40 + 5
    assert msg.first_board_time_us == 2**50 + 7
    assert list(msg.channel_ids) == ["srv01", "tor-a"]
    np.testing.assert_array_equal(msg.current_a, [0.5, 0.25, -1.5, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(msg.voltage_v, [230.0, 231.5])
    np.testing.assert_array_equal(msg.mean_power_w, [-57.5, 694.5])
    np.testing.assert_array_equal(msg.peak_power_w, [115.0, 926.0])
    assert msg.total_power_w == 637.0
    assert msg.frames_lost == 4
