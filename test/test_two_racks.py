"""Two simulated racks launched side by side in one DDS domain share nothing by accident.

rack_a and rack_b each run launch/rack.launch.py under the real `ros2 launch` with use_sim:=true;
rack_b's simulator and device addresses are moved by sim_port_offset:=100 and it draws its load
from another seed; rack_a allocates proactively, rack_b holds the static split (mode:=static),
so each rack's PDU registers tell whose actuator wrote them. Checked while both run: each
rack's samples, forecasts and allocations carry its own frame_id; every publisher and
subscriber of a rack's topics is a node of that rack (or this test's); each rack's simulated
PDUs (read over Modbus on its own ports) hold what its own actuator reports holding. Then one
Ctrl-C to each: every process exits 0, each actuator leaves the static split, and each rack's
bags lie in <data_dir>/<rack>/bags named after it, holding only its own topics and frames.

One test function: two graphs at once are heavy for a 2-core machine (its wall time is
printed, not asserted). The launch file and the parameter YAML are the checkout's.
"""
from __future__ import annotations

import time
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers.graph import NODES, drain, spin_until, teardown_hangs, watching
from helpers.recorder import recorder_written

from rackpower_nodes.tools.launch_env import LaunchedGraph, without_launch_interrupts

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
UP_TIMEOUT_S = 240.0           # two graphs on a loaded 2-core machine
END_TIMEOUT_S = 60.0
RACKS = {"rack_a": {"offset": 0, "seed": 1, "mode": "proactive"},
         "rack_b": {"offset": 100, "seed": 2, "mode": "static"}}
STREAMS = ("power_samples", "power_forecast", "power_allocation")
GLOBAL_TOPICS = {"/diagnostics", "/rosout", "/parameter_events"}
NO_TRACE = ("Traceback", "never retrieved", "Exception ignored", "RCLError")


class Watch:
    """The test's own node: each rack's streams (frame ids, newest allocations) and what
    its recorder reports written."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

        from rackpower.msg import PowerAllocation, PowerForecast, PowerSamples

        self.node = rclpy.create_node("two_racks_watch")
        self.frames: dict[str, set[str]] = defaultdict(set)       # topic -> frame ids
        self.count: dict[str, int] = defaultdict(int)
        self.allocations = {rack: deque(maxlen=300) for rack in RACKS}
        self.written: dict[str, int] = {}
        self.psu_meters: dict[str, dict[str, bytes]] = defaultdict(dict)   # rack -> BMC: level
        types = dict(zip(STREAMS, (PowerSamples, PowerForecast, PowerAllocation)))
        every = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for rack in RACKS:
            for name, msg_type in types.items():
                topic = f"/{rack}/{name}"
                # samples best effort (as published); allocations reliable: none is missed
                self.node.create_subscription(
                    msg_type, topic, lambda m, t=topic, r=rack: self._on(t, r, m),
                    qos_profile_sensor_data if name == "power_samples" else every)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 50)

    def _on(self, topic: str, rack: str, msg) -> None:
        self.frames[topic].add(msg.header.frame_id)
        self.count[topic] += 1
        if topic.endswith("/power_allocation"):
            self.allocations[rack].append(msg)

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            for rack in RACKS:
                head = f"/{rack}/health_monitor: PSU meters "
                if status.name.startswith(head):
                    level = status.level if isinstance(status.level, bytes) \
                        else bytes([status.level])
                    self.psu_meters[rack][status.name.removeprefix(head)] = level
        for rack in RACKS:
            recorder_written(msg, f"/{rack}", self.written)

    def up(self, rack: str) -> bool:
        drain(self.node, 0.2)                 # ~60 stream messages and ~18 statuses a second
        present = self._present()
        return (all(f"/{rack}/{n}" in present for n in NODES)
                and self.written.get(f"/{rack}/power_samples", 0) > 0
                and self.written.get(f"/{rack}/power_allocation", 0) > 0
                and all(self.count[f"/{rack}/{s}"] >= 20 for s in STREAMS))

    def _present(self) -> set[str]:
        """Full names of the nodes the graph shows now."""
        return {f"{ns.rstrip('/')}/{name}"
                for name, ns in self.node.get_node_names_and_namespaces()}

    def missing(self, rack: str) -> str:
        """What :meth:`up` still waits for (said when the wait fails)."""
        present = self._present()
        nodes = [n for n in NODES if f"/{rack}/{n}" not in present]
        written = {s: self.written.get(f"/{rack}/{s}", 0)
                   for s in ("power_samples", "power_allocation")}
        counts = {s: self.count[f"/{rack}/{s}"] for s in STREAMS}
        return f"{rack} up: nodes not seen {nodes}, recorder wrote {written}, received {counts}"


def _launch(ros_env, tmp: Path, rack: str) -> LaunchedGraph:
    spec = RACKS[rack]
    return LaunchedGraph([str(REPO / "launch" / "rack.launch.py"), "use_sim:=true",
                          f"rack:={rack}", f"data_dir:={tmp / 'data'}",
                          f"config:={REPO / 'config' / 'rack.yaml'}",
                          f"sim_port_offset:={spec['offset']}", f"sim_seed:={spec['seed']}",
                          f"mode:={spec['mode']}"], ros_env, tmp / f"{rack}.log")


def _assert_graph_confined(node) -> None:
    """Every publisher and subscriber of a topic in a rack's namespace is a node of that
    rack or this test's; every topic the racks' nodes publish is in their own namespace or
    one of the ROS-wide ones."""
    racks = {f"/{r}" for r in RACKS}
    topics = [name for name, _ in node.get_topic_names_and_types()]
    for rack in RACKS:
        assert {f"/{rack}/{s}" for s in STREAMS} <= set(topics), topics
    for topic in topics:
        pubs = node.get_publishers_info_by_topic(topic)
        subs = node.get_subscriptions_info_by_topic(topic)
        owner = next((r for r in racks if topic.startswith(r + "/")), None)
        if owner is not None:
            assert {p.node_namespace for p in pubs} <= {owner}, (topic, pubs)
            assert {s.node_namespace for s in subs} <= {owner, "/"}, (topic, subs)
        else:
            rack_pubs = [p for p in pubs if p.node_namespace in racks]
            assert topic in GLOBAL_TOPICS or not rack_pubs, (topic, rack_pubs)


def _pdu_registers(offset: int, pdus: list[str], outlets: list[int]) -> np.ndarray:
    """Each component's outlet allocation register (W) on the simulated PDUs at
    127.0.0.1:5020 + offset (pdu-a), 5021 + offset (pdu-b)."""
    from pymodbus.client import ModbusTcpClient

    from rackpower_nodes.core.pdu_map import load_register_map

    point = load_register_map("rackpower_sim").point("outlet_allocation_w")
    out = np.full(len(pdus), np.nan)
    for i, name in enumerate(("pdu-a", "pdu-b")):
        client = ModbusTcpClient("127.0.0.1", port=5020 + offset + i, timeout=2, retries=1)
        assert client.connect(), f"no PDU {name} on port {5020 + offset + i}"
        try:
            for k, (pdu, outlet) in enumerate(zip(pdus, outlets)):
                if pdu == name:
                    addr = int(point.address_of(outlet))
                    reply = client.read_holding_registers(addr, count=point.width, device_id=1)
                    assert not reply.isError(), reply
                    out[k] = float(point.decode(np.array(reply.registers))[0])
        finally:
            client.close()
    return out


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _assert_pdus_hold_own_allocations(watch: Watch, static_w: np.ndarray) -> dict:
    """Each rack's PDU registers (read over Modbus on its own ports) are what its own actuator
    reported holding (held_w) in one of its allocations computed within 2 s of the read, per
    component (a server's held value is the smaller of PDU and BMC, so its register is at
    least that); rack_b's are its static split and rack_a's differ from it: only rack_a's
    actuator wrote them."""

    params = yaml.safe_load((REPO / "config" / "rack.yaml").read_text())
    comps = params["/**/pdu_actuator"]["ros__parameters"]["components"]
    outlet_only = np.array([not url for url in comps["power_cap_url"]])
    registers = {}
    for rack, spec in RACKS.items():
        t_read = time.time()
        regs = _pdu_registers(spec["offset"], comps["pdu"], comps["outlet"])
        done = time.time()
        assert spin_until(watch.node, lambda r=rack: _stamp(watch.allocations[r][-1]) > done + 1,
                          30.0), f"no allocation from {rack} after the read"
        near = [np.array(m.held_w, dtype=np.float64) for m in watch.allocations[rack]
                if t_read - 2.0 <= _stamp(m) <= done + 2.0]
        assert near, rack
        held = np.array(near)
        err = np.where(outlet_only, np.abs(regs - held), np.maximum(held - regs, 0.0))
        best = np.nanmin(np.where(np.isnan(err), np.inf, err), axis=0)
        assert np.all(best <= 1.0), (rack, regs, best, len(near))
        registers[rack] = regs
    assert np.allclose(registers["rack_b"], static_w, atol=1.0), registers["rack_b"]
    assert np.max(np.abs(registers["rack_a"] - static_w)[outlet_only]) > 5.0, registers
    return registers


def _assert_bags_own_only(data: Path, rack: str) -> int:
    from rosbags.highlevel import AnyReader

    from rackpower_nodes.sources.bags import message_typestore

    folder = data / rack / "bags"
    bags = sorted(p for p in folder.iterdir() if p.is_dir())
    assert bags, f"no bag in {folder}"
    assert all(b.name.startswith(f"{rack}_") for b in bags), [b.name for b in bags]
    assert all((b / "metadata.yaml").is_file() for b in bags), [b.name for b in bags]
    frames, topics, n = set(), set(), 0
    with AnyReader(bags, default_typestore=message_typestore()) as reader:
        for conn, _, raw in reader.messages():
            topics.add(conn.topic)
            msg = reader.deserialize(raw, conn.msgtype)
            if hasattr(msg, "header"):
                frames.add(msg.header.frame_id)
            n += 1
    assert {f"/{rack}/power_samples", f"/{rack}/power_allocation"} <= topics, topics
    assert all(t.startswith(f"/{rack}/") for t in topics), topics
    assert frames == {rack}, frames
    return n


def _assert_ended_cleanly(graph: LaunchedGraph, code: int | None) -> None:
    out = graph.output
    if graph.hung is None:               # else: launch's own hang after every process ended
        assert code == 0, out[-4000:]
    assert not graph.group_alive()
    out, launch_own = without_launch_interrupts(out)
    if launch_own:
        print(f"launch printed {launch_own} Ctrl-C of its own as ignored (not the graph's)")
    for marker in NO_TRACE:
        assert marker not in out, f"{marker!r} in the launch output:\n{out[-6000:]}"
    hangs = teardown_hangs(graph, out)   # rclpy's teardown, after the node's own stop
    last = {r.name.rsplit("-", 1)[0]: r for r in graph.runs}
    codes = {n: last[n].code for n in ("rack_sim", *NODES)
             if not last[n].code_lost and last[n].name not in hangs}
    assert codes == dict.fromkeys(codes, 0), out[-6000:]
    assert "shutdown: static split" in out, out[-4000:]


def test_two_racks_in_one_domain_share_nothing(ros2, ros_env, tmp_path):
    from rackpower_nodes.core.actuator_config import actuator_config_from_params
    from rackpower_nodes.core.allocation import AllocationController
    from rackpower_nodes.core.params import flatten_parameters

    params = yaml.safe_load((REPO / "config" / "rack.yaml").read_text())
    cfg = actuator_config_from_params(flatten_parameters(
        params["/**/pdu_actuator"]["ros__parameters"]))
    static_w = AllocationController(cfg.components, cfg.policy, "static").static_allocation()

    t0 = time.monotonic()
    graphs: dict[str, LaunchedGraph] = {}
    try:
        with watching(Watch) as watch:
            graphs.update((rack, _launch(ros_env, tmp_path, rack)) for rack in RACKS)
            for rack, graph in graphs.items():
                graph.wait_until(lambda r=rack: watch.up(r), UP_TIMEOUT_S,
                                 lambda r=rack: watch.missing(r))
            t_up = time.monotonic() - t0
            for rack in RACKS:
                for stream in STREAMS:
                    assert watch.frames[f"/{rack}/{stream}"] == {rack}, dict(watch.frames)
            assert watch.allocations["rack_b"][-1].mode == "static"
            assert np.allclose(watch.allocations["rack_b"][-1].allocated_w, static_w, atol=0.5)
            _assert_graph_confined(watch.node)
            # each health_monitor reads its own simulator's BMC (the PSUs' own meters) with
            # the password the launch gives it: one status, OK, on the rack's shifted port
            for rack, spec in RACKS.items():
                bmc = f"http://127.0.0.1:{5080 + spec['offset']}"
                assert spin_until(watch.node, lambda r=rack, b=bmc: watch.psu_meters[r].get(
                    b) == b"\x00", 60), dict(watch.psu_meters)
                assert list(watch.psu_meters[rack]) == [bmc], dict(watch.psu_meters)
            registers = _assert_pdus_hold_own_allocations(watch, static_w)
            modes = {r: watch.allocations[r][-1].mode for r in RACKS}
        # out of the DDS graph before the racks stop (helpers.graph.watching)
        for graph in graphs.values():
            graph.interrupt()
        codes = {rack: graph.wait_ended(END_TIMEOUT_S) for rack, graph in graphs.items()}
    finally:
        for graph in graphs.values():
            graph.close()
    for rack, graph in graphs.items():
        _assert_ended_cleanly(graph, codes[rack])
    data = tmp_path / "data"
    assert sorted(p.name for p in data.iterdir()) == sorted(RACKS)
    counts = {rack: _assert_bags_own_only(data, rack) for rack in RACKS}
    for rack in RACKS:
        assert (data / rack / "models").is_dir()
    print(f"two racks: both up in {t_up:.0f} s, test {time.monotonic() - t0:.0f} s; modes "
          f"{modes}; PDU registers rack_a {np.round(registers['rack_a'])}, rack_b "
          f"{np.round(registers['rack_b'])}; bag messages {counts}")
