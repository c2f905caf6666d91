"""rackpower_nodes.tools.launch_env: telling launch's own ignored Ctrl-C from a traceback of
a process of the graph, a node's shutdown report of a hang in rclpy's teardown from any
other hang, and what a failed wait says."""
from __future__ import annotations

import subprocess
import sys

import pytest

from rackpower_nodes.tools.launch_env import (
    HANDOVER_FRAMES, dds_teardown_hangs, wait_while_running, without_launch_interrupts)

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


PY = "/root/.pyenv/versions/3.11.7/lib/python3.11"
SITE = "/x/.venv/lib/python3.11/site-packages"
NODES = "/x/main/rackpower_nodes/nodes"
SCRAPE = [f"{PY}/socket.py", 706, "readinto"], [f"{PY}/threading.py", 1002, "_bootstrap"]
TEARDOWN = ([f"{SITE}/rclpy/publisher.py", 107, "destroy"],
            [f"{SITE}/rclpy/node.py", 1948, "destroy_publisher"],
            [f"{SITE}/rclpy/node.py", 2070, "destroy_node"],
            [f"{NODES}/host_telemetry.py", 183, "destroy_node"],
            [f"{NODES}/main.py", 193, "_run"],
            [f"{NODES}/main.py", 129, "run_node"])


def _report(proc: str, *threads) -> str:
    """A node's faulthandler report as `ros2 launch` prints it (each line prefixed)."""
    lines = []
    for k, frames in enumerate(threads):
        lines.append(f"Thread 0x00007f33{k:08x} (most recent call first):")
        lines += [f'  File "{p}", line {n} in {f}' for p, n, f in frames]
        lines.append("")
    return "".join(f"[{proc}] {line}\n" for line in lines)


def test_a_main_thread_stuck_in_rclpy_destroying_the_node_s_entities_is_named():
    out = ("[host_telemetry-3] [INFO] [1.0] [host_telemetry]: shutting down (SIGINT)\n"
           + _report("host_telemetry-3", SCRAPE, TEARDOWN)
           + "[ERROR] [host_telemetry-3]: process[host_telemetry-3] failed to terminate '10.0' "
             "seconds after receiving 'SIGTERM', escalating to 'SIGKILL'\n")
    assert dds_teardown_hangs(out) == {
        "host_telemetry-3": f"{SITE}/rclpy/publisher.py in destroy"}


def test_a_hang_under_the_bounded_shutdown_s_marker_is_named_too():
    # nodes.main's destroy_entities stands between the node's destroy_node and rclpy's
    marked = (*TEARDOWN[:3], [f"{NODES}/main.py", 231, "destroy_entities"], *TEARDOWN[3:])
    out = _report("recorder-6", SCRAPE, marked)
    assert dds_teardown_hangs(out) == {"recorder-6": f"{SITE}/rclpy/publisher.py in destroy"}
    # the node's own stop under the marker's frame is still its own
    own = ([f"{PY}/threading.py", 1116, "join"], [f"{NODES}/recorder.py", 160, "destroy_node"],
           *TEARDOWN[4:])
    assert dds_teardown_hangs(_report("recorder-6", own)) == {}


def test_the_judgement_knows_the_bounded_shutdown_s_marker_by_its_name():
    # a rename in nodes.main would otherwise silently stop hangs under it from being named
    from rclpy.node import Node

    from rackpower_nodes.nodes.main import ShutdownDeadline, _marking_the_entities

    plain = Node.destroy_node
    with _marking_the_entities(ShutdownDeadline("probe"), None):
        assert Node.destroy_node is not plain
        assert Node.destroy_node.__code__.co_name in HANDOVER_FRAMES
    assert Node.destroy_node is plain and plain.__code__.co_name in HANDOVER_FRAMES


def test_other_hangs_are_not_named():
    # stuck in the node's own destroy_node (its code, before rclpy's)
    own = ([f"{PY}/threading.py", 1116, "join"], *TEARDOWN[3:])
    # a callback stuck while spinning (the stall report): no destroy_node at all
    stall = ([f"{PY}/time.py", 1, "sleep"], [f"{SITE}/rclpy/executors.py", 9, "spin_once"],
             [f"{NODES}/main.py", 210, "_spin_until_signal"])
    # rclpy at the top, but not under a node's destroy_node (the context's shutdown)
    context = ([f"{SITE}/rclpy/context.py", 1, "shutdown"], [f"{NODES}/main.py", 199, "_run"])
    # the same frames without launch's prefix are not a process's report
    bare = _report("x-1", TEARDOWN).replace("[x-1] ", "")
    for out in (_report("recorder-6", own), _report("predictor-4", stall),
                _report("current_sensor-2", context), bare):
        assert dds_teardown_hangs(out) == {}, out


def test_reports_of_two_processes_interleaved_are_told_apart():
    a, b = _report("host_telemetry-3", TEARDOWN), _report("recorder-6", SCRAPE)
    mixed = "".join(x + y for x, y in zip(a.splitlines(True), b.splitlines(True)))
    mixed += "".join(a.splitlines(True)[len(b.splitlines()):])
    assert dds_teardown_hangs(mixed) == {
        "host_telemetry-3": f"{SITE}/rclpy/publisher.py in destroy"}


def test_a_failed_wait_says_what_was_still_missing_when_it_gave_up():
    """`what` may be a callable: it is asked when the wait fails, so the message holds what
    the condition still lacked then (not what it lacked when the wait began)."""
    state = {"seen": 0}

    def condition():
        state["seen"] += 1
        return False

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(AssertionError) as err:
            wait_while_running(proc, "sleeper", condition, 0.3,
                               lambda: f"the thing ({state['seen']} checks)", lambda: "tail")
        assert "no the thing (" in str(err.value) and "tail" in str(err.value)
        assert f"({state['seen']} checks)" in str(err.value) and state["seen"] > 1
    finally:
        proc.kill()
        proc.wait()
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    with pytest.raises(AssertionError, match=r"sleeper exited \(0\) before a plain string"):
        wait_while_running(done, "sleeper", lambda: False, 5.0, "a plain string", lambda: "")
