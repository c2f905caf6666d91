"""Streaming decoder of sensor-board frames: resynchronisation, batches and continuity.

`FrameDecoder` takes bytes split anywhere and returns the `DecodedFrames` they complete,
counting CRC and header errors, skipped bytes, sequence gaps, board restarts and duplicates in
`DecoderStats`. Pure module (numpy and the standard library only); no rclpy.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from rackpower_nodes.core.frame_codec.wire import (
    CRC_SIZE, HEADER_SIZE, SEQ_MOD, SYNC, FrameError, FrameLayout, crc16)

_log = logging.getLogger(__name__)

_BATCH_ROWS = 256          # frames verified per vectorised step (bounds re-work after an error)
_PERIOD_HISTORY = 64       # timestamp deltas kept for the frame-period estimate


def _partial_prefix_len(buf: bytes, pos: int, prefix: bytes) -> int:
    """Length of the longest proper start of ``prefix`` that ``buf[pos:]`` ends with."""
    for k in range(min(len(prefix) - 1, len(buf) - pos), 0, -1):
        if buf.endswith(prefix[:k]):
            return k
    return 0


@dataclass
class DecodedFrames:
    """Frames decoded from a stream: ``sequence`` (n,) uint16, ``timestamp_us`` (n,) uint64
    board µs, ``samples`` (n, channels) int32 raw ADC counts."""

    sequence: np.ndarray
    timestamp_us: np.ndarray
    samples: np.ndarray

    def __len__(self) -> int:
        return int(self.sequence.shape[0])

    @classmethod
    def empty(cls, channels: int) -> DecodedFrames:
        """No frames, with correctly shaped and typed arrays."""
        return cls(np.empty(0, np.uint16), np.empty(0, np.uint64),
                   np.empty((0, channels), np.int32))

    @classmethod
    def concat(cls, parts: list[DecodedFrames], channels: int) -> DecodedFrames:
        """Concatenate ``parts`` in order (empty result for an empty list)."""
        if not parts:
            return cls.empty(channels)
        if len(parts) == 1:
            return parts[0]
        return cls(np.concatenate([p.sequence for p in parts]),
                   np.concatenate([p.timestamp_us for p in parts]),
                   np.concatenate([p.samples for p in parts]))


@dataclass
class DecoderStats:
    """Counters of a :class:`FrameDecoder` since construction (never reset)."""

    frames: int = 0           # frames accepted and returned
    crc_errors: int = 0       # candidates with a valid header whose CRC failed
    header_errors: int = 0    # sync found but version/flags/channel count not the layout's
    bytes_discarded: int = 0  # bytes skipped while resynchronising
    sequence_gaps: int = 0    # gap events between consecutive accepted frames
    frames_lost: int = 0      # frames missing according to the sequence numbers (and clock)
    board_restarts: int = 0   # board timestamp went backwards; no gap counted
    duplicates: int = 0       # repeated frame (same sequence, clock not advanced); dropped


@dataclass
class _Cursor:
    """Continuity state between accepted frames (survives :meth:`FrameDecoder.reset`)."""

    seq: int | None = None
    ts: int | None = None
    deltas: deque = field(default_factory=lambda: deque(maxlen=_PERIOD_HISTORY))

    def period_us(self) -> float | None:
        """Median of recent timestamp deltas between consecutive frames, µs (None if < 8)."""
        return float(statistics.median(self.deltas)) if len(self.deltas) >= 8 else None


class FrameDecoder:
    """Streaming decoder for one frame layout.

    Bytes may be fed in pieces split anywhere. Complete frames are verified in vectorised
    batches; a candidate with a wrong header or CRC is skipped by advancing *one* byte and
    searching for the next header (sync word, version, flags, channel count), so every intact
    frame after garbage or a damaged frame is still found (barring a 1 in 65536 CRC collision on
    a false candidate). The work per byte is bounded whatever arrives: at most one CRC of one
    frame per candidate header, and a burst of sync words or random bytes is skipped at C
    speed (1 MB of either: milliseconds; benchmarks/bench_inputs.py).

    Continuity: ``lost = (seq - last_seq - 1) mod 65536`` between consecutive accepted frames.
    When the board clock advanced by more than 65536 frame periods (period = median of recent
    deltas between consecutive frames), the multiple of 65536 is taken from the clock. A
    timestamp that goes backwards counts a board restart and no gap. A frame repeating the last
    sequence number without the clock advancing by half a period is a duplicate: counted in
    ``duplicates`` and not returned.

    ``max_buffer_bytes`` bounds the internal buffer (>= 2 frames): large feeds are processed in
    slices of that size, and at most one partial frame (< ``frame_size`` bytes) is carried between
    calls, so no buffered byte ever has to be dropped for space.
    """

    def __init__(self, layout: FrameLayout, max_buffer_bytes: int = 1 << 20):
        if not isinstance(layout, FrameLayout):
            raise FrameError(f"layout: expected FrameLayout, got {type(layout).__name__}")
        if max_buffer_bytes < 2 * layout.frame_size:
            raise FrameError(f"max_buffer_bytes: {max_buffer_bytes} < two frames "
                             f"({2 * layout.frame_size} bytes)")
        self._layout = layout
        self._max_buffer = int(max_buffer_bytes)
        self._prefix = layout.header_prefix
        self._prefix_arr = np.frombuffer(self._prefix, dtype=np.uint8)
        self._pending = b""
        self._stats = DecoderStats()
        self._cursor = _Cursor()

    @property
    def layout(self) -> FrameLayout:
        """The layout this decoder accepts."""
        return self._layout

    @property
    def stats(self) -> DecoderStats:
        """A snapshot copy of the counters (later feeds do not change it)."""
        return dataclasses.replace(self._stats)

    @property
    def pending_bytes(self) -> int:
        """Bytes held back as the start of an incomplete frame (< ``frame_size``)."""
        return len(self._pending)

    def reset(self) -> None:
        """Drop the partial frame (after a reconnect), counting it in ``bytes_discarded``.

        The last sequence number and timestamp are kept, so frames lost while disconnected
        show up as a gap at the next accepted frame.
        """
        self._stats.bytes_discarded += len(self._pending)
        self._pending = b""

    def feed(self, data: bytes | bytearray | memoryview) -> DecodedFrames:
        """Consume ``data``; return the frames it completed, in stream order."""
        view = memoryview(data).cast("B")
        step = self._max_buffer - (self._layout.frame_size - 1)
        parts: list[DecodedFrames] = []
        for start in range(0, len(view), step):
            buf = self._pending + bytes(view[start:start + step])
            self._pending = buf[self._scan(buf, parts):]
        return DecodedFrames.concat(parts, self._layout.channels)

    def _skip(self, buf: bytes, start: int, end: int) -> None:
        """Discard ``buf[start:end]``; every sync word in it began a wrong header."""
        self._stats.bytes_discarded += end - start
        self._stats.header_errors += buf.count(SYNC, start, end)   # A5 5A cannot overlap

    def _scan(self, buf: bytes, parts: list[DecodedFrames]) -> int:
        """Decode what ``buf`` holds; return the offset where the unconsumed tail starts.

        Bounded work per byte whatever the garbage: candidates are found by searching for the
        whole 6-byte header prefix (C speed, also through bursts of sync words), and each one
        costs one CRC of one frame before any vectorised batch is tried.
        """
        size, total, pos = self._layout.frame_size, len(buf), 0
        while True:
            found = buf.find(self._prefix, pos)
            if found < 0:
                keep = _partial_prefix_len(buf, pos, self._prefix)
                self._skip(buf, pos, total - keep)
                return total - keep
            self._skip(buf, pos, found)
            pos = found
            if total - pos < size:
                return pos                      # the start of a frame: wait for the rest
            good, problem = (self._verify(buf, pos, min((total - pos) // size, _BATCH_ROWS))
                             if self._first_crc_ok(buf, pos) else (0, "crc"))
            if good:
                parts.append(self._accept(buf, pos, good))
                pos += good * size
            if problem != "crc":                # None, or a wrong header counted by _skip
                continue
            self._stats.crc_errors += 1
            _log.debug("rejected frame candidate at stream offset %d", pos)
            self._stats.bytes_discarded += 1
            pos += 1

    def _first_crc_ok(self, buf: bytes, pos: int) -> bool:
        """Whether the CRC of the one frame at ``pos`` matches (the header already does)."""
        end = pos + self._layout.frame_size
        return crc16(memoryview(buf)[pos + 2:end - CRC_SIZE]) == int.from_bytes(
            buf[end - CRC_SIZE:end], "little")

    def _verify(self, buf: bytes, pos: int, rows: int) -> tuple[int, str | None]:
        """Check ``rows`` back-to-back candidates at ``pos``.

        Returns the number of leading valid frames and why the next one is invalid
        (``"header"``, ``"crc"``, ``"nosync"``), or None when all are valid.
        """
        size = self._layout.frame_size
        crc_at = size - CRC_SIZE
        block = np.frombuffer(buf, dtype=np.uint8, count=rows * size, offset=pos)
        block = block.reshape(rows, size)
        header_ok = (block[:, :len(self._prefix)] == self._prefix_arr).all(axis=1)
        valid = rows if header_ok.all() else int(np.argmin(header_ok))
        stored = block[:valid, crc_at].astype(np.uint16)
        stored |= block[:valid, crc_at + 1].astype(np.uint16) << 8
        raw = memoryview(buf)
        starts = range(pos + 2, pos + 2 + valid * size, size)
        computed = np.fromiter((crc16(raw[s:s + crc_at - 2]) for s in starts),
                               dtype=np.uint16, count=valid)
        bad = np.flatnonzero(computed != stored)
        if bad.size:
            return int(bad[0]), "crc"
        if valid == rows:
            return rows, None
        has_sync = block[valid, 0] == SYNC[0] and block[valid, 1] == SYNC[1]
        return valid, "header" if has_sync else "nosync"

    def _accept(self, buf: bytes, pos: int, count: int) -> DecodedFrames:
        """Parse ``count`` verified frames at ``pos`` and apply continuity accounting."""
        lay, size = self._layout, self._layout.frame_size
        seq = np.ndarray((count,), "<u2", buf, pos + 6, (size,)).astype(np.uint16)
        stamps = np.ndarray((count,), "<u8", buf, pos + 8, (size,)).astype(np.uint64)
        samples = np.ndarray((count, lay.channels), lay.sample_dtype, buf, pos + HEADER_SIZE,
                             (size, lay.sample_bytes)).astype(np.int32)
        keep = self._account(seq, stamps)
        if keep is not None and not keep.all():
            seq, stamps, samples = seq[keep], stamps[keep], samples[keep]
        self._stats.frames += int(seq.shape[0])
        return DecodedFrames(seq, stamps, samples)

    def _account(self, seq: np.ndarray, stamps: np.ndarray) -> np.ndarray | None:
        """Update gap statistics; return a keep-mask, or None when every frame is kept."""
        cur = self._cursor
        if cur.seq is not None:
            seq64 = seq.astype(np.int64)
            prev_seq = np.concatenate(([cur.seq], seq64[:-1]))
            prev_ts = np.concatenate((np.array([cur.ts], dtype=np.uint64), stamps[:-1]))
            delta = (stamps - prev_ts).view(np.int64)
            if not ((seq64 - prev_seq - 1) % SEQ_MOD).any() and (delta > 0).all():
                cur.deltas.extend(delta[-_PERIOD_HISTORY:].tolist())
                cur.seq, cur.ts = int(seq64[-1]), int(stamps[-1])
                return None
        return self._account_each(seq.tolist(), stamps.tolist())

    def _account_each(self, seqs: list[int], stamps: list[int]) -> np.ndarray:
        keep = np.ones(len(seqs), dtype=bool)
        cur, st = self._cursor, self._stats
        for i, (seq, stamp) in enumerate(zip(seqs, stamps, strict=True)):
            if cur.seq is not None:
                delta = stamp - cur.ts
                if delta < 0:
                    st.board_restarts += 1
                    _log.info("board clock went back %d us: board restart", -delta)
                else:
                    lost = self._lost_before(seq, delta)
                    if lost < 0:
                        st.duplicates += 1
                        keep[i] = False
                        continue
                    if lost:
                        st.sequence_gaps += 1
                        st.frames_lost += lost
                    elif delta > 0:
                        cur.deltas.append(delta)
            cur.seq, cur.ts = seq, stamp
        return keep

    def _lost_before(self, seq: int, delta_us: int) -> int:
        """Frames missing before ``seq`` (clock advanced ``delta_us``); -1 for a duplicate."""
        cur = self._cursor
        lost = (seq - cur.seq - 1) % SEQ_MOD
        period = cur.period_us()
        if lost == SEQ_MOD - 1 and (delta_us == 0 or (period and delta_us < period / 2)):
            return -1
        if period and delta_us > SEQ_MOD * period:
            estimate = delta_us / period - 1
            lost += SEQ_MOD * round((estimate - lost) / SEQ_MOD)
        return lost
