"""Sensor-board frame protocol v1: vectorised encoder and streaming decoder.

One frame carries every ADC channel of one sampling instant (see ``docs/serial-protocol.md``)::

    A5 5A | version u8 | flags u8 | channels u16 | sequence u16 | timestamp_us u64 |
    samples (int16 or int32) x channels | CRC-16/CCITT-FALSE u16

All multi-byte fields are little-endian. Samples are raw ADC counts; timestamps are microseconds
of the board's clock. The CRC covers everything between the sync word and the CRC itself.

Pure module (numpy and the standard library only); no rclpy.
"""

from __future__ import annotations

import binascii
import dataclasses
import logging
import statistics
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CRC_SIZE",
    "HEADER_SIZE",
    "MAX_CHANNELS",
    "SYNC",
    "VERSION",
    "DecodedFrames",
    "DecoderStats",
    "FrameDecoder",
    "FrameError",
    "FrameLayout",
    "crc16",
    "encode_frames",
]

_log = logging.getLogger(__name__)

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER_SIZE = 16
CRC_SIZE = 2
MAX_CHANNELS = 1024
SEQ_MOD = 1 << 16
_FLAG_INT32 = 0x01
_FORMATS = {"int16": (2, np.dtype("<i2")), "int32": (4, np.dtype("<i4"))}
_BATCH_ROWS = 256          # frames verified per vectorised step (bounds re-work after an error)
_PERIOD_HISTORY = 64       # timestamp deltas kept for the frame-period estimate


class FrameError(ValueError):
    """Misuse of the codec: invalid layout, wrong array shapes or out-of-range values."""


def _partial_prefix_len(buf: bytes, pos: int, prefix: bytes) -> int:
    """Length of the longest proper start of ``prefix`` that ``buf[pos:]`` ends with."""
    for k in range(min(len(prefix) - 1, len(buf) - pos), 0, -1):
        if buf.endswith(prefix[:k]):
            return k
    return 0


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0) of ``data``."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True)
class FrameLayout:
    """Channel count (1..1024) and sample format (``"int16"`` or ``"int32"``) of a frame."""

    channels: int
    sample_format: str = "int16"

    def __post_init__(self) -> None:
        if isinstance(self.channels, bool) or not isinstance(self.channels, (int, np.integer)):
            raise FrameError(f"channels: {self.channels!r} is not an integer")
        if not 1 <= self.channels <= MAX_CHANNELS:
            raise FrameError(f"channels: {self.channels} outside 1..{MAX_CHANNELS}")
        if self.sample_format not in _FORMATS:
            raise FrameError(f"sample_format: {self.sample_format!r} is not 'int16' or 'int32'")

    @property
    def sample_bytes(self) -> int:
        """Bytes per sample: 2 (int16) or 4 (int32)."""
        return _FORMATS[self.sample_format][0]

    @property
    def sample_dtype(self) -> np.dtype:
        """Little-endian numpy dtype of one sample on the wire."""
        return _FORMATS[self.sample_format][1]

    @property
    def payload_size(self) -> int:
        """Bytes of samples in one frame (channels x sample_bytes)."""
        return self.channels * self.sample_bytes

    @property
    def frame_size(self) -> int:
        """Total bytes of one frame: header + samples + CRC."""
        return HEADER_SIZE + self.payload_size + CRC_SIZE

    @property
    def flags(self) -> int:
        """The flags byte this layout sends (bit 0 = int32 samples, other bits 0)."""
        return _FLAG_INT32 if self.sample_format == "int32" else 0

    @property
    def header_prefix(self) -> bytes:
        """The six constant leading bytes: sync, version, flags, channel count."""
        return SYNC + bytes((VERSION, self.flags)) + self.channels.to_bytes(2, "little")


def _as_int_array(name: str, values, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except (OverflowError, ValueError) as exc:
        raise FrameError(f"{name}: not convertible to an integer array ({exc})") from exc
    if arr.size == 0 and arr.shape == shape:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iu" or arr.shape != shape:
        raise FrameError(f"{name}: expected integer array of shape {shape}, "
                         f"got {arr.dtype} {arr.shape}")
    return arr


def _checked_timestamps(timestamp_us, n: int) -> np.ndarray:
    ts = _as_int_array("timestamp_us", timestamp_us, (n,))
    if ts.dtype.kind == "i" and n and ts.min() < 0:
        raise FrameError(f"timestamp_us: negative value {int(ts.min())}")
    return ts.astype("<u8")


def _checked_samples(layout: FrameLayout, samples, n: int) -> np.ndarray:
    arr = _as_int_array("samples", samples, (n, layout.channels))
    info = np.iinfo(layout.sample_dtype)
    if n and (arr.min() < info.min or arr.max() > info.max):
        raise FrameError(f"samples: values {int(arr.min())}..{int(arr.max())} outside the "
                         f"{layout.sample_format} range {info.min}..{info.max}")
    return arr.astype(layout.sample_dtype)


def encode_frames(layout: FrameLayout, sequence, timestamp_us, samples) -> bytes:
    """Encode ``n`` frames back to back.

    ``sequence``: (n,) integers, taken modulo 65536. ``timestamp_us``: (n,) board time in µs,
    0..2**64-1. ``samples``: (n, channels) ADC counts within the layout's sample range.
    Raises :class:`FrameError` on wrong shapes, non-integer input or out-of-range values.
    """
    if np.ndim(sequence) != 1:
        raise FrameError(f"sequence: expected a 1-D array, got shape {np.shape(sequence)}")
    seq = _as_int_array("sequence", sequence, np.shape(sequence))
    n = seq.shape[0]
    ts = _checked_timestamps(timestamp_us, n)
    counts = _checked_samples(layout, samples, n)
    size, end = layout.frame_size, HEADER_SIZE + layout.payload_size
    out = np.empty((n, size), dtype=np.uint8)
    out[:, :6] = np.frombuffer(layout.header_prefix, dtype=np.uint8)
    out[:, 6:8] = (seq.astype(np.int64) % SEQ_MOD).astype("<u2").view(np.uint8).reshape(n, 2)
    out[:, 8:16] = ts.view(np.uint8).reshape(n, 8)
    out[:, HEADER_SIZE:end] = counts.view(np.uint8).reshape(n, layout.payload_size)
    raw = memoryview(out.reshape(-1))
    crcs = np.fromiter((crc16(raw[i * size + 2:i * size + end]) for i in range(n)),
                       dtype="<u2", count=n)
    out[:, end:] = crcs.view(np.uint8).reshape(n, 2)
    return out.tobytes()


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
