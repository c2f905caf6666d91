"""What the recorder tests share: a source publishing the rack's topics with reliable
publishers (every message must arrive), the `recorder` executable started in its own process,
and readers of the bags it writes (rosbags' AnyReader and the `mcap` package's reader).

- `Source`: power_samples batches of a 1 kHz board (CHANNELS, PER_BATCH samples every
  PERIOD_S s), host_telemetry and allocation_error at a tenth of the rate, a latched
  model_update; counts what it sent;
- `publishing`: a `Source` in this process for a block, which leaves the DDS graph at its end;
- `start_recorder`: the executable in a namespace, writing under a folder, logging to a file;
- `bags_in`, `read_bags`, `mcap_counts`: the bags in a folder, and their messages per topic.
"""
from __future__ import annotations

import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from rackpower_nodes.tools.launch_env import executable

__all__ = ["CHANNELS", "PER_BATCH", "PERIOD_S", "Source", "bags_in", "mcap_counts",
           "publishing", "read_bags", "recorder_written", "start_recorder"]

CHANNELS, PER_BATCH, PERIOD_S = ("srv01", "srv02", "sw01"), 10, 0.001


def _samples(k: int, t0: float, pad: int = 0):
    """Batch k of a 1 kHz board: 10 samples per channel, stamped t0 + k * 10 ms."""
    from rackpower.msg import PowerSamples

    msg = PowerSamples()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
        int((t0 + k * PER_BATCH * PERIOD_S) * 1e9), 10**9)
    msg.header.frame_id = "rack" + "x" * pad
    msg.sample_period_s, msg.sample_count = PERIOD_S, PER_BATCH
    msg.first_sequence, msg.first_board_time_us = k * PER_BATCH, k * PER_BATCH * 1000
    msg.channel_ids = list(CHANNELS)
    current = 1.0 + 0.1 * np.sin(k / 7.0 + np.arange(len(CHANNELS) * PER_BATCH))
    msg.current_a = current.astype(np.float32)
    msg.voltage_v = np.full(len(CHANNELS), 230.0, dtype=np.float32)
    power = (current.reshape(len(CHANNELS), PER_BATCH) * 230.0).astype(np.float32)
    msg.mean_power_w, msg.peak_power_w = power.mean(axis=1), power.max(axis=1)
    msg.total_power_w = float(power.mean(axis=1).sum())
    return msg


def _telemetry(t: float):
    from rackpower.msg import HostMetrics, HostTelemetry

    msg = HostTelemetry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(t * 1e9), 10**9)
    msg.hosts = [HostMetrics(host_id=h, up=True, cpu_util=0.5, mem_used_fraction=0.3)
                 for h in CHANNELS[:2]]
    return msg


class Source:
    """Publishes power_samples at `rate_hz`, host_telemetry and allocation_error at a tenth,
    all reliable (keep last 1000), plus one latched model_update; counts what it sent, and
    what the recorder in its namespace reports written (its /diagnostics)."""

    def __init__(self, ns: str, pad: int = 0):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from rackpower.msg import AllocationError, HostTelemetry, ModelUpdate, PowerSamples
        from rackpower_nodes.nodes.common import latched_qos

        self.node = rclpy.create_node("recorder_test_source", namespace=ns)
        # keep last, deep: a keep-all writer stalls on the reader of a killed recorder
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.pubs = {"power_samples": self.node.create_publisher(PowerSamples, "power_samples",
                                                                   qos),
                     "host_telemetry": self.node.create_publisher(HostTelemetry,
                                                                  "host_telemetry", qos),
                     "allocation_error": self.node.create_publisher(AllocationError,
                                                                    "allocation_error", qos),
                     "model_update": self.node.create_publisher(ModelUpdate, "model_update",
                                                                latched_qos())}
        self.pubs["model_update"].publish(ModelUpdate(model_path="/models/v1", version="v1"))
        self.ns, self.pad, self.k, self.t0 = ns, pad, 0, time.time()
        self.sent: Counter = Counter({"model_update": 1})
        self.sent_at: list[float] = []               # send time of power_samples batch k
        self.written: dict[str, int] = {}            # per topic, as the recorder reports it
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)

    def _on_diag(self, msg) -> None:
        recorder_written(msg, self.ns, self.written)

    def wait_written(self, timeout_s: float = 30.0) -> None:
        """Until the recorder's /diagnostics count every message sent as written (its counts
        run from its start; a recorder that lost some never gets there: the assertion names
        the counts)."""
        from helpers.graph import spin_until

        assert spin_until(self.node, lambda: all(
            self.written.get(self.topic(t), 0) >= n for t, n in self.sent.items()), timeout_s), (
            f"the recorder did not report every message written within {timeout_s:g} s: "
            f"sent {dict(self.sent)}, written {self.written}")

    def wait_recorded(self, timeout_s: float = 30.0) -> None:
        """Until the recorder subscribes to every topic."""
        import rclpy

        end = time.monotonic() + timeout_s
        while any(p.get_subscription_count() == 0 for p in self.pubs.values()):
            assert time.monotonic() < end, {t: p.get_subscription_count()
                                            for t, p in self.pubs.items()}
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def run(self, seconds: float, rate_hz: float = 100.0, stop=None) -> None:
        """Publish for `seconds` at `rate_hz`; `stop()` returning True ends it early."""
        import rclpy

        from rackpower.msg import AllocationError

        start, first = time.monotonic(), self.k
        while time.monotonic() - start < seconds and not (stop and stop()):
            time.sleep(max(0.0, start + (self.k - first) / rate_hz - time.monotonic()))
            self.pubs["power_samples"].publish(_samples(self.k, self.t0, self.pad))
            self.sent_at.append(time.time())
            self.sent["power_samples"] += 1
            if self.k % 10 == 0:
                self.pubs["host_telemetry"].publish(   # on the batches' clock
                    _telemetry(self.t0 + self.k * PER_BATCH * PERIOD_S))
                self.pubs["allocation_error"].publish(
                    AllocationError(channel_id="srv01", mode="proactive", actual_w=float(self.k)))
                self.sent["host_telemetry"] += 1
                self.sent["allocation_error"] += 1
            self.k += 1
            rclpy.spin_once(self.node, timeout_sec=0.0)

    def topic(self, name: str) -> str:
        return f"{self.ns}/{name}"


@contextmanager
def publishing(ns: str, pad: int = 0, ack_timeout_s: float = 30.0):
    """rclpy initialised and a `Source` for the block. Leaving it waits until the recorder
    has acknowledged every message sent (not after an error), destroys the node and shuts
    the context down: this process is out of the DDS graph before the test stops the
    recorder, so a Fast DDS deadlock on the recorder's removal (helpers.graph.watching) can
    only hit the recorder, whose shutdown is bounded, never the test run."""
    import rclpy
    from rclpy.duration import Duration

    with rclpy.init():
        source = Source(ns, pad)
        try:
            yield source
            late = [t for t, p in source.pubs.items()
                    if not p.wait_for_all_acked(Duration(seconds=ack_timeout_s))]
            assert not late, f"not acknowledged within {ack_timeout_s:g} s: {late}"
        finally:
            source.node.destroy_node()


def recorder_written(msg, ns: str, into: dict[str, int]) -> None:
    """Messages written per topic that the recorder in namespace `ns` reports in the
    /diagnostics message `msg`, into `into` (its counts run from its start)."""
    for status in msg.status:
        if status.name.startswith(f"{ns}/recorder"):
            into.update({kv.key.removeprefix("messages "): int(kv.value)
                         for kv in status.values if kv.key.startswith("messages /")})


def start_recorder(ros_env, ns: str, folder: Path, log: Path, **params) -> subprocess.Popen:
    args = [str(executable("recorder")), "--ros-args", "-r", f"__ns:={ns}",
            "-p", f"output.folder:={folder}", "-p", "discovery.interval_s:=0.2"]
    for key, value in params.items():
        args += ["-p", f"{key.replace('__', '.')}:={value}"]
    return subprocess.Popen(args, env=ros_env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)


def bags_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def read_bags(bags: list[Path]) -> tuple[Counter, list[int]]:
    """Messages per topic with AnyReader, and the power_samples batch numbers in bag order."""
    from rosbags.highlevel import AnyReader

    from rackpower_nodes.sources.bags import message_typestore

    counts, batches = Counter(), []
    with AnyReader(bags, default_typestore=message_typestore()) as reader:
        for conn, _, raw in reader.messages():
            counts[conn.topic] += 1
            if conn.msgtype == "rackpower/msg/PowerSamples":
                batches.append(reader.deserialize(raw, conn.msgtype).first_sequence // PER_BATCH)
    return counts, batches


def mcap_counts(bags: list[Path]) -> Counter:
    """Messages per topic with the `mcap` package's reader (through each file's summary)."""
    from mcap.reader import make_reader

    counts = Counter()
    for bag in bags:
        (path,) = bag.glob("*.mcap")
        with path.open("rb") as fh:
            reader = make_reader(fh)
            assert reader.get_summary() is not None, f"{path} has no summary"
            for _, channel, _ in reader.iter_messages():
                counts[channel.topic] += 1
    return counts

