"""rack_composed: the rack's nodes in one process against `rackpower-sim live`. Every node
comes up under its own name in the rack's namespace, samples, forecasts and allocations flow,
the actuator is still a lifecycle node (active through its get_state service), and a SIGINT
ends the process with exit code 0 after the actuator's safe write and with the recorder's bag
closed (metadata.yaml written, readable). A bad parameter of one node ends it with exit 2
naming the key. Start the simulator's fixed ports one at a time:
`flock /tmp/rackpower-sim.lock pytest test/nodes/test_composed.py`."""
from __future__ import annotations

import pytest
import yaml
from helpers import REPO
from helpers.composed import ComposedRack
from helpers.graph import NODES, leave_graph
from helpers.recorder import bags_in, read_bags

RACK = "rack_composed_t"
UP_S = 240.0                 # a loaded 2-core machine: imports, DDS discovery, PDUs, BMCs


class Listener:
    """The test's own node: counts the rack's samples, forecasts and allocations."""

    def __init__(self):
        import rclpy
        from rackpower.msg import PowerAllocation, PowerForecast, PowerSamples
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.node = rclpy.create_node("composed_listener")
        self.counts = {"samples": 0, "forecast": 0, "allocation": 0}
        self.modes: list[str] = []
        qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT)
        for key, cls, topic in (("samples", PowerSamples, "power_samples"),
                                ("forecast", PowerForecast, "power_forecast"),
                                ("allocation", PowerAllocation, "power_allocation")):
            self.node.create_subscription(cls, f"/{RACK}/{topic}",
                                          lambda m, k=key: self._count(k, m), qos)

    def _count(self, key: str, msg) -> None:
        self.counts[key] += 1
        if key == "allocation":
            self.modes.append(msg.mode)

    def spin(self) -> None:
        import rclpy

        rclpy.spin_once(self.node, timeout_sec=0.1)

    def nodes_present(self) -> set[str]:
        return {f"{ns.rstrip('/')}/{name}"
                for name, ns in self.node.get_node_names_and_namespaces()}

    def up(self) -> bool:
        self.spin()
        present = self.nodes_present()
        return (all(f"/{RACK}/{n}" in present for n in (*NODES, "rack_view"))
                and all(c > 5 for c in self.counts.values()))

    def actuator_state(self) -> str:
        import rclpy
        from lifecycle_msgs.srv import GetState

        client = self.node.create_client(GetState, f"/{RACK}/pdu_actuator/get_state")
        try:
            assert client.wait_for_service(timeout_sec=30.0), "no pdu_actuator/get_state"
            future = client.call_async(GetState.Request())
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=30.0)
            assert future.done(), "pdu_actuator/get_state did not answer"
            return future.result().current_state.label
        finally:
            self.node.destroy_client(client)


@pytest.fixture()
def listener(ros_env):
    import rclpy

    with rclpy.init():
        listener = Listener()
        yield listener
        leave_graph(listener.node)


def test_composed_graph_runs_and_ctrl_c_shuts_every_node_down(ros_env, tmp_path, listener):
    rack = ComposedRack(REPO, RACK, ros_env, tmp_path)
    try:
        rack.wait_until(listener.up, UP_S, "every node up and samples, forecasts and "
                                           "allocations flowing")
        assert listener.actuator_state() == "active"
        rack.wait_until(lambda: (listener.spin(), "proactive" in listener.modes)[1], 60.0,
                        "a proactive allocation")
        leave_graph(listener.node)              # before the graph it watched is stopped
        code = rack.interrupt(60.0)
        out = rack.output()
        assert code == 0, out[-6000:]
    finally:
        leave_graph(listener.node)
        rack.close()
    assert "Traceback" not in out, out[-6000:]
    assert "shutdown: static split" in out, out[-4000:]            # the actuator's safe write
    bags = bags_in(rack.data / "bags")
    assert bags, f"no bag in {rack.data / 'bags'}"
    assert all((b / "metadata.yaml").is_file() for b in bags), [b.name for b in bags]
    counts, _ = read_bags(bags)
    assert counts[f"/{RACK}/power_samples"] > 0 and counts[f"/{RACK}/power_allocation"] > 0


def test_composed_names_a_bad_parameter_and_exits_2(ros_env, tmp_path):
    config = yaml.safe_load((REPO / "config" / "rack.yaml").read_text())
    config["/**/retrain_scheduler"]["ros__parameters"]["offpeak"]["combine"] = "sometimes"
    tree = tmp_path / "tree"
    (tree / "config").mkdir(parents=True)
    (tree / "config" / "rack.yaml").write_text(yaml.safe_dump(config))
    (tree / "config" / "rack_sim.yaml").write_text(
        (REPO / "config" / "rack_sim.yaml").read_text())
    rack = ComposedRack(tree, RACK, ros_env, tmp_path)
    try:
        code = rack.proc.wait(UP_S)
        out = rack.output()
    finally:
        rack.close()
    assert code == 2, out[-4000:]
    assert "offpeak.combine" in out and "Traceback" not in out, out[-4000:]
