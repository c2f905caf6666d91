"""rackpower_nodes.nodes.main with a small node of its own in a process of its own: the
orderly shutdown on SIGINT/SIGTERM, later signals ignored while it runs, a crash in a
callback still destroying the node. (The real graph under ros2 launch:
test_launch_shutdown.py.)"""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rackpower_nodes.nodes.main import EXECUTOR_ENV, EXIT_SHUTDOWN_HUNG, make_executor

pytestmark = pytest.mark.ros

NODE = textwrap.dedent("""
    import ctypes, sys, time
    from rclpy.node import Node
    from rackpower_nodes.nodes import main
    from rackpower_nodes.nodes.main import run_node

    if len(sys.argv) > 4 and sys.argv[4] != "-":
        main.SHUTDOWN_REPORT_S = main.STALL_REPORT_S = float(sys.argv[4])
        main.STALL_REARM_S = main.STALL_REPORT_S / 5
    if len(sys.argv) > 5:
        main.SHUTDOWN_LIMIT_S, main.SHUTDOWN_KILL_S, main.TEARDOWN_LIMIT_S = map(
            float, sys.argv[5:8])

    class Probe(Node):
        def __init__(self):
            super().__init__("node_main_probe")
            self.create_timer(0.05, self.tick)
            if sys.argv[1] == "hang_context":      # the ROS context's teardown never ends
                self.context.on_shutdown(lambda: time.sleep(1000))
            if sys.argv[1] == "hang_context_with_gil":  # ... in C, keeping the GIL
                self.context.on_shutdown(lambda: ctypes.PyDLL(None).sleep(1000))
            print("up", flush=True)

        def tick(self):
            if sys.argv[1] == "crash":
                raise RuntimeError("probe callback failed")
            if sys.argv[1] == "stall":                # once: the executor away for 2 s
                sys.argv[1] = "run"
                time.sleep(2.0)
                print("resumed", flush=True)

        def destroy_node(self):
            print("destroying", flush=True)
            if sys.argv[1] == "hang_with_gil":         # a call into C that keeps the GIL
                ctypes.PyDLL(None).sleep(1000)
            time.sleep(float(sys.argv[2]))       # the safe work a second Ctrl-C must not cut
            print("destroyed", flush=True)
            super().destroy_node()

    run_node(Probe, "probe", threads=int(sys.argv[3]))
""")


def _start(ros_env, mode: str, destroy_s: float, threads: int,
           executor: str | None = None, report_s: float | None = None,
           limits: tuple[float, float, float] | None = None) -> subprocess.Popen:
    env = dict(ros_env)
    env.pop(EXECUTOR_ENV, None)
    if executor is not None:
        env[EXECUTOR_ENV] = executor
    args = [mode, str(destroy_s), str(threads), "-" if report_s is None else str(report_s)]
    args += [] if limits is None else [str(v) for v in limits]
    proc = subprocess.Popen([sys.executable, "-c", NODE, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "up"
    return proc


# threads=1 spins on the events executor by default, on the Python one with "classic"
@pytest.mark.parametrize("threads, executor", [(1, None), (1, "classic"), (3, None)])
def test_signals_during_the_shutdown_are_ignored_until_it_is_done(ros_env, threads, executor):
    proc = _start(ros_env, "run", 1.0, threads, executor)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip().endswith("shutting down (SIGINT)")
    assert proc.stdout.readline().strip() == "destroying"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc.send_signal(sig)
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.startswith("destroyed") and "Traceback" not in out, out
    assert "ignored SIGINT, SIGTERM, SIGINT while shutting down" in out, out


def test_a_shutdown_that_overruns_prints_where_every_thread_is(ros_env):
    # the destruction sleeps 3 s, the report is due after 0.5 s: the stacks name destroy_node
    proc = _start(ros_env, "run", 3.0, 1, report_s=0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Timeout (0:00:00.500000)!" in out, out
    dump = out[out.index("Timeout"):out.index("destroyed")]
    assert "(most recent call first)" in dump and "in destroy_node" in dump, dump


def test_an_executor_away_too_long_prints_where_every_thread_is(ros_env):
    # a callback holds the executor 2 s, the stall report is due after 0.5 s
    proc = _start(ros_env, "stall", 0.0, 1, report_s=0.5)
    dump = []
    for line in proc.stdout:
        if line.startswith("resumed"):
            break
        dump.append(line)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    dump = "".join(dump)
    assert "Timeout (0:00:00.500000)!" in dump and "in tick" in dump, dump


def test_a_shutdown_in_time_prints_no_stacks(ros_env):
    proc = _start(ros_env, "run", 0.2, 1, report_s=2.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "destroyed" in out and "Timeout" not in out and "Thread 0x" not in out, out


def test_a_node_destruction_that_hangs_ends_the_process_naming_it(ros_env):
    # the destruction never ends; the deadline (1 s) ends the process with EXIT_SHUTDOWN_HUNG
    proc = _start(ros_env, "run", 1000.0, 1, report_s=0.5, limits=(1.0, 30.0, 5.0))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_SHUTDOWN_HUNG, out
    assert "Timeout (0:00:00.500000)!" in out and "in destroy_node" in out, out
    assert ("stopping the node node_main_probe still runs after 1 s; the safe state is not "
            "confirmed; ending the process (exit 3)") in out, out
    assert "destroyed" not in out


def test_a_ros_context_teardown_that_hangs_ends_the_process_with_0(ros_env):
    # the node is destroyed (its safe work done); the context's shutdown never returns
    proc = _start(ros_env, "hang_context", 0.0, 1, limits=(20.0, 30.0, 1.0))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert out.index("destroyed") < out.index("shutting the ROS context down still runs"), out
    assert ("shutting the ROS context down still runs after 1 s; the nodes' own stop is done: "
            "their devices and files are in their safe state; ending the process (exit 0)"
            ) in out, out


def test_a_teardown_that_hangs_holding_the_gil_ends_with_0_after_the_nodes_stop(ros_env):
    # the node's own stop is done; rcl's teardown then hangs in C with the GIL held (as rclpy
    # in a deadlocked Fast DDS): no Python runs; its stacks are printed, then libc's timer ends
    # it half a second after the limit
    proc = _start(ros_env, "hang_context_with_gil", 0.0, 1, limits=(20.0, 30.0, 1.0))
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "destroyed" in out and "still runs after" not in out, out
    assert "(most recent call first)" in out[out.index("destroyed"):], out
    assert time.monotonic() - start >= 1.5, out


def test_a_hang_that_holds_the_gil_is_ended_by_sigalrm(ros_env):
    # no Python code runs (the deadline's thread neither): SIGALRM's default action, after 2 s
    proc = _start(ros_env, "hang_with_gil", 0.0, 1, limits=(1.0, 2.0, 5.0))
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGALRM, out
    assert time.monotonic() - start >= 1.5 and "destroyed" not in out, out


def test_sigterm_shuts_down_in_order_too(ros_env):
    proc = _start(ros_env, "run", 0.0, 1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "shutting down (SIGTERM)" in out and "destroyed" in out, out


@pytest.mark.parametrize("executor", [None, "classic"])
def test_a_crash_in_a_callback_destroys_the_node_then_exits_1(ros_env, executor):
    proc = _start(ros_env, "crash", 0.0, 1, executor)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert out.index("destroyed") < out.index("Traceback"), out
    assert "RuntimeError: probe callback failed" in out


def test_an_unknown_executor_stops_the_node_naming_the_variable(ros_env):
    env = {**ros_env, EXECUTOR_ENV: "fast"}
    proc = subprocess.run([sys.executable, "-c", NODE, "run", "0", "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "up" not in proc.stdout
    assert "RACKPOWER_EXECUTOR='fast'" in proc.stderr and "events, classic" in proc.stderr


@pytest.mark.parametrize("value, expected", [
    (None, "EventsExecutor"), ("events", "EventsExecutor"),
    ("classic", "SingleThreadedExecutor")])
def test_one_thread_means_the_events_executor_unless_classic(monkeypatch, value, expected):
    import rclpy

    if value is None:
        monkeypatch.delenv(EXECUTOR_ENV, raising=False)
    else:
        monkeypatch.setenv(EXECUTOR_ENV, value)
    with rclpy.init(args=[]):
        assert expected in type(make_executor(1)).__name__
        assert type(make_executor(3)).__name__ == "MultiThreadedExecutor"
