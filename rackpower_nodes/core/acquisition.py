"""From serial bytes to published batches: the pure part of the `current_sensor` node.

`Acquisition.ingest()` takes the bytes of one serial read and the host time of that read, decodes
frames, keeps the board clock mapped to host time, and cuts the frame stream into batches of
consecutive frames (one batch per publish period, cut early at a sequence gap so that
`stamp + i * sample_period` stays true for every sample). Each batch is converted to amperes and
watts per component and appended to the ring buffer of the last seconds.

Not thread-safe by itself: one thread (the serial reader) calls `ingest` and `flush`; other
threads only read `stats()` snapshots and the ring buffer, which locks on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rackpower_nodes.core.clock_sync import BoardClock
from rackpower_nodes.core.conversion import ChannelConverter
from rackpower_nodes.core.frame_codec import DecodedFrames, FrameDecoder, FrameLayout
from rackpower_nodes.core.ring_buffer import SampleRing
from rackpower_nodes.core.sensor_config import SensorConfig

_SEQ_MOD = 1 << 16


@dataclass(frozen=True)
class SampleBatch:
    """Consecutive frames converted to per-component current and power.

    Arrays are channel-major: `current_a[c, i]` is sample i of component c, amperes.
    """

    stamp_ns: int              # host time of the first sample, ns since the epoch; after the
                               # previous batch's last sample (BoardClock.run_host_ns)
    sample_period_s: float     # s between consecutive samples
    first_sequence: int        # unwrapped board frame counter of the first sample
    first_board_time_us: int   # board clock of the first sample, µs
    components: tuple[str, ...]
    current_a: np.ndarray      # (components, samples) float32, A
    voltage_v: np.ndarray      # (components,) float32, V
    mean_power_w: np.ndarray   # (components,) float32, W
    peak_power_w: np.ndarray   # (components,) float32, W
    frames_lost: int           # frames missing since the previous batch
    received_ns: int           # host time at which the newest frame of the batch was read

    @property
    def sample_count(self) -> int:
        return int(self.current_a.shape[1])


@dataclass(frozen=True)
class AcquisitionStats:
    """Counters since start, for diagnostics."""

    frames: int
    crc_errors: int
    header_errors: int
    bytes_discarded: int
    sequence_gaps: int
    frames_lost: int
    board_restarts: int
    batches: int
    last_frame_host_ns: int | None
    clock_offset_ns: float
    clock_drift_ppm: float
    voltage_source: str


class Acquisition:
    """Decoder, board clock, conversion, batching and ring buffer for one sensor board."""

    def __init__(self, config: SensorConfig):
        self.config = config
        self._decoder = FrameDecoder(FrameLayout(config.board_channels, config.sample_format))
        self._clock = BoardClock()
        self._converter = ChannelConverter(config)
        capacity = max(1, int(round(config.buffer_seconds * config.frame_rate_hz)))
        self.ring = SampleRing(len(config.channels), capacity)
        self._frames_per_batch = max(1, int(round(config.frame_rate_hz / config.publish_rate_hz)))
        self._pending: list[DecodedFrames] = []
        self._pending_count = 0
        self._last_seq: int | None = None
        self._next_unwrapped = 0
        self._pending_first_unwrapped = 0
        self._last_ts = 0
        self._lost_since_batch = 0
        self._batches = 0
        self._last_frame_host_ns: int | None = None

    @property
    def frames_per_batch(self) -> int:
        return self._frames_per_batch

    def ingest(self, data: bytes, host_ns: int) -> list[SampleBatch]:
        """Decode the bytes of one read made at `host_ns`; return the batches they complete."""
        frames = self._decoder.feed(data)
        if len(frames) == 0:
            return []
        self._last_frame_host_ns = host_ns
        self._clock.observe(int(frames.timestamp_us[-1]), host_ns)
        seq = frames.sequence.astype(np.int64)
        ts = frames.timestamp_us.astype(np.int64)
        if self._last_seq is None:
            self._next_unwrapped = int(seq[0])
            self._last_seq, self._last_ts = int(seq[0]) - 1, int(ts[0]) - 1
        steps = np.diff(seq, prepend=self._last_seq) % _SEQ_MOD
        restarted = np.diff(ts, prepend=self._last_ts) <= 0
        self._last_seq, self._last_ts = int(seq[-1]), int(ts[-1])
        batches: list[SampleBatch] = []
        breaks = np.flatnonzero((steps != 1) | restarted).tolist()
        bounds = [0, *breaks, len(frames)]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi <= lo:
                continue
            if lo in breaks:  # a gap or a board restart before this run: close the batch
                batches.extend(self._cut(host_ns))
                if not restarted[lo]:
                    self._lost_since_batch += int(steps[lo]) - 1
                    self._next_unwrapped += int(steps[lo]) - 1
            batches.extend(self._append(_slice(frames, lo, hi), host_ns))
        return batches

    def flush(self, host_ns: int) -> SampleBatch | None:
        """Emit the partial batch (e.g. when the port is lost), if any."""
        out = self._cut(host_ns)
        return out[0] if out else None

    def port_reset(self) -> None:
        """Forget a partial frame after the link was re-opened (sequence tracking is kept)."""
        self._decoder.reset()

    def stats(self) -> AcquisitionStats:
        dec = self._decoder.stats
        return AcquisitionStats(
            frames=dec.frames, crc_errors=dec.crc_errors, header_errors=dec.header_errors,
            bytes_discarded=dec.bytes_discarded, sequence_gaps=dec.sequence_gaps,
            frames_lost=dec.frames_lost, board_restarts=dec.board_restarts,
            batches=self._batches, last_frame_host_ns=self._last_frame_host_ns,
            clock_offset_ns=float(self._clock.offset_ns) if self._clock.synced else 0.0,
            clock_drift_ppm=float(self._clock.drift_ppm),
            voltage_source=str(self._converter.voltage_source))

    def _append(self, run: DecodedFrames, host_ns: int) -> list[SampleBatch]:
        """Add a run of consecutive frames to the pending batch; cut full batches."""
        out: list[SampleBatch] = []
        pos = 0
        while pos < len(run):
            if not self._pending:
                self._pending_first_unwrapped = self._next_unwrapped
            take = min(self._frames_per_batch - self._pending_count, len(run) - pos)
            self._pending.append(_slice(run, pos, pos + take))
            self._pending_count += take
            self._next_unwrapped += take
            pos += take
            if self._pending_count >= self._frames_per_batch:
                out.extend(self._cut(host_ns))
        return out

    def _cut(self, host_ns: int) -> list[SampleBatch]:
        if not self._pending:
            return []
        frames = _concat(self._pending)
        first_unwrapped = self._pending_first_unwrapped
        self._pending, self._pending_count = [], 0
        batch = self._convert(frames, first_unwrapped, host_ns)
        self._batches += 1
        return [batch]

    def _convert(self, frames: DecodedFrames, first_unwrapped: int, host_ns: int) -> SampleBatch:
        ts_us = frames.timestamp_us
        n = len(frames)
        if n > 1:
            period_s = float(ts_us[-1] - ts_us[0]) / (n - 1) * 1e-6
        else:
            period_s = 1.0 / self.config.frame_rate_hz
        stamp_ns = self._clock.run_host_ns(int(ts_us[0]), int(ts_us[-1]))  # never backwards
        current = self._converter.currents_a(frames.samples)
        voltage = self._converter.voltages_v(frames.samples)
        power = self._converter.power_w(current, voltage)
        times = stamp_ns + np.round(np.arange(n) * period_s * 1e9).astype(np.int64)
        self.ring.extend(times, current)
        lost, self._lost_since_batch = self._lost_since_batch, 0
        return SampleBatch(
            stamp_ns=stamp_ns, sample_period_s=period_s, first_sequence=first_unwrapped,
            first_board_time_us=int(ts_us[0]), components=self.config.components,
            current_a=current, voltage_v=voltage,
            mean_power_w=power.mean(axis=1).astype(np.float32),
            peak_power_w=power.max(axis=1).astype(np.float32),
            frames_lost=int(lost), received_ns=host_ns)


def _slice(frames: DecodedFrames, lo: int, hi: int) -> DecodedFrames:
    return DecodedFrames(frames.sequence[lo:hi], frames.timestamp_us[lo:hi], frames.samples[lo:hi])


def _concat(parts: list[DecodedFrames]) -> DecodedFrames:
    if len(parts) == 1:
        return parts[0]
    return DecodedFrames(
        np.concatenate([p.sequence for p in parts]),
        np.concatenate([p.timestamp_us for p in parts]),
        np.concatenate([p.samples for p in parts]))
