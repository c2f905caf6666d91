"""The `host_telemetry` executable over DDS: against Debian's real node_exporter, against the
simulator's endpoints, and through endpoint faults."""
from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import yaml
from helpers.devices import BodyServer, junk
from helpers.graph import leave_graph, spin_until

from rackpower_nodes.tools.launch_env import executable, stop_process
from rackpower_nodes.sim.live import LiveRack

pytestmark = pytest.mark.ros


def _params(tmp_path, names, urls, **extra) -> str:
    params = {"hosts": {"names": list(names), "urls": list(urls)},
              "poll": {"rate_hz": 2.0, "timeout_s": 0.4}, "stale_after_s": 1.5}
    params.update(extra)
    path = tmp_path / "telemetry.yaml"
    path.write_text(yaml.safe_dump({"/**/host_telemetry": {"ros__parameters": params}}))
    return str(path)


# For tests not of timeouts or staleness: a per-host timeout long enough for a loaded machine
# (the simulated exporters answer from a thread of this process, the real one competes with
# the burners), a poll period it fits in, and a stale limit that a node process left
# unscheduled for seconds does not reach.
RELAXED_POLL = {"rate_hz": 1.0, "timeout_s": 0.9}
RELAXED_STALE_S = 10.0


class _Listener:
    def __init__(self, namespace: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import HostTelemetry
        from rackpower_nodes.nodes.current_sensor import samples_qos

        self.node = rclpy.create_node("telemetry_listener", namespace=namespace)
        self.messages: list = []        # (monotonic, psutil cpu_times, msg)
        self.diagnostics: dict[str, object] = {}
        self.node.create_subscription(HostTelemetry, "host_telemetry", self._on_msg,
                                      samples_qos(2.0))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_msg(self, msg) -> None:
        self.messages.append((time.monotonic(), psutil.cpu_times(), msg))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if "/host_telemetry: " in status.name:
                self.diagnostics[status.hardware_id] = status

    def spin(self, seconds: float, until) -> bool:
        return spin_until(self.node, until, seconds)

    def host(self, msg, host_id: str):
        return next(h for h in msg.hosts if h.host_id == host_id)


@pytest.fixture
def listener(ros_env):
    import rclpy

    with rclpy.init():
        lis = _Listener("/rack_ht")
        yield lis
        leave_graph(lis.node)


def _start_node(ros_env, params_file: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(executable("host_telemetry")), "--ros-args", "-r", "__ns:=/rack_ht",
         "--params-file", params_file], env=ros_env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)


def _busy_util(a, b) -> float:
    modes = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    total = sum(getattr(b, m) - getattr(a, m) for m in modes)
    idle = (b.idle - a.idle) + (b.iowait - a.iowait)
    return 1.0 - idle / total


CPU_TOLERANCE = 0.10   # published utilisation vs psutil over the interval between two messages


def test_real_node_exporter_utilisation_agrees_with_psutil(ros_env, tmp_path, listener,
                                                           node_exporter):
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # until killed
    node = _start_node(ros_env, _params(tmp_path, ["this-host"], [node_exporter.url],
                                        poll=RELAXED_POLL, stale_after_s=RELAXED_STALE_S))
    try:
        assert listener.spin(40, until=lambda: len(listener.messages) >= 10), "no telemetry"
    finally:
        leave_graph(listener.node)              # before the node it listens to stops
        stop_process(node)
        burner.kill()
        burner.wait()
    pairs = list(zip(listener.messages[4:], listener.messages[5:]))
    diffs = []
    for (_, cpu_a, _), (_, cpu_b, msg) in pairs:
        host = listener.host(msg, "this-host")
        assert host.up and not host.stale
        diffs.append(abs(host.cpu_util - _busy_util(cpu_a, cpu_b)))
        assert 0.3 < host.cpu_util <= 1.0          # the burner keeps at least half a core busy
        assert 0.0 < host.mem_used_fraction < 1.0
        assert host.mem_used_fraction == pytest.approx(
            psutil.virtual_memory().percent / 100, abs=0.05)
    assert sorted(diffs)[len(diffs) // 2] < CPU_TOLERANCE / 2, diffs   # median
    assert max(diffs) < CPU_TOLERANCE, diffs


@pytest.fixture
def live_rack(tmp_path):
    rack = LiveRack(str(tmp_path / "board"), board_channels=16, board_rate_hz=200.0)
    with rack:
        yield rack


COUNTER_LAG_S = 1.0  # the exporters' counters trail simulated time by up to one advance period
#                      (0.1 s) plus the advancing thread's scheduling delay on a loaded machine


def _stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _newest_rates(messages, host_id: str, wall_to_sim_s: float):
    """(HostMetrics, simulated-time span in s that its rates can cover) of `host_id`, or None.

    Uses the newest message whose host was up in it and in the two messages before it: its
    rates are then over the scrapes of the last two polls, and a poll starts after the previous
    one has published (header stamp = poll finished; one timer, one callback at a time). A
    message this listener missed only widens the span."""
    for i in range(len(messages) - 1, 1, -1):
        trio = [m for _, _, m in messages[i - 2:i + 1]]
        hosts = [next(h for h in m.hosts if h.host_id == host_id) for m in trio]
        if all(h.up for h in hosts):
            return hosts[2], (_stamp_s(trio[0]) + wall_to_sim_s - COUNTER_LAG_S,
                              _stamp_s(trio[2]) + wall_to_sim_s)
    return None


def test_simulator_endpoints_give_the_simulated_utilisation(ros_env, tmp_path, listener,
                                                            live_rack):
    manifest = live_rack.manifest()
    node = _start_node(ros_env, _params(tmp_path, manifest["hosts"], manifest["host_urls"],
                                        poll=RELAXED_POLL, stale_after_s=RELAXED_STALE_S))
    up: list[str] = []
    samples = 0
    try:
        assert listener.spin(30, until=lambda: len(listener.messages) >= 8)
        for _, _, msg in listener.messages[3:]:
            for h in msg.hosts:
                samples += 1
                assert not h.stale, h
                if h.up:
                    up.append(h.host_id)
                else:                      # a scrape that timed out is reported, not hidden
                    assert "timeout" in h.last_error or "refused" in h.last_error, h
    finally:
        leave_graph(listener.node)              # before the node it listens to stops
        stop_process(node)
    # every host answered, and every scrape that did not was a timeout or a refusal (a broken
    # kept-alive connection would name itself); how many timed out is the machine's load
    assert set(up) == set(manifest["hosts"]), (up, samples)
    # Expected: the simulator's own utilisation over the span between the two scrapes the
    # rates come from, per host (the stamps are wall time, simulated time is monotonic).
    wall_to_sim_s = live_rack.sim_time() - time.time()
    compared = 0
    for host_id in manifest["hosts"]:
        newest = _newest_rates(listener.messages, host_id, wall_to_sim_s)
        if newest is None:
            continue
        h, span = newest
        window = [live_rack.sim.host_state(host_id, t).cpu_util
                  for t in np.arange(max(span[0], 0.0), span[1] + 0.05, 0.05)]
        assert min(window) - 0.03 <= h.cpu_util <= max(window) + 0.03, (host_id, span, window)
        assert h.net_rx_bps > 0 and h.disk_read_bps >= 0
        compared += 1
    assert compared >= len(manifest["hosts"]) // 2


def test_endpoint_faults_are_reported_without_spikes(ros_env, tmp_path, listener, live_rack):
    manifest = live_rack.manifest()
    node = _start_node(ros_env, _params(tmp_path, manifest["hosts"], manifest["host_urls"]))
    server = live_rack.fleet.servers["srv03"]
    try:
        assert listener.spin(20, until=lambda: len(listener.messages) >= 3)
        observed = {}
        for fault, reason in (("down", "connection refused"), ("slow", "timeout"),
                              ("garbage", "garbage"), ("http500", "HTTP 500")):
            server.set_fault(fault, delay_s=2.0)
            assert listener.spin(30, until=lambda: reason in getattr(
                listener.diagnostics.get("srv03"), "message", "")), f"{fault} not reported"
            observed[fault] = listener.diagnostics["srv03"]
            server.set_fault(None)
            assert listener.spin(30, until=lambda: getattr(
                listener.diagnostics.get("srv03"), "message", "") == "reachable")
        live_rack.fleet.hosts["srv04"].reset_counters()
        assert listener.spin(30, until=lambda: _kv(listener.diagnostics.get("srv04"),
                                                   "counter_resets") == "1")
        server.set_fault("down")
        assert listener.spin(30, until=lambda: listener.host(
            listener.messages[-1][2], "srv03").stale), "never went stale"
        server.set_fault(None)
        assert listener.spin(30, until=lambda: not listener.host(
            listener.messages[-1][2], "srv03").stale), "did not recover"
        assert node.poll() is None, "node died"
    finally:
        leave_graph(listener.node)              # before the node it listens to stops
        stop_process(node)
    for fault in ("down", "slow", "garbage", "http500"):
        assert int.from_bytes(observed[fault].level, "little") >= 1   # WARN or ERROR
    for _, _, msg in listener.messages:
        for h in msg.hosts:
            for value in (h.cpu_util, h.mem_used_fraction):
                assert math.isnan(value) or 0.0 <= value <= 1.0, (h.host_id, value)
            for value in (h.net_rx_bps, h.net_tx_bps, h.disk_read_bps, h.disk_write_bps):
                assert math.isnan(value) or 0.0 <= value < 1e10, (h.host_id, value)
            if h.stale:
                assert math.isnan(h.cpu_util)


def _kv(status, key: str):
    if status is None:
        return None
    return next((kv.value for kv in status.values if kv.key == key), None)


def test_malformed_config_fails_at_start(ros_env, tmp_path):
    params = _params(tmp_path, ["a", "b"], ["http://127.0.0.1:1/metrics"])
    result = subprocess.run([str(executable("host_telemetry")), "--ros-args", "--params-file",
                             params], env=ros_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "hosts.urls" in result.stderr and "one per hosts.names" in result.stderr


def test_an_oversized_exporter_body_is_reported_and_memory_stays_bounded(
        ros_env, tmp_path, listener, node_exporter):
    big = BodyServer(lambda path: junk(8 * 2**20), "chunked")
    params = _params(tmp_path, ["real", "big"],
                     [node_exporter.url, f"http://127.0.0.1:{big.port}/metrics"],
                     poll={"rate_hz": 2.0, "timeout_s": 0.4, "max_body_bytes": 2**20})
    node = _start_node(ros_env, params)
    try:
        assert listener.spin(30, until=lambda: "1048576-byte cap" in getattr(
            listener.diagnostics.get("big"), "message", "")), "oversized body not reported"
        assert listener.spin(10, until=lambda: big.requests >= 6)     # several scrapes
        assert listener.spin(10, until=lambda: listener.messages and not listener.host(
            listener.messages[-1][2], "real").stale)
        rss = psutil.Process(node.pid).memory_info().rss
        assert node.poll() is None, "node died"
    finally:
        leave_graph(listener.node)              # before the node it listens to stops
        stop_process(node)
        big.close()
    status = listener.diagnostics["big"]
    assert "big: body too large: more than the 1048576-byte cap" in status.message
    assert int.from_bytes(status.level, "little") >= 1                 # WARN or ERROR
    assert rss < 200 * 2**20, f"RSS {rss / 2**20:.0f} MiB"             # 7 MB bodies: 478 MiB


def test_stops_promptly_while_an_exporter_accepts_and_never_answers(ros_env, tmp_path,
                                                                     listener):
    """The hang once seen at Ctrl-C: a scrape waiting on an exporter that never answers must
    not hold the shutdown. Here each scrape waits 4.5 s; the node must still stop in order
    (exit code 0, 'shutting down' logged) well before launch's 15 s SIGKILL."""
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)  # the kernel accepts; no reply
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/metrics"
    params = _params(tmp_path, ["silent"], [url], poll={"rate_hz": 0.2, "timeout_s": 4.5})
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        node = subprocess.Popen(
            [str(executable("host_telemetry")), "--ros-args", "-r", "__ns:=/rack_ht",
             "--params-file", params], env=ros_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert listener.spin(60, until=lambda: "timeout" in getattr(
            listener.diagnostics.get("silent"), "message", "")), "timeout never reported"
        assert node.poll() is None, "node died"
        leave_graph(listener.node)
        node.send_signal(signal.SIGINT)      # a new scrape of the silent host is under way
        code = node.wait(timeout=12.0)       # generous: launch kills after 15 s
    finally:
        leave_graph(listener.node)              # before the node it listens to stops
        stop_process(node)
        silent.close()
    text = log.read_text()
    assert code == 0, text
    assert "shutting down (SIGINT)" in text, text
