"""The acquisition core: frames in, batches of consecutive frames out, in amperes and watts."""
from __future__ import annotations

import numpy as np
import pytest

from rackpower_nodes.core.acquisition import Acquisition
from rackpower_nodes.core.frame_codec import FrameLayout, encode_frames
from rackpower_nodes.core.sensor_config import sensor_config_from_params

LAYOUT = FrameLayout(channels=8, sample_format="int16")
T0_US = 1_700_000_000_000_000


def _config(**overrides):
    params = {
        "serial.port": "loop://",
        "board.channels": 8,
        "board.frame_rate_hz": 1000.0,
        "channels.components": ["srv01", "srv02", "tor-a"],
        "channels.board_index": [0, 3, 7],
        "channels.scale_a_per_count": [0.01],
        "voltage.nominal_v": [230.0],
        "publish.rate_hz": 20.0,
        "buffer.seconds": 1.0,
    }
    params.update(overrides)
    return sensor_config_from_params(params)


def _frames(seqs, counts_per_channel=None):
    seqs = np.asarray(seqs)
    samples = np.zeros((len(seqs), LAYOUT.channels), dtype=np.int64)
    if counts_per_channel is not None:
        samples[:] = counts_per_channel
    else:
        samples[:] = (seqs % 1000)[:, None] + np.arange(LAYOUT.channels)[None, :]
    ts = T0_US + seqs.astype(np.int64) * 1000
    return encode_frames(LAYOUT, seqs % 65536, ts, samples)


def test_full_batches_of_consecutive_frames_in_amperes_and_watts():
    acq = Acquisition(_config())
    counts = np.array([100, 0, 0, 200, 0, 0, 0, -50])
    batches = acq.ingest(_frames(np.arange(120), counts), host_ns=T0_US * 1000 + 2_000_000)
    assert [b.sample_count for b in batches] == [50, 50]
    first = batches[0]
    assert first.components == ("srv01", "srv02", "tor-a")
    assert first.first_sequence == 0 and batches[1].first_sequence == 50
    assert first.first_board_time_us == T0_US
    assert first.sample_period_s == pytest.approx(0.001)
    np.testing.assert_allclose(first.current_a[:, 0], [1.0, 2.0, -0.5], rtol=1e-6)
    np.testing.assert_allclose(first.mean_power_w, [230.0, 460.0, -115.0], rtol=1e-5)
    assert first.frames_lost == 0
    rest = acq.flush(host_ns=T0_US * 1000 + 3_000_000)
    assert rest is not None and rest.sample_count == 20 and rest.first_sequence == 100
    assert acq.flush(host_ns=0) is None


def test_batches_are_cut_at_a_gap_and_report_lost_frames():
    acq = Acquisition(_config())
    seqs = np.r_[np.arange(0, 30), np.arange(35, 90)]
    batches = acq.ingest(_frames(seqs), host_ns=T0_US * 1000)
    assert [(b.first_sequence, b.sample_count) for b in batches] == [(0, 30), (35, 50)]
    assert batches[0].frames_lost == 0
    assert batches[1].frames_lost == 5
    assert acq.stats().frames_lost == 5


def test_stream_split_anywhere_gives_the_same_batches():
    data = _frames(np.arange(65530, 65530 + 140))  # wraps the 16-bit sequence
    whole = Acquisition(_config()).ingest(data, host_ns=T0_US * 1000)
    acq = Acquisition(_config())
    pieces = []
    for lo in range(0, len(data), 97):
        pieces += acq.ingest(data[lo:lo + 97], host_ns=T0_US * 1000)
    assert [b.first_sequence for b in pieces] == [b.first_sequence for b in whole]
    assert [b.first_sequence for b in whole] == [65530, 65580]   # unwrapped past 65535
    for a, b in zip(whole, pieces):
        np.testing.assert_array_equal(a.current_a, b.current_a)


def test_ring_buffer_keeps_the_last_second_of_current():
    acq = Acquisition(_config())
    acq.ingest(_frames(np.arange(1500)), host_ns=T0_US * 1000)
    times, values = acq.ring.latest()
    assert len(times) == 1000 == values.shape[1]
    assert values.shape[0] == 3
    # newest sample: sequence 1499 → counts 499 + board channel
    np.testing.assert_allclose(values[:, -1], [4.99, 5.02, 5.06], rtol=1e-5)
    assert np.all(np.diff(times) > 0)


def test_corrupt_frames_are_counted_not_published():
    data = bytearray(_frames(np.arange(60)))
    data[LAYOUT.frame_size * 10 + 20] ^= 0xFF
    acq = Acquisition(_config())
    batches = acq.ingest(bytes(data), host_ns=T0_US * 1000)
    stats = acq.stats()
    assert stats.crc_errors == 1 and stats.frames == 59 and stats.frames_lost == 1
    assert [(b.first_sequence, b.sample_count) for b in batches] == [(0, 10)]
    rest = acq.flush(host_ns=T0_US * 1000)
    assert (rest.first_sequence, rest.sample_count, rest.frames_lost) == (11, 49, 1)


def test_stamps_never_go_back_when_the_first_read_was_late():
    """A loaded host reads the first 60 ms 300 ms late and the rest on time: the clock estimate
    steps back by 300 ms, the batch stamps and the ring's sample times still only go forward."""
    acq = Acquisition(_config())
    data = _frames(np.arange(400))
    size = LAYOUT.frame_size
    batches = acq.ingest(data[:60 * size], host_ns=(T0_US + 59_000) * 1000 + 300_000_000)
    for lo in range(60, 400, 20):  # then 20 frames per read, each read on time
        batches += acq.ingest(data[lo * size:(lo + 20) * size], host_ns=(T0_US + lo * 1000
                                                                         + 19_000) * 1000)
    assert [b.first_sequence for b in batches] == list(range(0, 400, 50))
    ends = [b.stamp_ns + round((b.sample_count - 1) * b.sample_period_s * 1e9) for b in batches]
    assert all(b.stamp_ns > end for b, end in zip(batches[1:], ends))
    times, _ = acq.ring.latest()
    assert np.all(np.diff(times) > 0)
