"""The serial reader thread's pacing: reads with data are spaced by min_read_interval_s, a
read without data is not, and stop() does not wait out a pause."""
from __future__ import annotations

import threading
import time

import pytest

from rackpower_nodes.drivers.port_reader import PortReader
from rackpower_nodes.drivers.serial_port import SensorPort


class _ScriptedPort(SensorPort):
    """Returns the scripted reads in turn (b'' once they run out); records when each began."""

    port = "scripted"

    def __init__(self, reads: list[bytes]):
        self._reads = list(reads)
        self.began: list[float] = []
        self.open_ = False

    def open(self) -> None:
        self.open_ = True

    def read(self, max_bytes: int) -> bytes:
        self.began.append(time.monotonic())
        if not self._reads:
            time.sleep(0.001)                 # a read timeout with nothing arriving
            return b""
        return self._reads.pop(0)

    def close(self) -> None:
        self.open_ = False

    @property
    def is_open(self) -> bool:
        return self.open_


def _wait_for(condition, timeout_s: float = 30.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_reads_with_data_are_spaced_by_the_interval_and_all_data_arrives():
    port = _ScriptedPort([b"a", b"b", b"c", b"d"])
    got: list[bytes] = []
    reader = PortReader(port, lambda data, _ns: got.append(data), lambda _st: None,
                        min_read_interval_s=0.1)
    reader.start()
    try:
        assert _wait_for(lambda: len(port.began) >= 6)
    finally:
        reader.stop()
    assert got == [b"a", b"b", b"c", b"d"]
    gaps = [b - a for a, b in zip(port.began[:4], port.began[1:5])]
    assert all(gap >= 0.1 for gap in gaps), gaps      # a lower bound: load only adds to it


def test_stop_ends_a_pause():
    port = _ScriptedPort([b"x"] * 3)
    got = threading.Event()
    reader = PortReader(port, lambda data, _ns: got.set(), lambda _st: None,
                        min_read_interval_s=1.0)
    reader.start()
    assert got.wait(30)
    reader.stop(timeout_s=30.0)
    assert not reader._thread.is_alive()
    assert not port.is_open                            # stopped inside a 1 s pause, port closed


@pytest.mark.parametrize("bad", [-0.001, 1.5])
def test_an_interval_outside_0_to_1_s_is_refused(bad):
    with pytest.raises(ValueError, match="min_read_interval_s"):
        PortReader(_ScriptedPort([]), lambda *_: None, lambda _st: None,
                   min_read_interval_s=bad)
