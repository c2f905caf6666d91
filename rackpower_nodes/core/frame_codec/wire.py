"""Sensor-board frame protocol v1 on the wire: the frame layout, its CRC and the encoder.

One frame carries every ADC channel of one sampling instant (see ``docs/serial-protocol.md``)::

    A5 5A | version u8 | flags u8 | channels u16 | sequence u16 | timestamp_us u64 |
    samples (int16 or int32) x channels | CRC-16/CCITT-FALSE u16

All multi-byte fields are little-endian. Samples are raw ADC counts; timestamps are microseconds
of the board's clock. The CRC covers everything between the sync word and the CRC itself.

Pure module (numpy and the standard library only); no rclpy.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import numpy as np

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER_SIZE = 16
CRC_SIZE = 2
MAX_CHANNELS = 1024
SEQ_MOD = 1 << 16
_FLAG_INT32 = 0x01
_FORMATS = {"int16": (2, np.dtype("<i2")), "int32": (4, np.dtype("<i4"))}


class FrameError(ValueError):
    """Misuse of the codec: invalid layout, wrong array shapes or out-of-range values."""


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
