"""Tests of the sensor-board frame codec (protocol v1): encoding, streaming decode, resync,
continuity accounting and a seeded fuzz run against ground truth."""

import binascii

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rackpower_nodes.core.frame_codec import (
    CRC_SIZE,
    HEADER_SIZE,
    SYNC,
    DecodedFrames,
    FrameDecoder,
    FrameError,
    FrameLayout,
    crc16,
    encode_frames,
)

PERIOD_US = 1000


def make_frames(layout, n, first_seq=0, seed=0, t0=5_000_000):
    """n consecutive frames: (bytes, sequence, timestamps, samples)."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(layout.sample_dtype)
    samples = rng.integers(info.min, info.max, size=(n, layout.channels), endpoint=True)
    seq = (first_seq + np.arange(n)) % 65536
    stamps = t0 + PERIOD_US * np.arange(n, dtype=np.uint64)
    return encode_frames(layout, seq, stamps, samples), seq, stamps, samples


def feed_chunks(decoder, data, sizes):
    parts, pos = [], 0
    for size in sizes:
        parts.append(decoder.feed(data[pos:pos + size]))
        pos += size
    parts.append(decoder.feed(data[pos:]))
    return DecodedFrames.concat(parts, decoder.layout.channels)


def patch_frame(layout, frame, offset, value):
    """Set one byte of an encoded frame and recompute its CRC (so only that field is wrong)."""
    raw = bytearray(frame)
    raw[offset] = value
    raw[-CRC_SIZE:] = crc16(raw[2:-CRC_SIZE]).to_bytes(2, "little")
    return bytes(raw)


@pytest.mark.parametrize("fmt", ["int16", "int32"])
@pytest.mark.parametrize("channels", [1, 3, 64, 1024])
def test_round_trip(fmt, channels):
    layout = FrameLayout(channels, fmt)
    data, seq, stamps, samples = make_frames(layout, 40, seed=channels)
    assert len(data) == 40 * layout.frame_size == 40 * (18 + channels * layout.sample_bytes)
    out = FrameDecoder(layout).feed(data)
    assert len(out) == 40
    assert out.sequence.dtype == np.uint16 and out.timestamp_us.dtype == np.uint64
    assert out.samples.dtype == np.int32 and out.samples.shape == (40, channels)
    np.testing.assert_array_equal(out.sequence, seq)
    np.testing.assert_array_equal(out.timestamp_us, stamps)
    np.testing.assert_array_equal(out.samples, samples)


def test_wire_layout_of_one_frame():
    layout = FrameLayout(2, "int16")
    frame = encode_frames(layout, [0x1234], [0x0102030405060708], [[-2, 300]])
    body = bytes.fromhex("01 00 0200 3412 0807060504030201 feff 2c01")
    assert frame[:2] == SYNC and frame[2:-2] == body
    assert frame[-2:] == binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "little")
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE check value
    assert FrameLayout(3, "int32").flags == 1 and FrameLayout(3).flags == 0


def test_documented_example_frames():
    """The worked examples in docs/serial-protocol.md."""
    frame = encode_frames(FrameLayout(4), [7], [1_000_000], [[100, -100, 0, 32767]])
    assert frame.hex() == "a55a01000400070040420f000000000064009cff0000ff7f5a35"
    frame = encode_frames(FrameLayout(2, "int32"), [65535], [0x0123456789ABCDEF], [[-1, 100000]])
    assert frame.hex() == "a55a01010200ffffefcdab8967452301ffffffffa0860100f2f3"


def test_sequence_taken_modulo_65536_and_empty_encode():
    layout = FrameLayout(1)
    out = FrameDecoder(layout).feed(encode_frames(layout, [65536 + 7, -1], [1, 2], [[0], [0]]))
    assert out.sequence.tolist() == [7, 65535]
    assert encode_frames(layout, [], [], np.zeros((0, 1), int)) == b""


def test_crc_failure_drops_only_that_frame():
    layout = FrameLayout(16)
    data, _, _, samples = make_frames(layout, 5)
    raw = bytearray(data)
    raw[2 * layout.frame_size + HEADER_SIZE + 5] ^= 0x10
    dec = FrameDecoder(layout)
    out = dec.feed(bytes(raw))
    assert out.sequence.tolist() == [0, 1, 3, 4]
    np.testing.assert_array_equal(out.samples, samples[[0, 1, 3, 4]])
    stats = dec.stats
    assert stats.crc_errors == 1 and stats.frames == 4
    assert stats.sequence_gaps == 1 and stats.frames_lost == 1


def test_resync_after_garbage_with_fake_sync_words():
    layout = FrameLayout(8)
    data, seq, _, samples = make_frames(layout, 6)
    size = layout.frame_size
    frames = [data[i * size:(i + 1) * size] for i in range(6)]
    fake_header = layout.header_prefix + b"\x00" * 5
    garbage = [b"\x00\xa5\x5a\xa5", b"\xa5" + SYNC + b"\x07junk" + SYNC, fake_header, b"\xa5"]
    stream = garbage[0] + frames[0] + frames[1] + garbage[1] + frames[2] + garbage[2]
    stream += frames[3] + garbage[3] + frames[4] + frames[5]
    dec = FrameDecoder(layout)
    out = dec.feed(stream)
    np.testing.assert_array_equal(out.sequence, seq)
    np.testing.assert_array_equal(out.samples, samples)
    stats = dec.stats
    assert stats.frames == 6 and stats.frames_lost == 0
    assert stats.header_errors >= 2 and stats.crc_errors == 1
    assert stats.bytes_discarded == sum(len(g) for g in garbage)


def test_byte_by_byte_and_random_chunks_give_same_result():
    layout = FrameLayout(5, "int32")
    data, seq, stamps, samples = make_frames(layout, 30)
    data = b"\x5a\xa5" + data  # also split inside a sync word below
    whole = FrameDecoder(layout).feed(data)
    single = feed_chunks(FrameDecoder(layout), data, [1] * len(data))
    rng = np.random.default_rng(3)
    randomly = feed_chunks(FrameDecoder(layout), data, rng.integers(1, 200, 40).tolist())
    for out in (whole, single, randomly):
        np.testing.assert_array_equal(out.sequence, seq)
        np.testing.assert_array_equal(out.timestamp_us, stamps)
        np.testing.assert_array_equal(out.samples, samples)


def test_partial_frame_is_pending_until_completed():
    layout = FrameLayout(4)
    data, _, _, _ = make_frames(layout, 2)
    dec = FrameDecoder(layout)
    assert len(dec.feed(data[:layout.frame_size + 7])) == 1
    assert dec.pending_bytes == 7
    assert len(dec.feed(data[layout.frame_size + 7:])) == 1 and dec.pending_bytes == 0


def test_sequence_wraparound_is_not_a_gap():
    layout = FrameLayout(2)
    data, _, _, _ = make_frames(layout, 4, first_seq=65534)
    dec = FrameDecoder(layout)
    assert dec.feed(data).sequence.tolist() == [65534, 65535, 0, 1]
    assert dec.stats.sequence_gaps == 0 and dec.stats.frames_lost == 0


def test_gap_across_wrap_and_gap_counting():
    layout = FrameLayout(2)
    zeros = np.zeros((6, 2), int)
    seq = [65534, 65535, 2, 3, 10, 11]
    stamps = [0, 1000, 4000, 5000, 12000, 13000]
    dec = FrameDecoder(layout)
    dec.feed(encode_frames(layout, seq, stamps, zeros))
    assert dec.stats.sequence_gaps == 2 and dec.stats.frames_lost == 2 + 6


def test_gap_longer_than_a_sequence_wrap_uses_the_clock():
    layout = FrameLayout(1)
    n = 20
    seq = list(range(n)) + [(n - 1 + 70_001) % 65536]
    stamps = [PERIOD_US * i for i in range(n)] + [PERIOD_US * (n - 1 + 70_001) + 3]
    dec = FrameDecoder(layout)
    dec.feed(encode_frames(layout, seq, stamps, np.zeros((n + 1, 1), int)))
    assert dec.stats.sequence_gaps == 1 and dec.stats.frames_lost == 70_000


def test_timestamp_backwards_counts_board_restart_not_gap():
    layout = FrameLayout(2)
    dec = FrameDecoder(layout)
    out = dec.feed(encode_frames(layout, [100, 101, 0, 1], [9000, 10000, 20, 1020],
                                 np.zeros((4, 2), int)))
    assert len(out) == 4
    assert dec.stats.board_restarts == 1 and dec.stats.frames_lost == 0


def test_duplicate_frame_is_dropped_not_a_gap():
    layout = FrameLayout(2)
    data, _, _, _ = make_frames(layout, 3)
    size = layout.frame_size
    dec = FrameDecoder(layout)
    out = dec.feed(data[:2 * size] + data[size:2 * size] + data[2 * size:])
    assert out.sequence.tolist() == [0, 1, 2]
    assert dec.stats.duplicates == 1 and dec.stats.frames_lost == 0 and dec.stats.frames == 3


def test_reset_drops_partial_frame_but_keeps_continuity():
    layout = FrameLayout(3)
    data, _, _, _ = make_frames(layout, 10)
    size = layout.frame_size
    dec = FrameDecoder(layout)
    dec.feed(data[:2 * size + 9])
    dec.reset()
    assert dec.pending_bytes == 0 and dec.stats.bytes_discarded == 9
    out = dec.feed(data[6 * size:])
    assert out.sequence.tolist() == [6, 7, 8, 9]
    assert dec.stats.frames_lost == 4 and dec.stats.sequence_gaps == 1


@pytest.mark.parametrize("offset,value", [(3, 0x02), (3, 0x80), (2, 2), (2, 0)])
def test_reserved_flag_bits_and_unknown_version_rejected(offset, value):
    layout = FrameLayout(4)
    data, _, _, _ = make_frames(layout, 3)
    size = layout.frame_size
    bad = patch_frame(layout, data[size:2 * size], offset, value)
    dec = FrameDecoder(layout)
    out = dec.feed(data[:size] + bad + data[2 * size:])
    assert out.sequence.tolist() == [0, 2]
    assert dec.stats.header_errors == 1 and dec.stats.crc_errors == 0


def test_wrong_channel_count_counts_header_errors():
    sent = FrameLayout(8)
    data = encode_frames(sent, np.arange(5), np.arange(5) * 1000, np.zeros((5, 8), int))
    dec = FrameDecoder(FrameLayout(16))
    assert len(dec.feed(data)) == 0
    assert dec.stats.header_errors == 5 and dec.stats.frames == 0


def test_large_feed_is_bounded_by_max_buffer():
    layout = FrameLayout(16)
    data, seq, _, _ = make_frames(layout, 500)
    dec = FrameDecoder(layout, max_buffer_bytes=3 * layout.frame_size + 5)
    out = dec.feed(data + data[:10])
    np.testing.assert_array_equal(out.sequence, seq)
    assert dec.pending_bytes == 10 and dec.stats.bytes_discarded == 0
    with pytest.raises(FrameError, match="max_buffer_bytes"):
        FrameDecoder(layout, max_buffer_bytes=layout.frame_size)


@pytest.mark.parametrize("fmt,bad", [("int16", 32768), ("int16", -32769), ("int32", 2**31)])
def test_encode_out_of_range_sample_raises(fmt, bad):
    layout = FrameLayout(2, fmt)
    with pytest.raises(FrameError, match="range"):
        encode_frames(layout, [0], [0], [[0, bad]])


def test_encode_rejects_bad_shapes_and_timestamps():
    layout = FrameLayout(2)
    with pytest.raises(FrameError, match="samples"):
        encode_frames(layout, [0, 1], [0, 1], np.zeros((2, 3), int))
    with pytest.raises(FrameError, match="samples"):
        encode_frames(layout, [0], [0], [[0.5, 1.0]])
    with pytest.raises(FrameError, match="sequence"):
        encode_frames(layout, 0, [0], [[0, 0]])
    with pytest.raises(FrameError, match="timestamp_us"):
        encode_frames(layout, [0], [0, 1], [[0, 0]])
    with pytest.raises(FrameError, match="timestamp_us"):
        encode_frames(layout, [0], [-1], [[0, 0]])
    with pytest.raises(FrameError, match="timestamp_us"):
        encode_frames(layout, [0], [2**64], [[0, 0]])


@pytest.mark.parametrize("kwargs,text", [
    ({"channels": 0}, "0"), ({"channels": 1025}, "1025"),
    ({"channels": 4, "sample_format": "float"}, "'float'"),
])
def test_invalid_layout_names_value(kwargs, text):
    with pytest.raises(FrameError, match=text):
        FrameLayout(**kwargs)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.sampled_from(["int16", "int32"]),
       st.lists(st.integers(0, 400), max_size=12), st.integers(0, 2**32))
def test_round_trip_with_arbitrary_split_points(channels, fmt, cuts, seed):
    layout = FrameLayout(channels, fmt)
    data, seq, stamps, samples = make_frames(layout, 8, seed=seed)
    points = sorted({min(c, len(data)) for c in cuts})
    sizes = np.diff([0] + points).tolist()
    out = feed_chunks(FrameDecoder(layout), data, sizes)
    np.testing.assert_array_equal(out.sequence, seq)
    np.testing.assert_array_equal(out.timestamp_us, stamps)
    np.testing.assert_array_equal(out.samples, samples)


def build_fuzz_stream(layout, n, rng):
    """Encode n frames and damage some; return the stream and the indices left intact."""
    data, _, _, samples = make_frames(layout, n, seed=11, t0=0)
    size = layout.frame_size
    roll = rng.random((n, 3))
    pieces, intact = [], []
    for i in range(n):
        frame = data[i * size:(i + 1) * size]
        if roll[i, 2] < 0.01:
            garbage = bytearray(rng.bytes(int(rng.integers(1, 120))))
            if rng.random() < 0.6:
                fake = SYNC if rng.random() < 0.5 else layout.header_prefix
                at = int(rng.integers(0, len(garbage) + 1))
                garbage[at:at] = fake
            pieces.append(bytes(garbage))
        if roll[i, 0] < 0.02:
            raw = bytearray(frame)
            for bit in rng.choice(size * 8, size=int(rng.integers(1, 4)), replace=False):
                raw[bit // 8] ^= 1 << (bit % 8)
            frame = bytes(raw)
        elif roll[i, 1] < 0.01:
            frame = frame[:int(rng.integers(1, size))]
        else:
            intact.append(i)
        pieces.append(frame)
    return b"".join(pieces), np.array(intact), samples


def test_fuzz_decodes_exactly_the_intact_frames():
    layout = FrameLayout(16)
    n = 100_000
    rng = np.random.default_rng(2024)
    stream, intact, samples = build_fuzz_stream(layout, n, rng)
    sizes = rng.integers(1, 6000, size=len(stream) // 3000).tolist()
    dec = FrameDecoder(layout)
    out = feed_chunks(dec, stream, sizes)
    # Timestamps were i * PERIOD_US, so they identify each frame's index in the original stream.
    decoded = out.timestamp_us.astype(np.int64) // PERIOD_US
    np.testing.assert_array_equal(decoded, intact)
    np.testing.assert_array_equal(out.sequence, intact % 65536)
    np.testing.assert_array_equal(out.samples, samples[intact])
    stats = dec.stats
    assert stats.frames == len(intact)
    assert stats.frames_lost == (intact[-1] - intact[0] + 1) - len(intact)
    assert stats.crc_errors > 0 and stats.header_errors > 0 and stats.board_restarts == 0


@pytest.mark.parametrize("cut", range(1, 7))
def test_garbage_ending_in_part_of_a_header_keeps_only_that_part(cut):
    layout = FrameLayout(4)
    data, seq, _, _ = make_frames(layout, 3)
    burst = SYNC * 1000 + b"\x01" * 7            # sync words that start no frame
    dec = FrameDecoder(layout)
    assert len(dec.feed(burst + data[:cut])) == 0
    assert dec.pending_bytes == cut               # the frame's first bytes, nothing else
    assert dec.stats.header_errors == 1000 and dec.stats.bytes_discarded == len(burst)
    np.testing.assert_array_equal(dec.feed(data[cut:]).sequence, seq)


def test_a_run_of_headers_with_bad_crcs_costs_one_crc_each():
    layout = FrameLayout(4)
    data, seq, _, _ = make_frames(layout, 4)
    fake = (layout.header_prefix + b"\0" * (layout.frame_size - 6)) * 50
    dec = FrameDecoder(layout)
    out = dec.feed(fake + data)
    np.testing.assert_array_equal(out.sequence, seq)
    assert dec.stats.crc_errors == 50 and dec.stats.bytes_discarded == len(fake)
