"""The output of the demo's processes as an operator reads it: every line goes through a
:class:`LogDigest`, which prints the first few lines of each kind and counts the rest, so a
warning repeated every half second (a scrape failing, a PDU not answering) shows as two lines
here and one row with its count in the demo's summary (`tools/demo_summary.py`).

A line's kind is its source, level and text with the numbers taken out: "scrape failed:
srv05: timeout after 0.4 s" and "scrape failed: srv10: timeout after 0.4 s" are one kind.
"""
from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
from dataclasses import dataclass

__all__ = ["LogDigest", "LogKind", "QUIET_LOGGERS", "line_kind", "pump", "quiet_sim"]

# quieted in the demo's simulator (name -> level): pymodbus' server, whose errors (a client
# gone, under load) come with a dump of the last frames in hex while the clients report each
# failure themselves, named; HTTP clients; the simulator's own INFO lines (ports, faults
# injected: the demo prints those)
QUIET_LOGGERS = {"pymodbus": logging.CRITICAL, "urllib3": logging.WARNING,
                 "rackpower_nodes.sim": logging.WARNING, "rackpower_sim": logging.WARNING}

# rcutils' console format: [LEVEL] [stamp] [logger]: text
_ROS = re.compile(r"^\[(?P<level>[A-Z]+)\] \[[\d.]+\] \[(?P<logger>[^\]]+)\]: (?P<text>.*)$")
# a run of numbers (decimal or hex: a pymodbus frame dump is one run) is one '#'
_NUM = r"(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?)"
_NUMBER = re.compile(_NUM + r"(?:[\s,]+" + _NUM + r")*")
# what reaches a node's stderr without rcutils' format: Python's logging without a handler
# (its last resort prints WARNING and above) or a library's own print
PLAIN = "WARN"


@dataclass
class LogKind:
    """One kind of line: where from, its level, an example and how many arrived."""

    source: str
    level: str
    example: str
    count: int = 0


def line_kind(source: str, line: str) -> tuple[str, str, str, str]:
    """(source, level, shape, text) of one output `line` of the process `source`: a ROS log
    line names its logger and level; any other line counts as a warning of `source`."""
    m = _ROS.match(line)
    if m:
        source, level, text = m["logger"], m["level"], m["text"]
    else:
        level, text = PLAIN, line
    return source, level, _NUMBER.sub("#", text), text


class LogDigest:
    """Prints the first `show` lines of each kind and counts every line by kind (thread
    safe: one pump thread per process feeds it); a traceback is printed whole."""

    def __init__(self, show: int = 2, out=None):
        if show < 1:
            raise ValueError(f"show = {show}: expected at least 1 line of each kind")
        self.show = show
        self.out = out
        self.kinds: dict[tuple[str, str, str], LogKind] = {}
        self._lock = threading.Lock()

    def feed(self, source: str, line: str) -> bool:
        """Count `line` from `source`; True when it was printed."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return False
        src, level, shape, text = line_kind(source, line)
        with self._lock:
            kind = self.kinds.setdefault((src, level, shape), LogKind(src, level, text))
            kind.count += 1
            # a traceback's lines are never held back: they are all one error
            whole = line[:1].isspace() or line.startswith("Traceback")
            if kind.count > self.show and not whole:
                return False
            out = self.out or sys.stdout
            suffix = ("  (more like this: counted in the summary)"
                      if kind.count == self.show and not whole else "")
            print(line + suffix, file=out, flush=True)
            return True

    def repeated(self, levels=("WARN", "ERROR", "FATAL")) -> list[LogKind]:
        """The kinds at `levels`, most frequent first."""
        with self._lock:
            kinds = [k for k in self.kinds.values() if k.level in levels]
        return sorted(kinds, key=lambda k: (-k.count, k.source, k.example))


def pump(digest: LogDigest, source: str, proc: subprocess.Popen) -> threading.Thread:
    """A daemon thread feeding `proc`'s output (a text pipe) to `digest` as `source`, until
    the process closes it."""
    def run() -> None:
        for line in proc.stdout:
            digest.feed(source, line)

    thread = threading.Thread(target=run, name=f"demo-log-{source}", daemon=True)
    thread.start()
    return thread


def quiet_sim(argv=None) -> int:
    """`rackpower-sim` (:func:`rackpower_nodes.sim.cli.main`) with QUIET_LOGGERS' levels:
    how the demo starts it (`python -m rackpower_nodes.tools.demo_log live ...`)."""
    from rackpower_nodes.sim.cli import main

    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    return main(argv)


if __name__ == "__main__":
    sys.exit(quiet_sim())
