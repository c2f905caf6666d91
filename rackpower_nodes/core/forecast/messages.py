"""Numbers from rackpower's messages, read through their attributes (no rclpy import).

The live predictor and the rosbag2 reader take the same numbers from the same messages with
these helpers, rclpy or rosbags objects alike: :func:`stamp_unix` (a header stamp),
:func:`samples_power` and :func:`sample_times` (a ``PowerSamples`` batch in W),
:func:`metrics_vector` (a ``HostMetrics`` as :data:`~.series.TELEMETRY`), and
:class:`SequenceCheck`, which says whether a batch continues the previous one or starts a new
segment.
"""

from __future__ import annotations

import numpy as np

from rackpower_nodes.core.forecast.series import TELEMETRY, DatasetError

__all__ = [
    "SequenceCheck", "lost_frames_tolerance_s", "metrics_vector", "sample_times",
    "samples_power", "stamp_unix",
]


def stamp_unix(stamp) -> float:
    """A ``builtin_interfaces/Time`` (``sec``, ``nanosec``) as Unix seconds."""
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def sample_times(t0_unix: float, period_s: float, n: int) -> np.ndarray:
    """(n,) times (Unix s) of the samples of one batch: ``t0 + i * period``."""
    return float(t0_unix) + np.arange(n, dtype=np.float64) * float(period_s)


def samples_power(msg) -> tuple[float, float, list[str], np.ndarray]:
    """``(t0_unix, sample_period_s, channel_ids, power_w)`` of a ``rackpower/msg/PowerSamples``:
    power (channels, samples) float64 = current_a (channel-major) * the channel's voltage_v."""
    ids, n = list(msg.channel_ids), int(msg.sample_count)
    current = np.asarray(msg.current_a, dtype=np.float64)
    volts = np.asarray(msg.voltage_v, dtype=np.float64)
    if current.size != len(ids) * n or volts.size != len(ids):
        raise DatasetError(f"PowerSamples: {current.size} currents and {volts.size} voltages for "
                           f"{len(ids)} channels x {n} samples")
    power = current.reshape(len(ids), n) * volts[:, None]
    return stamp_unix(msg.header.stamp), float(msg.sample_period_s), ids, power


def metrics_vector(host) -> np.ndarray:
    """(6,) float64 :data:`TELEMETRY` from a ``rackpower/msg/HostMetrics`` (rclpy or rosbags
    object); all NaN when the host is stale."""
    if getattr(host, "stale", False):
        return np.full(len(TELEMETRY), np.nan)
    return np.array([host.cpu_util, host.mem_used_fraction, host.net_rx_bps, host.net_tx_bps,
                     host.disk_read_bps, host.disk_write_bps], dtype=np.float64)


def lost_frames_tolerance_s(step_s: float) -> float:
    """Frames lost for less than half a model step leave the step mean usable, s."""
    return 0.5 * step_s


class SequenceCheck:
    """Says whether a PowerSamples batch follows the previous one closely enough.

    A loss shorter than ``tolerance_s`` (a few corrupt frames inside one model step, whose
    step mean the rest of the step still gives) is not a break; a longer one is, and so is a
    sequence that goes back (a restarted sensor node or board).
    """

    def __init__(self, tolerance_s: float = 0.0) -> None:
        self.expected: int | None = None
        self.tolerance_s = float(tolerance_s)

    def is_break(self, first_sequence: int, sample_count: int, frames_lost: int = 0,
                 sample_period_s: float = 0.0) -> bool:
        """True when more than ``tolerance_s`` of frames were lost before this batch, or
        ``first_sequence`` went back."""
        jump = 0 if self.expected is None else int(first_sequence) - self.expected
        missing = max(int(frames_lost), jump)
        brk = jump < 0 or (missing > 0 and missing * sample_period_s >= self.tolerance_s)
        self.expected = int(first_sequence) + int(sample_count)
        return brk

