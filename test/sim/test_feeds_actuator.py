"""A feed lost under load in the live simulator, capped by the real `pdu_actuator` in its own
process: the office rack at its busy hour on two 10 A feeds (config/rack_feeds.yaml), its
PDUs on Modbus TCP and its servers' BMCs on Redfish on loopback, the actuator configured with
the feeds (C1's parameters) in reactive mode, the test publishing what the outlets serve as
the sensor would. Feed A is dropped: its PDU stops answering, the actuator applies the
contingency through the BMCs and the PDU that still answers, and feed B's breaker, carrying
over its rating the moment A goes, is brought back within its rating inside the trip
curve's time and does not trip."""
from __future__ import annotations

import copy
import subprocess
import threading
import time

import pytest
import yaml
from helpers import REPO
from helpers.devices import PASSWORD

from rackpower_nodes.sim.live import LiveRack
from rackpower_nodes.sim.pdu import PduModel
from rackpower_nodes.tools.launch_env import executable, stop_process

pytestmark = pytest.mark.ros

NS = "/rack_feeds"
BUSY_START = 1709557200.0       # 2024-03-04 13:00 UTC: simulated time 0 is the office's busy hour


def _params(rack: LiveRack) -> dict:
    nodes = yaml.safe_load((REPO / "config" / "rack.yaml").read_text())
    params = copy.deepcopy(nodes["/**/pdu_actuator"]["ros__parameters"])
    params["mode"] = "reactive"
    names = params["components"]["names"]
    params["pdus"]["urls"] = [rack.pdus[p].url for p in params["pdus"]["names"]]
    chassis = set(rack.bmc_chassis())
    params["components"]["power_cap_url"] = [rack.bmc.chassis_url(n) if n in chassis else ""
                                             for n in names]
    other = {"pdu-a": "pdu-b", "pdu-b": "pdu-a"}
    kinds = {c.name: c.kind for c in rack.sim.config.components}
    params["components"]["second_pdu"] = [
        other[p] if kinds[n] != "switch" else ""
        for n, p in zip(names, params["components"]["pdu"])]
    params["pdus"]["feed"] = ["A", "B"]
    params["feeds"] = {"names": ["A", "B"], "breaker_a": [10.0], "cap_time_s": 3.0}
    return params


class Sensor:
    """Publishes what the simulated outlets serve as the actuator's power_samples (20 Hz) and
    keeps every allocation it publishes."""

    def __init__(self, rack: LiveRack, names: list[str]):
        import rclpy

        from rackpower.msg import PowerAllocation, PowerSamples
        from rackpower_nodes.nodes.common import latched_qos, samples_qos

        self.rack, self.names = rack, names
        self.cols = rack._outlet_of[[rack.sim.names.index(n) for n in names]]
        self.node = rclpy.create_node("feeds_test", namespace=NS)
        self.allocations: list = []
        self.pub = self.node.create_publisher(PowerSamples, "power_samples", samples_qos(0.25))
        self.node.create_subscription(PowerAllocation, "power_allocation",
                                      self.allocations.append, latched_qos())
        self.node.create_timer(0.05, self._publish)
        self.executor = rclpy.executors.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _publish(self) -> None:
        from rackpower.msg import PowerSamples
        from rackpower_nodes.nodes.current_sensor import float32_array

        with self.rack.pdu_lock:
            served = self.rack.pdu_model.served_w[self.cols].copy()
        msg = PowerSamples(channel_ids=self.names, sample_count=1, sample_period_s=0.05,
                           mean_power_w=float32_array(served),
                           peak_power_w=float32_array(served))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
        self.pub.publish(msg)

    def wait(self, predicate, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.executor.shutdown()
        self._thread.join(timeout=5)
        self.node.destroy_node()


def test_the_actuator_caps_a_lost_feed_within_the_trip_curve(ros_env, tmp_path):
    import rclpy

    rack = LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=200.0,
                    pdu_base_port=0, bmc_port=0, feeds=REPO / "config" / "rack_feeds.yaml",
                    start_unix=BUSY_START)
    proc = None
    with rack:
        params = _params(rack)
        path = tmp_path / "actuator.yaml"
        path.write_text(yaml.safe_dump({"/**/pdu_actuator": {"ros__parameters": params}}))
        log = tmp_path / "actuator.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [str(executable("pdu_actuator")), "--ros-args", "-r", f"__ns:={NS}",
                 "--params-file", str(path)],
                env={**ros_env, "RACKPOWER_BMC_PASSWORD": PASSWORD}, stdout=out,
                stderr=subprocess.STDOUT)
        try:
            with rclpy.init():
                sensor = Sensor(rack, params["components"]["names"])
                try:
                    _lose_feed_a(rack, sensor, log)
                finally:
                    sensor.close()
        finally:
            if proc is not None and proc.poll() is None:
                stop_process(proc)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


def _lose_feed_a(rack: LiveRack, sensor: Sensor, log) -> None:
    def newest():
        return sensor.allocations[-1] if sensor.allocations else None

    assert sensor.wait(lambda: newest() is not None and newest().mode == "reactive"
                       and newest().pdu_written, 60.0), log.read_text()[-3000:]
    feeds = rack.feeds
    # under load: the allocations have grown to the busy hour's demand, B alone overloads
    assert sensor.wait(lambda: feeds.rack.feed_load_w.sum() > 1.2 * 2300.0, 60.0), \
        (feeds.rack.feed_load_w, rack.pdu_model.demand_w.sum())
    feeds.fail("A")
    assert sensor.wait(lambda: newest().mode_reason == "feed A lost", 15.0), \
        [m.mode_reason for m in sensor.allocations[-3:]]

    def survivor():
        with rack.pdu_lock:
            return feeds.rack.stats()["events"][0]["survivors"]["B"]

    assert sensor.wait(lambda: survivor()["time_to_rating_s"] is not None, 30.0), survivor()
    b = survivor()
    trip_s = PduModel([1.0], 2300.0).time_to_trip_s(b["peak_multiple"])
    print(f"feed A lost: B peaked at {b['peak_multiple']:.2f} x its rating (trips after "
          f"{trip_s:.1f} s), back within its rating after {b['time_to_rating_s']:.2f} s, "
          f"within its budget after {b['time_to_cap_s']} s, heat {b['peak_heat']:.3f}")
    assert b["peak_multiple"] > 1.05        # overloaded the moment A went (LiveFeeds.fail)
    assert b["time_to_rating_s"] < trip_s and b["peak_heat"] < 1.0
    time.sleep(3.0)                                         # and it stays that way
    with rack.pdu_lock:
        stats = feeds.rack.stats()
    assert stats["trips"] == 0 and stats["feeds"]["B"]["load_w"] <= 2300.0
    feeds.restore("A")
    assert sensor.wait(lambda: newest().mode == "reactive" and newest().pdu_written, 30.0)
