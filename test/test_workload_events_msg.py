"""`WorkloadEvents`: a snapshot published in one process arrives intact in another (real DDS);
the bags' typestore reads what rclpy wrote; a bag of snapshots reads back as a job history."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rackpower_nodes.core.workload_events import JobEvent, WorkloadEvents

T0 = 1_764_230_400.25
NAN = float("nan")
SNAPSHOT = WorkloadEvents(T0, (
    JobEvent("4711", "train-llm", ("gpu01", "gpu02"), "running", T0 - 90.5, 3600.0, 0.95,
             "gpu-train"),
    JobEvent("4712", "", ("srv03",), "pending", T0 + 120.0, 600.0, 0.5, "cpu"),
    JobEvent("4713", "etl", (), "pending", NAN, 30.0, 0.25, ""),
), "slurm")

PUBLISHER = textwrap.dedent("""
    import json, sys
    import rclpy
    from rackpower.msg import WorkloadEvents
    from rackpower_nodes.core.workload_events import JobEvent, WorkloadEvents as Snapshot
    from rackpower_nodes.nodes.common import latched_qos
    from rackpower_nodes.nodes.workload_msgs import events_to_msg
    stamp, source, jobs = json.loads(sys.argv[1])
    SNAPSHOT = Snapshot(stamp, tuple(JobEvent(**j) for j in jobs), source)
    rclpy.init()
    node = rclpy.create_node("workload_pub", namespace="/rack_we")
    pub = node.create_publisher(WorkloadEvents, "workload_events", latched_qos())
    pub.publish(events_to_msg(SNAPSHOT, "rack_we"))
    sys.stdin.readline()  # stay until the test has the message (or gave up): stdin closed
    node.destroy_node()
    rclpy.shutdown()
""")


def _same_job(a: JobEvent, b: JobEvent) -> bool:
    """Equal field by field, NaN equal to NaN, float32 fields to float32 precision."""
    return (a.job_id, a.name, a.hosts, a.state, a.duration_s, a.power_class) == (
        b.job_id, b.name, b.hosts, b.state, b.duration_s, b.power_class) and (
        a.start_unix == b.start_unix or math.isnan(a.start_unix) and math.isnan(b.start_unix)
    ) and np.float32(a.expected_util) == np.float32(b.expected_util)


def _assert_same(got: WorkloadEvents, want: WorkloadEvents) -> None:
    assert got.stamp_unix == pytest.approx(want.stamp_unix, abs=1e-6)   # ns stamp
    assert got.source == want.source
    assert len(got.jobs) == len(want.jobs)
    for g, w in zip(got.jobs, want.jobs):
        assert _same_job(g, w), (g, w)


@pytest.mark.ros
def test_workload_events_cross_processes_intact(ros_env):
    import rclpy
    from rackpower.msg import WorkloadEvents as Msg

    from rackpower_nodes.nodes.common import latched_qos
    from rackpower_nodes.nodes.workload_msgs import events_from_msg

    arg = json.dumps([SNAPSHOT.stamp_unix, SNAPSHOT.source, [vars(j) for j in SNAPSHOT.jobs]])
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, arg], env=ros_env,
                            stdin=subprocess.PIPE)
    received = []
    try:
        with rclpy.init():
            node = rclpy.create_node("workload_sub", namespace="/rack_we")
            node.create_subscription(Msg, "workload_events", received.append, latched_qos())
            deadline = time.monotonic() + 30
            while not received and time.monotonic() < deadline and proc.poll() is None:
                rclpy.spin_once(node, timeout_sec=0.1)
            node.destroy_node()
    finally:
        proc.stdin.close()  # the publisher ends once the test is done with it
        proc.wait(30)
    assert proc.returncode == 0
    assert len(received) == 1
    assert received[0].header.frame_id == "rack_we"
    _assert_same(events_from_msg(received[0]), SNAPSHOT)


def test_the_bag_typestore_reads_what_rclpy_serialized():
    from rclpy.serialization import serialize_message

    from rackpower_nodes.nodes.workload_msgs import events_to_msg
    from rackpower_nodes.sources.bags import WORKLOAD_TYPE, message_typestore

    raw = serialize_message(events_to_msg(SNAPSHOT, "rack_we"))
    msg = message_typestore().deserialize_cdr(raw, WORKLOAD_TYPE)
    assert msg.source == "slurm" and msg.header.frame_id == "rack_we"
    assert [j.job_id for j in msg.jobs] == ["4711", "4712", "4713"]
    assert list(msg.jobs[0].hosts) == ["gpu01", "gpu02"]
    assert msg.jobs[0].start_unix == T0 - 90.5 and math.isnan(msg.jobs[2].start_unix)


def _write_snapshots(path, snapshots, topic="/rack_we/workload_events") -> None:
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer

    from rackpower_nodes.nodes.workload_msgs import events_to_msg
    from rackpower_nodes.sources.bags import WORKLOAD_TYPE, message_typestore

    with Writer(path, version=9) as writer:
        conn = writer.add_connection(topic, WORKLOAD_TYPE, typestore=message_typestore())
        for snap in snapshots:
            writer.write(conn, round(snap.stamp_unix * 1e9), serialize_message(
                events_to_msg(snap)))


def test_a_bag_of_snapshots_reads_back_as_the_job_history(tmp_path):
    """A job pending for 3 s (expected start announced at +2 s, started at +3 s, ran 2 s):
    the history says so, and replays nothing before it was said."""
    from rackpower_nodes.sources.bags import job_log_from_bag

    def job(state, start):
        return JobEvent("7", "sim", ("srv01", "srv02"), state, start, 2.0, 0.8, "cpu")

    snaps = [WorkloadEvents(T0 + k, jobs, "schedule") for k, jobs in enumerate([
        (), (job("pending", NAN),), (job("pending", T0 + 3.5),), (job("running", T0 + 3),),
        (job("running", T0 + 3),), (), ()])]
    _write_snapshots(tmp_path / "bag", snaps)
    log = job_log_from_bag(tmp_path / "bag", namespace="rack_we")
    assert len(log) == 1
    r = log.records[0]
    assert (r.submit_unix, r.expected_start_unix, r.start_unix, r.end_unix) == pytest.approx(
        (T0 + 2, T0 + 3.5, T0 + 3, T0 + 5), abs=1e-6)      # stamps: s + ns
    assert r.hosts == ("srv01", "srv02") and r.expected_util == pytest.approx(0.8)
    assert log.events_at(T0 + 1.5).jobs == ()           # its start not yet announced
    assert log.events_at(T0 + 2.5).jobs[0].state == "pending"
    assert log.events_at(T0 + 4).jobs[0].state == "running"
    assert log.events_at(T0 + 5).jobs == ()
    assert len(job_log_from_bag(tmp_path / "bag", namespace="rack_other")) == 0


def test_from_bag_gives_every_series_the_bags_job_history(tmp_path):
    """A bag with power samples and workload events: each component's series carries the
    history as ``events``."""
    from rackpower.msg import PowerSamples
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import Writer

    from rackpower_nodes.nodes.workload_msgs import events_to_msg
    from rackpower_nodes.sources.bags import POWER_TYPE, WORKLOAD_TYPE, from_bag, message_typestore

    job = JobEvent("9", "etl", ("srv01",), "pending", T0 + 30, 60.0, 0.5, "cpu")
    with Writer(tmp_path / "bag", version=9) as writer:
        store = message_typestore()
        power = writer.add_connection("/rack_we/power_samples", POWER_TYPE, typestore=store)
        events = writer.add_connection("/rack_we/workload_events", WORKLOAD_TYPE,
                                       typestore=store)
        for b in range(20):                       # 2 s of 10 samples at 100 Hz per batch
            t = T0 + b * 0.1
            msg = PowerSamples(sample_period_s=0.01, sample_count=10, first_sequence=b * 10,
                               channel_ids=["srv01"], current_a=[0.5] * 10, voltage_v=[230.0],
                               mean_power_w=[115.0], peak_power_w=[115.0], total_power_w=115.0)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(round(t * 1e9), 10**9)
            writer.write(power, round(t * 1e9), serialize_message(msg))
            if b % 10 == 0:
                snap = WorkloadEvents(t, (job,), "slurm")
                writer.write(events, round(t * 1e9), serialize_message(events_to_msg(snap)))
    series = from_bag(tmp_path / "bag", namespace="rack_we")
    assert series and all(s.events is not None and len(s.events) == 1 for s in series)
    (record,) = series[0].events.records
    assert record.job_id == "9" and record.expected_start_unix == pytest.approx(T0 + 30)
