"""Sensor-board frame protocol v1: vectorised encoder and streaming decoder.

One frame carries every ADC channel of one sampling instant (see ``docs/serial-protocol.md``)::

    A5 5A | version u8 | flags u8 | channels u16 | sequence u16 | timestamp_us u64 |
    samples (int16 or int32) x channels | CRC-16/CCITT-FALSE u16

All multi-byte fields are little-endian. Samples are raw ADC counts; timestamps are microseconds
of the board's clock. The CRC covers everything between the sync word and the CRC itself.

Pure module (numpy and the standard library only); no rclpy.

The parts: `wire` (the frame layout, CRC and encoder) and `decoder` (the streaming decoder and
its statistics). This package re-exports their public names.
"""

from rackpower_nodes.core.frame_codec.decoder import DecodedFrames, DecoderStats, FrameDecoder
from rackpower_nodes.core.frame_codec.wire import (
    CRC_SIZE, HEADER_SIZE, MAX_CHANNELS, SYNC, VERSION, FrameError, FrameLayout, crc16,
    encode_frames)

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
