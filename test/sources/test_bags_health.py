"""component_health in bags: the typestore that reads our bags knows ComponentHealth, so a
recorded verdict reads back with rosbags exactly as the node published it."""
from __future__ import annotations

import math

import pytest

rclpy_serialization = pytest.importorskip("rclpy.serialization")


def test_component_health_reads_back_through_the_bag_typestore(tmp_path):
    from rackpower.msg import ComponentHealth
    from rosbags.rosbag2 import Reader, Writer

    from rackpower_nodes.sources.bags import HEALTH_TYPE, message_typestore

    msg = ComponentHealth(component_id="srv05", state="fault", score=3.5,
                          cause="sensor_stuck", sensor_fault=True, since_unix=1.7e9 + 0.25,
                          baseline_learned=False, evidence_names=["std_w", "stuck_s"],
                          evidence_values=[0.0, 12.0])
    msg.header.stamp.sec, msg.header.frame_id = 1_700_000_012, "rack"
    store = message_typestore()
    bag = tmp_path / "bag"
    with Writer(bag, version=8) as writer:
        conn = writer.add_connection("/rack/component_health", HEALTH_TYPE, typestore=store)
        writer.write(conn, 1_700_000_012_000_000_000,
                     bytes(rclpy_serialization.serialize_message(msg)))
    with Reader(bag) as reader:
        (conn, _, raw), = list(reader.messages())
        back = store.deserialize_cdr(raw, conn.msgtype)
    assert conn.msgtype == HEALTH_TYPE
    assert (back.component_id, back.state, back.cause) == ("srv05", "fault", "sensor_stuck")
    assert back.sensor_fault and math.isclose(back.since_unix, 1.7e9 + 0.25)
    assert list(back.evidence_names) == ["std_w", "stuck_s"]
    assert list(back.evidence_values) == [0.0, 12.0]
    assert back.header.stamp.sec == 1_700_000_012
