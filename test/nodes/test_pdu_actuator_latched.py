"""The latched `power_allocation` tells the truth to a subscriber that joins late: after a
deactivation it says `inactive` (what the devices were left at, stamped when it stopped), not
the last live allocation; after reactivation it is live again.

The pdu_actuator runs in its own process against two simulated Modbus PDUs
(`helpers.rack`)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from helpers.rack import (
    NS, Rack, actuator_params, expected_static, free_port, pdu_server, running_actuator, stamp)

pytestmark = pytest.mark.ros


def _transition(rack: Rack, transition_id: int) -> None:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    cli = rack.node.create_client(ChangeState, f"{NS}/pdu_actuator/change_state")
    assert cli.wait_for_service(timeout_sec=30.0)
    fut = cli.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    end = time.monotonic() + 15.0
    while not fut.done() and time.monotonic() < end:
        time.sleep(0.02)
    assert fut.result() is not None and fut.result().success, transition_id
    rack.node.destroy_client(cli)


def _late_subscriber(rack: Rack, timeout_s: float = 10.0) -> list:
    """A new transient-local subscription in `rack`'s node: what it received within
    `timeout_s` (s) of joining, waiting for the first message."""
    from rackpower.msg import PowerAllocation
    from rackpower_nodes.nodes.common import latched_qos

    got: list = []
    sub = rack.node.create_subscription(PowerAllocation, "power_allocation", got.append,
                                        latched_qos())
    end = time.monotonic() + timeout_s
    while not got and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(0.3)           # anything published after joining lands too
    rack.node.destroy_subscription(sub)
    return got


def test_late_subscriber_after_deactivation_sees_inactive(ros_env, tmp_path):
    import rclpy
    from lifecycle_msgs.msg import Transition

    ports = [free_port(), free_port()]
    params = actuator_params(ports)
    servers = [pdu_server(p).start() for p in ports]
    static = expected_static(params).astype(np.float32).astype(np.float64)
    with running_actuator(tmp_path, params, ros_env, servers):
        with rclpy.init():
            rack = Rack()
            try:
                assert rack.run_until(lambda m: m.mode == "proactive" and m.pdu_written,
                                      30.0), "never came up"
                live = rack.allocations[-1]
                assert not np.allclose(live.allocated_w, static)   # it follows the forecasts

                before = time.time()
                _transition(rack, Transition.TRANSITION_DEACTIVATE)
                after = time.time()
                # the subscriber that was there all along got the final word too
                assert rack.run_until(lambda m: m.mode == "inactive", 30.0)
                time.sleep(0.5)                 # nothing live follows it
                assert rack.allocations[-1].mode == "inactive"

                late = _late_subscriber(rack)
                assert len(late) == 1, [m.mode for m in late]
                m = late[0]
                assert m.mode == "inactive"
                assert "not maintained" in m.mode_reason and "deactivate" in m.mode_reason
                assert "static split confirmed" in m.mode_reason
                # what the devices were left at, and since when (not a refreshed stamp)
                np.testing.assert_allclose(m.allocated_w, static, rtol=1e-6)
                np.testing.assert_allclose(m.held_w, static, rtol=1e-6)
                assert m.pdu_written and sum(m.allocated_w) <= m.budget_w
                assert before - 0.5 <= stamp(m) <= after + 0.5
                assert all(np.isnan(m.forecast_w)) and m.forecast_model == ""
                np.testing.assert_array_equal(servers[0].model.allocation_w[:2], static[:2])

                _transition(rack, Transition.TRANSITION_ACTIVATE)
                assert rack.run_until(lambda m: m.mode == "proactive", 30.0)
                late = _late_subscriber(rack)
                assert late and all(x.mode == "proactive" for x in late)
                assert stamp(late[0]) > stamp(m)        # computed after the reactivation
            finally:
                rack.close()
