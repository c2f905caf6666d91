"""The sensor-board emulator: protocol-v1 frames sampled from a `Source`, written to a pty.

A background thread samples the per-channel currents at the configured rate, converts amperes
to ADC counts (``counts = round(A / scale + offset)``), encodes frames with
:mod:`rackpower_nodes.core.frame_codec`, injects the configured faults (bit flips, board-side
drops, garbage bursts) and hands the frames to the pty (:mod:`.pty_io`) without blocking.
Cable pulls, stalls and line noise can be injected on demand.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np

from rackpower_nodes.core.frame_codec import SYNC, FrameLayout, encode_frames
from rackpower_nodes.sim.sensor_board.pty_io import _OutputBuffer, _Pty
from rackpower_nodes.sim.sensor_board.sources import Source

_log = logging.getLogger(__name__)

TICK_S = 0.001               # writer period, s
BOOT_US = 1_000_000          # "monotonic" board clock value at the first sampling instant, µs
# A host on a loaded machine can go unscheduled for a few 100 ms, and the kernel's move of
# written bytes into the readable queue (a worker thread) can lag as long: shorter limits lost
# the last frames at stop() in ~5 % of runs under two CPU burners.
_DRAIN_STALL_S = 2.0         # unplug()/stop(): stop waiting for the host after this long idle
_DRAIN_MAX_S = 5.0           # ... or after this long in all
_DRAIN_QUIET_S = 0.3         # the pty counts as drained after this long without data, s


class SensorBoardError(ValueError):
    """Invalid emulator configuration or source output."""


@dataclass(frozen=True)
class FaultConfig:
    """Per-frame fault probabilities (0..1) and the garbage burst size limit in bytes."""

    corrupt_prob: float = 0.0     # flip 1-3 random bits of the frame
    drop_prob: float = 0.0        # frame never sent (the sequence number still advances)
    garbage_prob: float = 0.0     # a burst of 1..garbage_max_bytes random bytes precedes it
    garbage_max_bytes: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("corrupt_prob", "drop_prob", "garbage_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SensorBoardError(f"{name}: {value!r} outside 0..1")
        if self.garbage_max_bytes < 1:
            raise SensorBoardError(f"garbage_max_bytes: {self.garbage_max_bytes} < 1")

    @property
    def active(self) -> bool:
        """True if any fault can occur."""
        return max(self.corrupt_prob, self.drop_prob, self.garbage_prob) > 0.0


@dataclass
class EmulatorStats:
    """Frame counters since construction."""

    frames_generated: int = 0           # sampling instants produced (= sequence numbers used)
    frames_written: int = 0             # frames completely handed to the pty
    frames_dropped_injected: int = 0    # never sent (drop_prob)
    frames_corrupted_injected: int = 0  # sent with flipped bits (corrupt_prob)
    garbage_bursts: int = 0             # garbage bursts sent (garbage_prob)
    frames_lost_unplugged: int = 0      # generated while unplugged or unsent at the cable pull
    frames_overflowed: int = 0          # dropped because the output buffer was full
    frames_lost_stalled: int = 0        # generated while stalled (:meth:`stall`), never sent
    garbage_bytes_injected: int = 0     # bytes queued by :meth:`send_garbage`
    bytes_written: int = 0              # bytes handed to the pty, garbage included


def _per_channel(name: str, value, channels: int) -> np.ndarray:
    """``value`` (one number or one per channel) as a finite (channels,) float64 array."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SensorBoardError(f"{name}: {value!r} is not numeric") from exc
    if arr.ndim == 0:
        arr = np.full(channels, float(arr))
    if arr.shape != (channels,) or not np.isfinite(arr).all():
        raise SensorBoardError(f"{name}: {value!r} is not one finite value or {channels}")
    return arr


class SensorBoardEmulator:
    """A sensor board on a pty, sending one frame per sampling instant at ``rate_hz``.

    ``source(t_s)`` maps (n,) float64 seconds since :meth:`start` to (n, channels) amperes.
    ``scale_a_per_count`` (A per count, non-zero) and ``offset_counts`` are one value or one per
    channel. ``board_clock``: ``"monotonic"`` stamps µs since start plus :data:`BOOT_US`;
    ``"wall"`` stamps µs since the Unix epoch, so another process can measure latency.
    The transmit FIFO holds 1 s of frames; when the host stops reading, the oldest frames are
    dropped (``frames_overflowed``).
    """

    def __init__(self, layout: FrameLayout, rate_hz: float, source: Source,
                 scale_a_per_count: float | Sequence[float] = 0.01,
                 offset_counts: float | Sequence[float] = 0, link_path: str | None = None,
                 faults: FaultConfig = FaultConfig(), board_clock: str = "monotonic"):
        if not 0.0 < rate_hz <= 100_000.0:
            raise SensorBoardError(f"rate_hz: {rate_hz!r} outside (0, 100000]")
        if board_clock not in ("monotonic", "wall"):
            raise SensorBoardError(f"board_clock: {board_clock!r} is not 'monotonic' or 'wall'")
        self.layout, self.rate_hz, self.faults = layout, float(rate_hz), faults
        self._scale = _per_channel("scale_a_per_count", scale_a_per_count, layout.channels)
        if (self._scale == 0).any():
            raise SensorBoardError("scale_a_per_count: must be non-zero")
        self._offset = _per_channel("offset_counts", offset_counts, layout.channels)
        self._source, self._link_path, self._clock = source, link_path, board_clock
        self._rng = np.random.default_rng(faults.seed)
        self._lock = threading.Lock()
        self._stats = EmulatorStats()
        self._fifo = _OutputBuffer(max(int(rate_hz), 1) * layout.frame_size)
        self._pty: _Pty | None = _Pty(link_path)
        self._last_slave = self._pty.slave_name
        self._holding = False          # unplug() in progress: stop writing
        self._stalled_until = 0.0      # time.monotonic() until which the board sends nothing
        self._generated = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._t0 = self._clock0_us = 0.0

    @property
    def port_path(self) -> str:
        """Path the host opens: the link if configured, else the current pty slave."""
        return self._link_path or self._last_slave

    @property
    def stats(self) -> EmulatorStats:
        """A snapshot copy of the counters."""
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def plugged(self) -> bool:
        """False between :meth:`unplug` and :meth:`replug`."""
        return self._pty is not None

    def set_source(self, source: Source) -> None:
        """Replace the current waveform (takes effect from the next writer tick)."""
        with self._lock:
            self._source = source

    def start(self) -> None:
        """Start sampling and writing in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._t0 = time.monotonic()
        wall = time.time_ns() // 1000
        self._clock0_us = wall if self._clock == "wall" else BOOT_US
        self._thread = threading.Thread(target=self._run, name="sensor-board", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling, let the host read what is queued (see :meth:`_drain`), close."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            pty = self._pty
        if pty is not None:
            self._drain(pty, flush_fifo=True)
        with self._lock:
            if self._pty is not None:
                self._pty.close()
                self._pty = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def unplug(self) -> None:
        """Pull the cable: the host's reads fail and the link vanishes; sampling goes on.

        Writing stops first and the host may finish reading what is already in the pty,
        so ``frames_lost_unplugged`` (frames not yet sent, then every frame generated until
        :meth:`replug`) matches the sequence gap a reading host sees.
        """
        with self._lock:
            if self._pty is None:
                return
            self._holding = True
            pty = self._pty
        self._drain(pty, flush_fifo=False)
        with self._lock:
            self._stats.frames_lost_unplugged += self._fifo.clear()
            pty.close()
            self._pty, self._holding = None, False
        _log.info("sensor board unplugged from %s", self.port_path)

    def replug(self) -> None:
        """Plug the cable back in: a new pty pair, the link re-pointed atomically."""
        with self._lock:
            if self._pty is None:
                self._pty = _Pty(self._link_path)
                self._last_slave = self._pty.slave_name
        _log.info("sensor board replugged at %s", self.port_path)

    def stall(self, seconds: float) -> None:
        """Hang the board for `seconds` s: the port stays open but nothing arrives; frames
        sampled meanwhile are lost (``frames_lost_stalled``), so the host sees a sequence gap
        and a board-clock jump when it resumes."""
        if not (np.isfinite(seconds) and seconds >= 0):
            raise SensorBoardError(f"stall seconds: {seconds!r}, expected a finite number >= 0")
        with self._lock:
            self._stalled_until = max(self._stalled_until, time.monotonic() + float(seconds))

    @property
    def stalled(self) -> bool:
        """True while a :meth:`stall` lasts."""
        return time.monotonic() < self._stalled_until

    def send_garbage(self, nbytes: int, seed: int | None = None) -> None:
        """Queue `nbytes` random bytes (line noise, a babbling device) between two frames;
        a sync word every 64 bytes lures the decoder into false frame starts."""
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 1 <= nbytes <= 1 << 20:
            raise SensorBoardError(f"garbage bytes: {nbytes!r}, expected an integer 1..1048576")
        burst = bytearray(np.random.default_rng(seed).bytes(nbytes))
        for at in range(0, nbytes - 1, 64):
            burst[at:at + 2] = SYNC
        with self._lock:
            self._stats.frames_overflowed += self._fifo.push(bytes(burst))
            self._stats.garbage_bytes_injected += nbytes

    def _drain(self, pty: _Pty, flush_fifo: bool) -> None:
        """Wait until the host has read everything in the pty, optionally writing out the
        FIFO first; give up after 0.25 s without progress (host gone) or 2 s in all.

        The kernel moves written bytes into the readable queue asynchronously, so the pty
        only counts as drained once nothing was written and nothing was readable for 50 ms.
        """
        start = progress = quiet_since = time.monotonic()
        last_unread = -1
        while True:
            now = time.monotonic()
            if now - progress > _DRAIN_STALL_S or now - start > _DRAIN_MAX_S:
                _log.debug("pty not drained; %d bytes unread", max(last_unread, 0))
                return
            sent = queued = 0
            if flush_fifo:
                with self._lock:
                    sent, queued = self._write(pty), len(self._fifo)
            unread = pty.unread_bytes()
            if sent or unread != last_unread:
                progress = now
            if sent or queued or unread:
                quiet_since = now
            elif now - quiet_since >= _DRAIN_QUIET_S:
                return
            last_unread = unread
            time.sleep(0.001)

    def _write(self, pty: _Pty) -> int:
        """Hand queued frames to the pty (caller holds the lock); return the bytes written."""
        sent, done = self._fifo.write_to(pty.master)
        self._stats.bytes_written += sent
        self._stats.frames_written += done
        return sent

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._tick()
                self._stop.wait(TICK_S)
        except Exception:  # noqa: BLE001 - a dying writer thread must leave a trace
            _log.exception("sensor board emulator stopped by an error")

    def _tick(self) -> None:
        elapsed = time.monotonic() - self._t0
        due = min(int(elapsed * self.rate_hz) + 1 - self._generated, int(self.rate_hz) + 1)
        frames = self._sample(due) if due > 0 else []
        with self._lock:
            self._enqueue(frames)
            if self._pty is not None and not self._holding:
                self._write(self._pty)

    def _sample(self, count: int) -> list[bytes]:
        """Generate the next ``count`` frames (one bytes object each)."""
        index = np.arange(self._generated, self._generated + count)
        self._generated += count
        t_s = index / self.rate_hz
        with self._lock:
            source = self._source
        amps = np.asarray(source(t_s), dtype=np.float64)
        if amps.shape != (count, self.layout.channels):
            raise SensorBoardError(f"source returned shape {amps.shape}, "
                                   f"expected {(count, self.layout.channels)}")
        info = np.iinfo(self.layout.sample_dtype)
        counts = np.rint(np.nan_to_num(amps) / self._scale + self._offset)
        counts = np.clip(counts, info.min, info.max).astype(np.int64)
        stamps = (self._clock0_us + np.rint(t_s * 1e6)).astype(np.uint64)
        data = encode_frames(self.layout, index, stamps, counts)
        size = self.layout.frame_size
        return [data[i:i + size] for i in range(0, len(data), size)]

    def _enqueue(self, frames: list[bytes]) -> None:
        """Apply faults and queue ``frames`` for writing (caller holds the lock)."""
        st = self._stats
        st.frames_generated += len(frames)
        if self._pty is None:
            st.frames_lost_unplugged += len(frames)
            return
        if frames and time.monotonic() < self._stalled_until:
            st.frames_lost_stalled += len(frames)
            return
        for frame in self._inject(frames) if self.faults.active else frames:
            st.frames_overflowed += self._fifo.push(frame)

    def _inject(self, frames: list[bytes]):
        fc, rng, st = self.faults, self._rng, self._stats
        for frame, roll in zip(frames, rng.random((len(frames), 3)), strict=True):
            if roll[0] < fc.drop_prob:
                st.frames_dropped_injected += 1
                continue
            if roll[1] < fc.corrupt_prob:
                frame = _flip_bits(frame, rng)
                st.frames_corrupted_injected += 1
            if roll[2] < fc.garbage_prob:
                frame = _garbage(rng, fc.garbage_max_bytes) + frame
                st.garbage_bursts += 1
            yield frame


def _flip_bits(frame: bytes, rng: np.random.Generator) -> bytes:
    raw = bytearray(frame)
    for bit in rng.choice(len(raw) * 8, size=int(rng.integers(1, 4)), replace=False):
        raw[bit // 8] ^= 1 << (bit % 8)
    return bytes(raw)


def _garbage(rng: np.random.Generator, max_bytes: int) -> bytes:
    """Random bytes; half of the bursts hide a sync word to lure the decoder."""
    burst = bytearray(rng.bytes(int(rng.integers(1, max_bytes + 1))))
    if len(burst) >= 2 and rng.random() < 0.5:
        at = int(rng.integers(0, len(burst) - 1))
        burst[at:at + 2] = SYNC
    return bytes(burst)
