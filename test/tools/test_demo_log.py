"""The demo's log digest (`tools/demo_log.py`): each kind of line shown twice, then counted."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest

from rackpower_nodes.tools.demo_log import LogDigest, line_kind, pump


def test_line_kind_reads_ros_lines_and_takes_the_numbers_out():
    src, level, shape, text = line_kind(
        "pdu_actuator", "[WARN] [1796341465.881496561] [rack_01.pdu_actuator]: mode None -> "
        "safe (no forecast received for 0.31 s)")
    assert (src, level, text) == ("rack_01.pdu_actuator", "WARN",
                                  "mode None -> safe (no forecast received for 0.31 s)")
    assert shape == "mode None -> safe (no forecast received for # s)"
    assert line_kind("host_telemetry", "scrape failed: srv05: timeout after 0.4 s")[:3] == (
        "host_telemetry", "WARN", "scrape failed: srv#: timeout after # s")
    # a pymodbus frame dump: one kind however many bytes and whatever they are
    shapes = {line_kind("sim", f">>>>> send: 0x0 0x{i:x} 0x0 0x5f" + " 0x3e" * i)[2]
              for i in range(1, 20)}
    assert shapes == {">>>>> send: #"}


def test_a_flood_is_shown_twice_and_counted():
    out = io.StringIO()
    digest = LogDigest(show=2, out=out)
    for i in range(50):
        digest.feed("host_telemetry", f"scrape failed: srv{i % 12:02d}: timeout after 0.4 s\n")
        digest.feed("sim", f"[INFO] [{i}.5] [rack_01.recorder]: closed the bag demo_{i}\n")
    digest.feed("sim", "\n")
    digest.feed("sim", "Traceback (most recent call last):\n")
    for i in range(5):
        digest.feed("sim", f'  File "x.py", line {i}, in f\n')
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 + 2 + 1 + 5           # a traceback is printed whole
    assert lines[2].endswith("(more like this: counted in the summary)")
    assert lines[2].startswith("scrape failed: srv01")
    (scrape,) = digest.repeated()[:1]
    assert scrape.count == 50 and scrape.source == "host_telemetry"
    assert scrape.example == "scrape failed: srv00: timeout after 0.4 s"
    assert all(k.level != "INFO" for k in digest.repeated())


def test_show_must_be_positive():
    with pytest.raises(ValueError, match="show = 0"):
        LogDigest(show=0)


def test_pump_feeds_a_real_process_output():
    digest = LogDigest(show=1, out=io.StringIO())
    proc = subprocess.Popen([sys.executable, "-c", "for i in range(30): print('tick', i)"],
                            stdout=subprocess.PIPE, text=True)
    thread = pump(digest, "ticker", proc)
    proc.wait(timeout=30)
    thread.join(timeout=30)
    assert [(k.example, k.count) for k in digest.repeated()] == [("tick 0", 30)]
