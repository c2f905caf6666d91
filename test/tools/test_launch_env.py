"""rackpower_nodes.tools.launch_env: telling launch's own ignored Ctrl-C from a traceback of
a process of the graph."""
from __future__ import annotations

from rackpower_nodes.tools.launch_env import without_launch_interrupts

LAUNCH_OWN = (
    "Exception ignored in: <function WeakSet.__init__.<locals>._remove at 0x7f266f95fe20>\n"
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3.11/_weakrefset.py", line 45, in _remove\n'
    "    self.data.discard(item)\n"
    "KeyboardInterrupt: \n")


def test_launch_s_own_ignored_interrupt_is_taken_out_and_counted():
    out = ("[predictor-4] [INFO] [1.0] [predictor]: shutting down (SIGINT)\n" + LAUNCH_OWN
           + "[WARNING] [launch]: user interrupted with ctrl-c (SIGINT) again, ignoring...\n")
    left, n = without_launch_interrupts(out)
    assert n == 1
    assert "Traceback" not in left and "Exception ignored" not in left
    assert "shutting down (SIGINT)" in left and "again, ignoring" in left


def test_a_process_s_traceback_stays():
    # the same lines from a node carry launch's "[name-N] " prefix
    node = "".join(f"[recorder-6] {line}\n" for line in LAUNCH_OWN.splitlines())
    left, n = without_launch_interrupts(node)
    assert n == 0 and left == node


def test_any_other_unprefixed_traceback_stays():
    other = LAUNCH_OWN.replace("KeyboardInterrupt: ", "RuntimeError: boom")
    crash = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\n"
    for text in (other, crash):
        left, n = without_launch_interrupts(text)
        assert n == 0 and left == text
