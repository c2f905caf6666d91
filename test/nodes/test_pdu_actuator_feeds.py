"""The `pdu_actuator` with redundant feeds, in its own process, over two simulated PDUs.

PDU pdu-a hangs on feed A, pdu-b on feed B, and every server is dual-corded (one supply on
each). pdu-b stops answering (its feed lost, as far as the actuator can see): the actuator
applies the contingency computed ahead (mode safe, 'feed B lost', in /diagnostics too), which
fits feed A's budget, writes it through the PDU that still answers, and returns to normal
when pdu-b is back.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.rack import Rack, actuator_params, free_port, pdu_server, running_actuator, stamp

pytestmark = pytest.mark.ros

FEED_BUDGET_W = 2.0 * 230.0 * 0.8          # feeds.breaker_a x budget.voltage_v x derating


def _params(ports):
    params = actuator_params(ports)
    params["feeds"] = {"names": ["A", "B"], "breaker_a": [2.0], "cap_time_s": 2.0}
    params["pdus"]["feed"] = ["A", "B"]
    params["components"]["second_pdu"] = ["pdu-b", "pdu-b", "pdu-a", "pdu-a"]
    return params


def test_a_lost_feed_gets_its_contingency_at_once(ros_env, tmp_path):
    import rclpy

    ports = [free_port(), free_port()]
    servers = [pdu_server(p).start() for p in ports]
    with running_actuator(tmp_path, _params(ports), ros_env, servers):
        with rclpy.init():
            rack = Rack()
            assert rack.run_until(lambda m: m.mode == "proactive" and m.pdu_written, 30.0)
            normal = np.array(rack.allocations[-1].allocated_w, dtype=np.float64)
            # all dual-corded, split evenly: each feed carries half
            assert normal.sum() / 2 <= FEED_BUDGET_W * (1 + 1e-6)

            lost_at = time.time()
            servers[1].stop()
            assert rack.run_until(lambda m: m.mode_reason == "feed B lost", 30.0), \
                [m.mode_reason for m in rack.allocations[-3:]]
            first = next(m for m in rack.allocations if m.mode_reason == "feed B lost")
            print(f"pdu-b stopped -> contingency published after "
                  f"{(stamp(first) - lost_at) * 1e3:.0f} ms")
            alloc = np.array(first.allocated_w, dtype=np.float64)
            assert first.mode == "safe"
            assert alloc.sum() <= FEED_BUDGET_W * (1 + 1e-6)      # feed A carries it all
            assert np.all(alloc >= 50.0 - 1e-3)                     # floors kept
            # the high priorities (a1, b1: 2) keep more than the low ones
            assert alloc[0] > alloc[1] and alloc[2] > alloc[3]
            # written through the PDU that still answers
            end = time.monotonic() + 30.0
            while time.monotonic() < end and not np.allclose(
                    servers[0].model.allocation_w[:2], alloc[:2], rtol=1e-6):
                time.sleep(0.02)
            np.testing.assert_allclose(servers[0].model.allocation_w[:2], alloc[:2], rtol=1e-6)
            assert rack.run_until(
                lambda m: "feed B lost" in rack.diag.get("allocation", (0, ""))[1], 30.0)

            servers[1] = pdu_server(ports[1]).start()
            assert rack.run_until(lambda m: m.mode == "proactive" and m.pdu_written, 15.0)
            back = np.array(rack.allocations[-1].allocated_w, dtype=np.float64)
            assert back.sum() > alloc.sum()
            rack.close()
