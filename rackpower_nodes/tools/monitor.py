"""A subscriber that watches `power_samples` and `/diagnostics`: for the demo and benchmarks.

It checks the stream the way a consumer sees it: batches arrive, their board sequence numbers
join up, and how long after its newest sample each batch arrived (when the board clock is the
wall clock, as the emulator's `--wall-clock` makes it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from rackpower.msg import PowerSamples
from rackpower_nodes.nodes.common import samples_qos


@dataclass
class StreamStats:
    """What a subscriber saw of the samples stream."""

    messages: int = 0
    samples: int = 0                     # per channel
    sequence_breaks: int = 0             # batches whose first_sequence did not follow the last
    frames_missing: int = 0              # frames skipped between consecutive batches
    frames_lost_reported: int = 0        # sum of the frames_lost fields
    latencies_s: list[float] = field(default_factory=list)
    power_sum_w: dict[str, float] = field(default_factory=dict)
    first_receive_s: float | None = None
    last_receive_s: float | None = None
    next_sequence: int | None = None

    def mean_power_w(self) -> dict[str, float]:
        return {k: v / max(self.messages, 1) for k, v in self.power_sum_w.items()}

    def latency_percentiles_ms(self, *pcts: float) -> list[float]:
        if not self.latencies_s:
            return [float("nan")] * len(pcts)
        return [float(np.percentile(self.latencies_s, p) * 1e3) for p in pcts]


class SampleMonitor(Node):
    """Subscribes to `<namespace>/power_samples` and `/diagnostics`."""

    def __init__(self, namespace: str, deadline_s: float = 0.25):
        super().__init__("rackpower_monitor", namespace=namespace)
        self.stats = StreamStats()
        self.diagnostics: dict[str, str] = {}
        self.create_subscription(
            PowerSamples, "power_samples", self._on_samples, samples_qos(deadline_s))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def reset(self) -> None:
        self.stats = StreamStats()

    def _on_samples(self, msg: PowerSamples) -> None:
        now = time.time()
        s = self.stats
        newest_us = msg.first_board_time_us + (msg.sample_count - 1) * msg.sample_period_s * 1e6
        s.latencies_s.append(now - newest_us * 1e-6)
        if s.next_sequence is not None and msg.first_sequence != s.next_sequence:
            s.sequence_breaks += 1
            s.frames_missing += max(0, msg.first_sequence - s.next_sequence)
        s.next_sequence = msg.first_sequence + msg.sample_count
        s.messages += 1
        s.samples += msg.sample_count
        s.frames_lost_reported += msg.frames_lost
        for cid, p in zip(msg.channel_ids, msg.mean_power_w):
            s.power_sum_w[cid] = s.power_sum_w.get(cid, 0.0) + float(p)
        s.first_receive_s = s.first_receive_s or now
        s.last_receive_s = now

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": sensor board"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics["_level"] = str(int.from_bytes(status.level, "little"))
                self.diagnostics["_message"] = status.message
